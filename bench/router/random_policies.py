"""Policies written the way a platform team would, measured on CLINC150-domains test + oos_test.

Each CLINC seed draws, from `train` only, 75 random utterances per domain (10 routes on the local tier) and 75
random `oos_train` utterances (a route to the default tier), sets no threshold (so `auto` derives it from the
policy's own examples) and measures the policy with the router's own `evaluate` - the code behind
`tiered-router eval` - on test + oos_test (5,500 utterances). Nothing here is tuned to a seed: the seeds are
arguments, and the policy-writing code knows nothing about the classifier. Beside it, the second public intent set
here (healthcare-routing: 7 routes of 7 train utterances, 6 train utterances with no route): its own train rows as
the policy, measured on its validation and test rows.

Usage: python bench/router/random_policies.py [--seeds 101 202 303] [--split test|val] [--write-dir DIR]
       [--out bench/router/random_policies.json]
       python bench/router/random_policies.py --export-jsonl DIR   # val/test as JSONL for tiered-router eval
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tiered_router.classify import RouteClassifier
from tiered_router.encoders import load_encoder
from tiered_router.evaluate import Sample, config_from_policy, evaluate, load_samples

REPO = Path(__file__).resolve().parents[2]
DATA = Path("/work/shared/data") if Path("/work/shared/data").exists() else REPO.parent / "shared" / "data"
PER_ROUTE = 75
OUT_OF_SCOPE = 75
TARGET_IN_SCOPE = 0.90
TARGET_OOS = 0.85
TARGET_P99_MS = 1.0


def clinc() -> tuple[dict[str, list[tuple[str, str]]], dict[str, str]]:
    full = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    domains = json.loads((DATA / "clinc150" / "domains.json").read_text())
    return full, {intent: d for d, intents in domains.items() for intent in intents}


def route_name(domain: str) -> str:
    return domain.replace("_", "-")


def random_policy(seed: int, per_route: int = PER_ROUTE, out_of_scope: int = OUT_OF_SCOPE) -> dict[str, Any]:
    """A RoutingPolicy from `per_route` random train utterances per domain plus `out_of_scope` random oos_train
    utterances on the default tier; no threshold."""
    full, intent_domain = clinc()
    rng = random.Random(seed)
    held_out = {t for s in ("val", "test", "oos_val", "oos_test") for t, _ in full[s]}  # CLINC repeats a few
    by_domain: dict[str, list[str]] = {}
    for text, intent in full["train"]:
        if text not in held_out:
            by_domain.setdefault(intent_domain[intent], []).append(text)
    routes = [
        {"name": route_name(d), "tier": "slm", "examples": rng.sample(sorted(set(texts)), per_route)}
        for d, texts in sorted(by_domain.items())
    ]
    oos_pool = sorted({t for t, _ in full["oos_train"]} - held_out)
    routes.append({"name": "out-of-scope", "tier": "cloud", "examples": rng.sample(oos_pool, out_of_scope)})
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": f"clinc150-random-{seed}"},
        "spec": {"tiers": ["slm", "cloud"], "defaultTier": "cloud", "routes": routes},
    }


HEALTHCARE = DATA / "healthcare-routing" / "healthcare-routing-evaluation.csv"


def healthcare_policy() -> dict[str, Any]:
    """The healthcare-routing set's own policy: its `train` rows as route examples, the rows with no route on a
    route to the default tier, no threshold."""
    by_route: dict[str, list[str]] = {}
    with HEALTHCARE.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "train":
                by_route.setdefault(row["expected_route"] or "out-of-scope", []).append(row["utterance"])
    routes = [{"name": name, "tier": "cloud" if name == "out-of-scope" else "slm", "examples": examples}
              for name, examples in by_route.items()]  # fmt: skip
    return {"apiVersion": "tiered.dev/v1alpha1", "kind": "RoutingPolicy", "metadata": {"name": "healthcare-routing"},
            "spec": {"tiers": ["slm", "cloud"], "defaultTier": "cloud", "routes": routes}}  # fmt: skip


def healthcare() -> dict[str, Any]:
    config = config_from_policy(healthcare_policy())
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    out: dict[str, Any] = {"calibration": clf.calibration.summary() if clf.calibration else None}
    for split in ("validation", "test"):
        result = evaluate(config, load_samples(HEALTHCARE, split), clf)
        result.pop("per_route")
        out[split] = result
    return out


def samples(split: str) -> list[Sample]:
    full, intent_domain = clinc()
    out = [Sample(t, frozenset([route_name(intent_domain[i])])) for t, i in full[split]]
    return out + [Sample(t, frozenset()) for t, _ in full[f"oos_{split}"]]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[101, 202, 303])
    parser.add_argument("--split", default="test", choices=["test", "val"])
    parser.add_argument("--write-dir", help="also write each policy as YAML here")
    parser.add_argument("--out", default=str(Path(__file__).with_name("random_policies.json")))
    parser.add_argument("--export-jsonl", help="only write val and test (+ oos) as JSONL {text, route} into this dir")
    args = parser.parse_args()
    if args.export_jsonl:
        for split in ("val", "test"):
            path = Path(args.export_jsonl) / f"clinc150-domains-{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = [{"text": s.text, "route": next(iter(s.routes), None)} for s in samples(split)]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            print(f"wrote {path}", file=sys.stderr)
        return 0
    data = samples(args.split)
    runs = []
    for seed in args.seeds:
        manifest = random_policy(seed)
        if args.write_dir:
            Path(args.write_dir).mkdir(parents=True, exist_ok=True)
            path = Path(args.write_dir) / f"{manifest['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(manifest, sort_keys=False, width=200))
        config = config_from_policy(manifest)
        t0 = time.perf_counter()
        clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
        build_s = time.perf_counter() - t0
        result = evaluate(config, data, clf)
        result.pop("per_route")
        run = {
            "seed": seed,
            "classifier_build_s": round(build_s, 2),
            "calibration": clf.calibration.summary() if clf.calibration else None,
            **result,
            "meets_target": bool(
                (result["in_scope_accuracy"] or 0) >= TARGET_IN_SCOPE
                and (result["oos_to_default"] or 0) >= TARGET_OOS
                and result["decision_p99_ms"] <= TARGET_P99_MS
            ),
        }
        print(json.dumps(run), file=sys.stderr, flush=True)
        runs.append(run)
    out = {
        "healthcare_routing": healthcare(),
        "protocol": f"{PER_ROUTE} random train utterances per CLINC150 domain + {OUT_OF_SCOPE} random oos_train "
        f"utterances on the default tier, no threshold (auto); measured on {args.split} + oos_{args.split}",
        "targets": {"in_scope": TARGET_IN_SCOPE, "oos_to_default": TARGET_OOS, "decision_p99_ms": TARGET_P99_MS},
        "load_average_after": os.getloadavg(),
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
