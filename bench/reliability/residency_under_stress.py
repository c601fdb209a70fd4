"""Residency under stress, as figures: `python bench/reliability/residency_under_stress.py [--total N] [--out FILE]`.

Runs the same phases as tests/reliability/test_residency_stress.py (real router process, stand-in upstreams,
local outage / 5xx / hangs, budget exhaustion, config reload churn) and writes per-phase counts, throughput and
the number of planted values found at the cloud stand-in to JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from residency_stress import run_stress  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total", type=int, default=10_000, help="PII-bearing requests")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("residency_under_stress.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run_stress(Path(tmp), args.total, args.seed))
    doc = {
        "benchmark": "residency_under_stress",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python bench/reliability/residency_under_stress.py --total {args.total}",
        **result.as_json(),
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k not in ("phases", "disguises")}, indent=2))
    return 0 if doc["reached_cloud_unredacted"] == 0 and result.router_alive else 1


if __name__ == "__main__":
    sys.exit(main())
