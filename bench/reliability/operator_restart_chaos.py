"""Operator chaos, second half: `python bench/reliability/operator_restart_chaos.py [--tiers 20] [--rounds 3]`.

Starts a control plane of its own in a temporary directory (never the shared `.dev` one), runs the real operator
(standalone, its own ServiceAccount) and, per round, SIGKILLs and restarts the API server, then etcd, then both,
with changes made right before each kill and right after the API server is ready again. Writes the resume time of
every outage (API server ready -> operator has acted on every change made after it) and the final convergence
check to operator_restart_chaos.json. Same code as tests/reliability/test_operator_restart_chaos.py.
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

from operator_restart_chaos import fresh_control_plane, run_restart_chaos  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--down-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("operator_restart_chaos.json"))
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tiered-restart-chaos-") as tmp, \
            fresh_control_plane(Path(tmp) / "cp") as cluster:
        cluster.kubectl("create", "namespace", "restart-chaos")
        result = run_restart_chaos(cluster, "restart-chaos", Path(tmp), args.tiers, rounds=args.rounds,
                                   down_s=args.down_seconds, seed=args.seed)  # fmt: skip
    doc = {
        "benchmark": "operator_restart_chaos",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python bench/reliability/operator_restart_chaos.py --tiers {args.tiers} --rounds {args.rounds}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(time.perf_counter() - started, 1),
        **result.as_json(),
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    ok = not result.problems and result.operator_alive and result.operator_starts == 1 and all(
        r.resume_s is not None and r.resume_s <= 30 for r in result.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
