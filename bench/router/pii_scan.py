"""PII scan and decision cost in one run: the scanner before issue 16, the scanner at MAIN_REV (the whole-request
scan as it first landed), and the current one.

"before" is the scanner as it was at BEFORE_REV (router_image/tiered_router/pii.py, loaded from git), scanning the
request's strings joined by newlines as the router did; "main" is the `pii` package at MAIN_REV (loaded from git
side by side with the current one), scanning the request's segments; "after" is the current scanner over the
request's segments (`scan_segments`, what the router does now), in strict mode (the default in restricted
namespaces) and in default mode, every detector run (`after_strict`, `after_default`), and in strict mode stopping
at the first detector that finds something (`after_strict_first`: what decide() runs for keepLocal and reject).
Calls are interleaved so machine load hits all alike; each records wall time and this thread's CPU time
(`time.thread_time`, steadier on a shared, loaded machine).

Prompts: a short CLINC-sized question with and without PII, and ~2,000-token prompts (≈8,000 characters: prose,
dates, times, prices, order numbers, URLs, versions, Python/C++ snippets; `long_prompt` in
tests/unit/router/test_router_pii_equivalence.py) with and without ten planted PII values. The prompt without
planted PII still holds 9-digit order numbers, which strict mode keeps local ("ambiguous long digit run"), so a
third one has them cut to six digits (`2000_tokens_nofind`): nothing is found in it in either mode, every detector
runs to the end, the worst case for the first-finding stop. Then the whole decide() pipeline (PII scan + residency
+ capability + classification with the shipped CLINC policy and its builtin encoder, restricted namespace, every
entity, keepLocal) on the ~2,000-token prompts, before, main and after interleaved, and after alone, call after call
(`after_alone`: the issue's target is decision p99 <= 1 ms).

Usage: python bench/router/pii_scan.py [--reps N] [--before-rev REV] [--main-rev REV] [--out bench/router/pii_scan.json]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
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
MAIN_REV = "9449226"  # main before the scan was made to stop at the first finding and its hot loops were reworked


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


def load_package(rev: str) -> ModuleType:
    """The `pii` package of `rev`, importable beside the current one as `pii_<rev>` (its relative config import
    made absolute: the same PiiEntity enum)."""
    name = f"pii_{rev}"
    raw = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "router_image/tiered_router/pii"], check=True, capture_output=True
    ).stdout
    root = Path(tempfile.mkdtemp())
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        # Extraction filters came with Python 3.11.4 (Debian 12's python3 is 3.11.2); the archive is our own.
        tar.extractall(root, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    package = root / name
    (root / "router_image" / "tiered_router" / "pii").rename(package)
    for path in package.glob("*.py"):
        path.write_text(path.read_text().replace("from ..config import", "from tiered_router.config import"))
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def nofind_prompt(seed: int) -> str:
    """`long_prompt(seed, pii=False)` with its order numbers cut to six digits: nothing for any detector."""
    return re.sub(r"#(\d{6})\d+", r"#\1", long_prompt(seed, pii=False))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _summary(ns: list[int]) -> dict[str, float]:
    us = [x / 1000 for x in ns]
    return {"p50_us": round(statistics.median(us), 1), "p99_us": round(_pct(us, 0.99), 1)}


def measure(text: str, before: ModuleType, main: ModuleType, reps: int) -> dict[str, Any]:
    segments = (Segment(text, "messages:user"),)
    main_segments = (main.Segment(text, "messages:user"),)
    scanners: dict[str, Callable[[], Any]] = {
        "before": lambda: before.scan(text, ALL),
        "main_strict": lambda: main.scan_segments(main_segments, ALL, True),
        "after_strict": lambda: scan_segments(segments, ALL, True),
        "after_strict_first": lambda: scan_segments(segments, ALL, True, True),
        "after_default": lambda: scan_segments(segments, ALL, False),
    }
    times: dict[str, list[int]] = {name: [] for name in scanners}
    cpu: dict[str, list[int]] = {name: [] for name in scanners}
    for i in range(reps + 5):
        for name, fn in scanners.items():
            t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
            fn()
            if i >= 5:
                cpu[name].append(time.thread_time_ns() - c0)
                times[name].append(time.perf_counter_ns() - t0)
    return {
        "chars": len(text),
        "tokens_est": (len(text) + 3) // 4,
        "findings": {
            "before": sorted({f.entity.value for f in before.scan(text, ALL)}),
            "main_strict": sorted({f.entity.value for f in main.scan_segments(main_segments, ALL, True)}),
            "after_strict": sorted({f.entity.value for f in scan_segments(segments, ALL, True)}),
            "after_strict_first": sorted({f.entity.value for f in scan_segments(segments, ALL, True, True)}),
            "after_default": sorted({f.entity.value for f in scan_segments(segments, ALL, False)}),
        },
        **{name: _summary(ns) for name, ns in times.items()},
        **{f"cpu_{name}": _summary(ns) for name, ns in cpu.items()},
    }


def measure_decide(texts: dict[str, str], before: ModuleType, main: ModuleType, reps: int) -> dict[str, Any]:
    """decide() with the shipped CLINC policy in a restricted namespace, every entity, keepLocal: before, main and
    after interleaved (wall and CPU time), then after alone."""
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
    assert config.residency.pii.action is decision.PiiAction.KEEP_LOCAL
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    out: dict[str, Any] = {"policy": "router_image/policies/clinc150-domains.yaml", "encoder": clf.encoder.name,
                           "namespace": "restricted (strict PII mode), keepLocal"}  # fmt: skip
    real_scan, real_segments = decision.scan, decision.scan_segments

    def before_scan(text: str, entities: Any, strict: bool = False, first: bool = False) -> Any:
        return before.scan(text, entities)

    def main_segments(segments: Any, entities: Any, strict: bool = False, first: bool = False) -> Any:
        return main.scan_segments(segments, entities, strict)  # main had no first-finding stop

    variants = ("before", "main", "after")
    try:
        for name, text in texts.items():
            tokens = decision.estimate_tokens(text)
            reqs = {
                "before": decision.RoutingRequest(text=text, model="auto", input_tokens=tokens),
                "main": decision.RoutingRequest(
                    text=text, model="auto", input_tokens=tokens, segments=(main.Segment(text, "messages:user"),)
                ),
                "after": decision.RoutingRequest(
                    text=text, model="auto", input_tokens=tokens, segments=(Segment(text, "messages:user"),)
                ),
            }
            times: dict[str, list[int]] = {v: [] for v in variants}
            cpu: dict[str, list[int]] = {v: [] for v in variants}  # this thread's CPU time: steadier under load
            for i in range(reps + 5):
                for which in variants:
                    decision.scan = before_scan if which == "before" else real_scan  # type: ignore[assignment]
                    decision.scan_segments = main_segments if which == "main" else real_segments  # type: ignore[assignment]
                    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                    decision.decide(config, clf, reqs[which])
                    if i >= 5:
                        cpu[which].append(time.thread_time_ns() - c0)
                        times[which].append(time.perf_counter_ns() - t0)
            decision.scan, decision.scan_segments = real_scan, real_segments
            alone: list[int] = []
            alone_cpu: list[int] = []
            for i in range(reps + 5):
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                decision.decide(config, clf, reqs["after"])
                if i >= 5:
                    alone_cpu.append(time.thread_time_ns() - c0)
                    alone.append(time.perf_counter_ns() - t0)
            out[name] = {
                **{v: _summary(times[v]) for v in variants},
                "after_alone": _summary(alone),
                **{f"cpu_{v}": _summary(cpu[v]) for v in variants},
                "cpu_after_alone": _summary(alone_cpu),
                "pii_after": list(decision.decide(config, clf, reqs["after"]).pii),
            }
    finally:
        decision.scan, decision.scan_segments = real_scan, real_segments
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--main-rev", default=MAIN_REV)
    ap.add_argument("--out", default=str(REPO / "bench" / "router" / "pii_scan.json"))
    args = ap.parse_args()
    before = load_before(args.before_rev)
    main_pii = load_package(args.main_rev)
    prompts = {
        "short_clean": "How do I transfer money from my checking account to savings, and is there a fee for it?",
        "short_pii": "Please move $250 to savings, my card is 4111 1111 1111 1111 and mail jane.doe@example.com",
        "2000_tokens_clean": long_prompt(1, pii=False),
        "2000_tokens_nofind": nofind_prompt(1),
        "2000_tokens_pii": long_prompt(2, pii=True),
    }
    load_at_start = os.getloadavg()
    cases = {name: measure(text, before, main_pii, args.reps) for name, text in prompts.items()}
    decide = measure_decide({k: v for k, v in prompts.items() if k.startswith("2000")}, before, main_pii, args.reps)
    result = {
        "what": "PII scan latency, all 7 entities: before (pii.py at before_rev, joined text), main (the pii package "
        "at main_rev, strict) and after (scan_segments: strict and default mode, every detector; strict stopping "
        "at the first finding); decide() in a restricted namespace (keepLocal) before/main/after; wall and "
        "thread CPU time",
        "before_rev": args.before_rev,
        "main_rev": args.main_rev,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "loadavg_1_5_15_before": [round(x, 2) for x in load_at_start],
        "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
        "cases": cases,
        "decide_2000_tokens": decide,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("scan, CPU µs p50/p99:")
    for name, c in cases.items():
        cols = "  ".join(
            f"{k} {c['cpu_' + k]['p50_us']:.0f}/{c['cpu_' + k]['p99_us']:.0f}"
            for k in ("before", "main_strict", "after_strict", "after_strict_first", "after_default")
        )
        print(f"  {name:18s} {c['chars']:5d} chars  {cols}")
    print("decide() with the CLINC policy, µs p50/p99 (CPU | wall):")
    for name, d in decide.items():
        if isinstance(d, dict):
            cols = "  ".join(
                f"{v} {d['cpu_' + v]['p50_us']:.0f}/{d['cpu_' + v]['p99_us']:.0f}"
                f" | {d[v]['p50_us']:.0f}/{d[v]['p99_us']:.0f}"
                for v in ("before", "main", "after", "after_alone")
            )
            print(f"  {name:18s} {cols}  pii {d['pii_after']}")
    print("load average before/after:", result["loadavg_1_5_15_before"], result["loadavg_1_5_15_after"])


if __name__ == "__main__":
    main()
