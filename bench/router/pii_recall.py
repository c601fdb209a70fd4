"""PII recall per entity and disguise, and false positives on PII-free text, before and after issue 16, in one run.

Recall: the adversarial corpus of tests/reliability/pii_adversarial.py (10,000 values, one per request, plus 1,000
decoy requests that name entities without a value), decided in the default `restricted` configuration (every entity,
keepLocal, cloud default tier). "after" is `tiered-router pii-eval` (tiered_router.pii_eval: the router's request
parsing and decide()); "before" is the scanner at BEFORE_REV over the strings of the request joined by newlines, as
the router of that revision scanned them (a value counts as kept local when anything was found).

False positives (share of PII-free texts in which anything was found), strict and default mode, before and after:
- CLINC150 test and out-of-scope test utterances (shared/data/clinc150, 5,500; test split only to measure);
- code: 40-line snippets of the Python standard library packages json, email, http, logging and asyncio (the
  installed interpreter's own files);
- logs: 20-line snippets of this machine's package logs (/var/log/dpkg.log, apt/term.log, apt/history.log,
  alternatives.log; whatever exists);
- the healthcare-routing utterances (shared/data/healthcare-routing, 103 rows, none holds PII).

Usage: python bench/router/pii_recall.py [--seed N] [--out bench/router/pii_recall.json]
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import sysconfig
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tiered_router.config import PiiEntity
from tiered_router.pii import scan
from tiered_router.pii_eval import default_config, evaluate_pii, parse_row

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pii_scan import BEFORE_REV, REPO, load_before

sys.path.insert(0, str(REPO / "tests" / "reliability"))
from pii_adversarial import SEED, adversarial_requests, decoy_request, to_jsonl_row

ALL = list(PiiEntity)
DATA = Path(os.environ.get("TIERED_SHARED_DATA", REPO.parent / "shared" / "data"))


def corpus_rows(seed: int, n: int) -> list[dict[str, Any]]:
    rows = [to_jsonl_row(r) for r in adversarial_requests(n, seed)]
    rows += [{"id": f"decoy{i}", "body": decoy_request(i)} for i in range(n // 10)]
    return rows


def before_recall(rows: list[dict[str, Any]], before: Any) -> dict[str, Any]:
    """The old router: every string except `model` joined by newlines, scanned; anything found keeps it local."""
    per_entity: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    per_disguise: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    flagged = clean = 0
    for row in rows:
        strings: list[str] = []
        _strings({k: v for k, v in row["body"].items() if k != "model"}, strings)
        kept = bool(before.scan("\n".join(strings), ALL))
        if not row.get("values"):
            clean += 1
            flagged += kept
            continue
        for v in row["values"]:
            for counts, key in ((per_entity, v["entity"]), (per_disguise, v["disguise"])):
                counts[key][0] += 1
                counts[key][1] += kept
    values = sum(v for v, _ in per_entity.values())
    kept_total = sum(k for _, k in per_entity.values())

    def table(d: defaultdict[str, list[int]]) -> dict[str, dict[str, Any]]:
        return {k: {"values": v, "leaked": v - c, "recall": round(c / v, 5)} for k, (v, c) in sorted(d.items())}

    return {
        "values": values,
        "leaked": values - kept_total,
        "leaks_per_10k_values": round((values - kept_total) * 10_000 / values, 2),
        "per_entity": table(per_entity),
        "per_disguise": table(per_disguise),
        "false_positive_rate": round(flagged / clean, 5) if clean else None,
    }


def _strings(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, dict):
        for v in value.values():
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)


def fp_sets() -> dict[str, list[str]]:
    clinc = json.loads((DATA / "clinc150" / "data_full.json").read_text())
    stdlib = sysconfig.get_paths()["stdlib"]
    code: list[str] = []
    for package in ("json", "email", "http", "logging", "asyncio"):
        for path in sorted(glob.glob(f"{stdlib}/{package}/*.py")):
            lines = Path(path).read_text(errors="replace").splitlines()
            code += ["\n".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]
    logs: list[str] = []
    for path in ("/var/log/dpkg.log", "/var/log/apt/term.log", "/var/log/apt/history.log", "/var/log/alternatives.log"):
        if os.path.exists(path):
            lines = Path(path).read_text(errors="replace").splitlines()
            logs += ["\n".join(lines[i : i + 20]) for i in range(0, len(lines), 20)]
    with (DATA / "healthcare-routing" / "healthcare-routing-evaluation.csv").open(newline="") as fh:
        healthcare = [row["utterance"] for row in csv.DictReader(fh)]
    return {
        "clinc150_test": [t for t, _ in clinc["test"]] + [t for t, _ in clinc["oos_test"]],
        "code_stdlib": code,
        "logs_machine": logs,
        "healthcare": healthcare,
    }


def false_positives(before: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, texts in fp_sets().items():
        rates: dict[str, Any] = {"texts": len(texts)}
        for label, fn in (
            ("before", lambda t: before.scan(t, ALL)),
            ("after_strict", lambda t: scan(t, ALL, True)),
            ("after_default", lambda t: scan(t, ALL, False)),
        ):
            hits = sum(1 for t in texts if fn(t))
            rates[label] = {"flagged": hits, "rate": round(hits / len(texts), 5) if texts else None}
        out[name] = rates
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--values", type=int, default=10_000)
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--out", default=str(REPO / "bench" / "router" / "pii_recall.json"))
    args = ap.parse_args()
    before = load_before(args.before_rev)
    rows = corpus_rows(args.seed, args.values)
    after = evaluate_pii([parse_row(r, n) for n, r in enumerate(rows, 1)], default_config("restricted"))
    after_default = evaluate_pii([parse_row(r, n) for n, r in enumerate(rows, 1)], default_config("restricted", False))
    result = {
        "what": "PII recall on the adversarial corpus (restricted, keepLocal) and false positives on PII-free text",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "before_rev": args.before_rev,
        "corpus": f"tests/reliability/pii_adversarial.py seed {args.seed}: {args.values} values, "
        f"{args.values // 10} decoys",
        "recall_before": before_recall(rows, before),
        "recall_after_strict": {k: v for k, v in after.items() if k != "leaks"} | {"leaks": after["leaks"][:10]},
        "recall_after_default_mode": {k: after_default[k] for k in ("values", "leaked", "leaks_per_10k_values",
                                                                    "per_entity", "false_positive_rate")},
        "false_positives": false_positives(before),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    b, a = result["recall_before"], result["recall_after_strict"]
    print(f"before: {b['leaked']} of {b['values']} values leaked ({b['leaks_per_10k_values']} per 10k)")
    print(f"after (strict, default restricted): {a['leaked']} of {a['values']} ({a['leaks_per_10k_values']} per 10k)")
    print(json.dumps(result["false_positives"], indent=1))


if __name__ == "__main__":
    main()
