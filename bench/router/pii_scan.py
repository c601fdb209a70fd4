"""PII scan and decision cost, before and after issue 16 (disguises, strict mode, whole-request scan), in one run.

"before" is the scanner as it was at BEFORE_REV (router_image/tiered_router/pii.py, loaded from git), scanning the
request's strings joined by newlines as the router did; "after" is the current scanner over the request's segments
(`scan_segments`, what the router does now), in strict mode (the default in restricted namespaces) and in default
mode. Calls are interleaved before/after so machine load hits both alike.

Prompts: a short CLINC-sized question with and without PII, and ~2,000-token prompts (≈8,000 characters: prose,
dates, times, prices, order numbers, URLs, versions, Python/C++ snippets; `long_prompt` in
tests/unit/router/test_router_pii_equivalence.py) with and without ten planted PII values. Then the whole decide()
pipeline (PII scan + residency + capability + classification with the shipped CLINC policy and its builtin encoder,
restricted namespace, every entity) on the ~2,000-token prompts, before and after interleaved, and after alone, call
after call (`after_alone`: the issue's target is decision p99 <= 1 ms).

Usage: python bench/router/pii_scan.py [--reps N] [--before-rev REV] [--out bench/router/pii_scan.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from tiered_router.config import PiiEntity
from tiered_router.pii import Segment, scan_segments

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit" / "router"))
from test_router_pii_equivalence import long_prompt  # noqa: E402

ALL = list(PiiEntity)
BEFORE_REV = "40065bd"  # main before issue 16 landed


def load_before(rev: str) -> ModuleType:
    """The single-module scanner of `rev`, importable on its own (its relative config import made absolute)."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:router_image/tiered_router/pii.py"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    source = source.replace("from .config import PiiEntity", "from tiered_router.config import PiiEntity")
    path = Path(tempfile.mkdtemp()) / "pii_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("pii_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pii_before"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(ns: list[int]) -> dict[str, float]:
    us = [x / 1000 for x in ns]
    return {"p50_us": round(statistics.median(us), 1), "p99_us": round(_pct(us, 0.99), 1)}


def measure(text: str, before: ModuleType, reps: int) -> dict[str, Any]:
    segments = (Segment(text, "messages:user"),)
    scanners: dict[str, Callable[[], Any]] = {
        "before": lambda: before.scan(text, ALL),
        "after_strict": lambda: scan_segments(segments, ALL, True),
        "after_default": lambda: scan_segments(segments, ALL, False),
    }
    times: dict[str, list[int]] = {name: [] for name in scanners}
    for i in range(reps + 5):
        for name, fn in scanners.items():
            t0 = time.perf_counter_ns()
            fn()
            if i >= 5:
                times[name].append(time.perf_counter_ns() - t0)
    return {
        "chars": len(text),
        "tokens_est": (len(text) + 3) // 4,
        "findings": {
            "before": sorted({f.entity.value for f in before.scan(text, ALL)}),
            "after_strict": sorted({f.entity.value for f in scan_segments(segments, ALL, True)}),
            "after_default": sorted({f.entity.value for f in scan_segments(segments, ALL, False)}),
        },
        **{name: _summary(ns) for name, ns in times.items()},
    }


def measure_decide(texts: dict[str, str], before: ModuleType, reps: int) -> dict[str, Any]:
    """decide() with the shipped CLINC policy in a restricted namespace, every entity, before and after."""
    import yaml

    from tiered_router import decision
    from tiered_router.classify import RouteClassifier
    from tiered_router.encoders import load_encoder
    from tiered_router.evaluate import config_from_policy

    manifest = yaml.safe_load((REPO / "router_image" / "policies" / "clinc150-domains.yaml").read_text())
    config = config_from_policy(manifest)  # as `tiered-router eval` builds it, then the restricted default
    residency = config.residency.model_copy(
        update={
            "namespace_class": decision.ResidencyClass.RESTRICTED,
            "pii": config.residency.pii.model_copy(update={"entities": ALL}),
        }
    )
    config = config.model_copy(update={"residency": residency})
    assert config.residency.pii_strict and config.residency.pii.entities == ALL
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    out: dict[str, Any] = {"policy": "router_image/policies/clinc150-domains.yaml", "encoder": clf.encoder.name,
                           "namespace": "restricted (strict PII mode)"}  # fmt: skip
    real_scan, real_segments = decision.scan, decision.scan_segments

    def old_scan(text: str, entities: Any, strict: bool = False) -> Any:
        return before.scan(text, entities)

    try:
        for name, text in texts.items():
            old_req = decision.RoutingRequest(text=text, model="auto", input_tokens=decision.estimate_tokens(text))
            new_req = decision.RoutingRequest(
                text=text, model="auto", input_tokens=old_req.input_tokens, segments=(Segment(text, "messages:user"),)
            )
            times: dict[str, list[int]] = {"before": [], "after": []}
            cpu: dict[str, list[int]] = {"before": [], "after": []}  # this thread's CPU time: steadier under load
            for i in range(reps + 5):
                for which in ("before", "after"):
                    decision.scan = old_scan if which == "before" else real_scan  # type: ignore[assignment]
                    req = old_req if which == "before" else new_req
                    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                    decision.decide(config, clf, req)
                    if i >= 5:
                        times[which].append(time.perf_counter_ns() - t0)
                        cpu[which].append(time.thread_time_ns() - c0)
            decision.scan = real_scan
            alone: list[int] = []
            for i in range(reps + 5):
                t0 = time.perf_counter_ns()
                decision.decide(config, clf, new_req)
                if i >= 5:
                    alone.append(time.perf_counter_ns() - t0)
            out[name] = {
                "before": _summary(times["before"]),
                "after": _summary(times["after"]),
                "after_alone": _summary(alone),
                "cpu_before": _summary(cpu["before"]),
                "cpu_after": _summary(cpu["after"]),
                "pii_after": list(decision.decide(config, clf, new_req).pii),
            }
    finally:
        decision.scan, decision.scan_segments = real_scan, real_segments
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--out", default=str(REPO / "bench" / "router" / "pii_scan.json"))
    args = ap.parse_args()
    before = load_before(args.before_rev)
    prompts = {
        "short_clean": "How do I transfer money from my checking account to savings, and is there a fee for it?",
        "short_pii": "Please move $250 to savings, my card is 4111 1111 1111 1111 and mail jane.doe@example.com",
        "2000_tokens_clean": long_prompt(1, pii=False),
        "2000_tokens_pii": long_prompt(2, pii=True),
    }
    load_at_start = os.getloadavg()
    cases = {name: measure(text, before, args.reps) for name, text in prompts.items()}
    decide = measure_decide({k: v for k, v in prompts.items() if k.startswith("2000")}, before, args.reps)
    result = {
        "what": "PII scan latency, all 7 entities: before (pii.py at before_rev, joined text) vs after "
        "(scan_segments, strict and default mode); decide() in a restricted namespace before/after",
        "before_rev": args.before_rev,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "loadavg_1_5_15_before": [round(x, 2) for x in load_at_start],
        "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "cases": cases,
        "decide_2000_tokens": decide,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for name, c in cases.items():
        print(
            f"{name:18s} {c['chars']:5d} chars  before p50 {c['before']['p50_us']:7.1f}"
            f" p99 {c['before']['p99_us']:7.1f}"
            f"  strict p50 {c['after_strict']['p50_us']:7.1f} p99 {c['after_strict']['p99_us']:7.1f}"
            f"  default p50 {c['after_default']['p50_us']:7.1f} p99 {c['after_default']['p99_us']:7.1f} µs"
        )
    print("decide() with the CLINC policy:", json.dumps(decide))
    print("load average before/after:", result["loadavg_1_5_15_before"], result["loadavg_1_5_15_after"])


if __name__ == "__main__":
    main()
