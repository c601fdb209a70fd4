"""Soak: `python bench/reliability/soak.py [--seconds 600] [--rate 200]` -> bench/reliability/soak.json.

Real `tiered-slm serve` on a generated tiny GGUF, real `tiered-router serve` in front of it (keyword route, lexical
encoder), an open-loop aiohttp generator at a constant arrival rate. Writes requests, errors, achieved rate,
latency p50/p99 and both processes' RSS per minute, and the RSS growth after the warm-up minute. Same code as
tests/reliability/test_soak.py. Run it on a quiet machine (it loads both cores for the whole run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from soak import SoakSettings, document, run_soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("soak.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tiered-soak-") as tmp:
        report = run_soak(Path(tmp), SoakSettings(seconds=args.seconds, rate=args.rate, max_tokens=args.max_tokens))
    command = f"python bench/reliability/soak.py --seconds {args.seconds:g} --rate {args.rate:g}"
    doc = document(report, command, load_before, time.perf_counter() - started)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "per_minute"}, indent=2))
    ok = report["errors"] == 0 and all(report["rss"][p]["growth_percent"] < 10 for p in ("router", "slm"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
