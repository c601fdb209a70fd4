"""PII scan cost: the candidate-position scanner (router_image/tiered_router/pii.py) against the plain-`finditer`
scanner it replaced (kept as `legacy_scan` in tests/unit/router/test_router_pii_equivalence.py), side by side in
one run, interleaved call by call so machine load hits both alike.

Prompts: a short CLINC-sized question with and without PII, and ~2,000-token prompts (≈8,000 characters: prose,
dates, times, prices, order numbers, URLs, versions, Python/C++ snippets; `long_prompt` in the test module) with and
without ten planted PII values; plus one per-entity table for the legacy patterns (where the time went).
Every call's findings are compared between the two scanners (a mismatch aborts the run). Then the whole
decide() pipeline (PII scan + residency + classification with the shipped CLINC policy and its builtin encoder,
classifying the whole prompt) on the ~2,000-token prompts, once with each scanner, interleaved, and then with the
new scanner alone, call after call (`new_alone`; issue 5: decision p99 <= 1 ms).

Usage: python bench/router/pii_scan.py [--reps N] [--out bench/router/pii_scan.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiered_router.config import PiiEntity
from tiered_router.pii import _PATTERNS, Finding, scan

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "router"))
from test_router_pii_equivalence import legacy_scan, long_prompt  # noqa: E402

ALL = list(PiiEntity)
Scanner = Callable[[str, list[PiiEntity]], list[Finding]]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(ns: list[int]) -> dict[str, float]:
    us = [x / 1000 for x in ns]
    return {"p50_us": round(statistics.median(us), 1), "p99_us": round(_pct(us, 0.99), 1)}


def measure(text: str, reps: int) -> dict[str, Any]:
    """Alternate legacy/new call by call; findings must agree."""
    assert [(f.entity, f.start, f.end) for f in scan(text, ALL)] == [
        (f.entity, f.start, f.end) for f in legacy_scan(text, ALL)
    ]
    times: dict[str, list[int]] = {"legacy": [], "new": []}
    scanners: dict[str, Scanner] = {"legacy": legacy_scan, "new": scan}
    for _ in range(reps):
        for name, fn in scanners.items():
            t0 = time.perf_counter_ns()
            fn(text, ALL)
            times[name].append(time.perf_counter_ns() - t0)
    old, new = _summary(times["legacy"]), _summary(times["new"])
    return {
        "chars": len(text),
        "tokens_est": (len(text) + 3) // 4,
        "findings": sorted({f.entity.value for f in scan(text, ALL)}),
        "legacy": old,
        "new": new,
        "speedup_p50": round(old["p50_us"] / new["p50_us"], 1),
        "speedup_p99": round(old["p99_us"] / new["p99_us"], 1),
    }


def measure_decide(texts: dict[str, str], reps: int) -> dict[str, Any]:
    """decide() with the shipped CLINC policy, `decision.scan` swapped between the scanners call by call."""
    import yaml

    from tiered_router import decision
    from tiered_router.classify import RouteClassifier
    from tiered_router.encoders import load_encoder
    from tiered_router.evaluate import config_from_policy

    manifest = yaml.safe_load((REPO / "router_image" / "policies" / "clinc150-domains.yaml").read_text())
    config = config_from_policy(manifest)  # as `tiered-router eval` builds it ...
    pii_cfg = config.residency.pii.model_copy(update={"entities": ALL})  # ... with every entity, explicitly
    config = config.model_copy(update={"residency": config.residency.model_copy(update={"pii": pii_cfg})})
    assert config.residency.pii.entities == ALL
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    out: dict[str, Any] = {"policy": "router_image/policies/clinc150-domains.yaml", "encoder": clf.encoder.name}
    scanners: dict[str, Scanner] = {"legacy": legacy_scan, "new": scan}
    try:
        for name, text in texts.items():
            req = decision.RoutingRequest(text=text, model="auto", input_tokens=decision.estimate_tokens(text))
            times: dict[str, list[int]] = {"legacy": [], "new": []}
            for i in range(reps + 5):
                for which, fn in scanners.items():
                    decision.scan = fn  # type: ignore[assignment]
                    t0 = time.perf_counter_ns()
                    decision.decide(config, clf, req)
                    if i >= 5:  # warm-up
                        times[which].append(time.perf_counter_ns() - t0)
            # The same decide() back to back, new scanner only (as a router sees consecutive requests): the
            # interleaved numbers above include the cache misses that each 3 ms legacy call leaves behind.
            decision.scan = scan
            alone: list[int] = []
            for i in range(reps + 5):
                t0 = time.perf_counter_ns()
                decision.decide(config, clf, req)
                if i >= 5:
                    alone.append(time.perf_counter_ns() - t0)
            out[name] = {
                "legacy": _summary(times["legacy"]),
                "new": _summary(times["new"]),
                "new_alone": _summary(alone),
            }
    finally:
        decision.scan = scan
    return out


def per_entity_legacy(text: str, reps: int) -> dict[str, float]:
    """p50 µs of each legacy pattern's `finditer` over the whole text."""
    out: dict[str, float] = {}
    for entity, (pattern, _) in _PATTERNS.items():
        ns = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _m in pattern.finditer(text):
                pass
            ns.append(time.perf_counter_ns() - t0)
        out[entity.value] = round(statistics.median(ns) / 1000, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--out", default=str(REPO / "bench" / "router" / "pii_scan.json"))
    args = ap.parse_args()
    prompts = {
        "short_clean": "How do I transfer money from my checking account to savings, and is there a fee for it?",
        "short_pii": "Please move $250 to savings, my card is 4111 1111 1111 1111 and mail jane.doe@example.com",
        "2000_tokens_clean": long_prompt(1, pii=False),
        "2000_tokens_pii": long_prompt(2, pii=True),
    }
    load_before = os.getloadavg()
    cases = {name: measure(text, args.reps) for name, text in prompts.items()}
    per_entity = per_entity_legacy(prompts["2000_tokens_clean"], max(20, args.reps // 10))
    decide = measure_decide({k: v for k, v in prompts.items() if k.startswith("2000")}, args.reps)
    result = {
        "what": "PII scan latency, all 7 entities, candidate-position scanner (new) vs plain finditer (legacy)",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
        "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "cases": cases,
        "legacy_per_entity_p50_us_2000_tokens_clean": per_entity,
        "decide_2000_tokens": decide,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, c in cases.items():
        print(
            f"{name:18s} {c['chars']:5d} chars  legacy p50 {c['legacy']['p50_us']:8.1f}"
            f" p99 {c['legacy']['p99_us']:8.1f}"
            f"  new p50 {c['new']['p50_us']:7.1f} p99 {c['new']['p99_us']:7.1f} µs  x{c['speedup_p50']}"
        )
    print("legacy per entity (2,000 tokens, p50 µs):", per_entity)
    print("decide() with the CLINC policy:", json.dumps(decide))
    print("load average before/after:", result["loadavg_1_5_15_before"], result["loadavg_1_5_15_after"])


if __name__ == "__main__":
    main()
