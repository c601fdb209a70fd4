"""Benchmark: create N local InferenceTiers at once; time to all Ready, the operator's API requests (counted by the
API server per verb and resource), its RSS, and its writes during a steady-state window (must be 0).

Runs the real operator (`python -m tiered_operator`, a ServiceAccount of the run's own bound to the operator's
ClusterRole) against the local control plane (`tiered dev up`: API server, controller-manager, scheduler, KWOK).
The run itself lives in tests/integration/operator/operator_scale.py, shared with test_operator_scale.py.

    .venv/bin/python bench/operator/bench_scale.py --tiers 1000 [--steady 60]   # → bench/operator/scale-1000.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration" / "operator"))

from operator_scale import run_scale  # noqa: E402

from tiered_dev import devcluster  # noqa: E402


def extra_env(args: argparse.Namespace) -> dict[str, str]:
    env: dict[str, str] = {}
    if args.workers is not None:
        env["TIERED_WORKERS"] = str(args.workers)
    if args.operator_src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(args.operator_src.resolve() / "operator"),
                                             *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiers", type=int, default=1000)
    parser.add_argument("--steady", type=float, default=60.0, help="steady-state window, seconds")
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--resync", type=int, default=30, help="TIERED_RESYNC_SECONDS of the operator")
    parser.add_argument("--workers", type=int, default=None, help="TIERED_WORKERS of the operator")
    parser.add_argument("--operator-src", type=Path, default=None,
                        help="run the operator from SRC/operator (an anchor: `git archive` of a commit)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    cluster = devcluster.up(Path(os.environ.get("TIERED_DEV_DIR", REPO / ".dev")), progress=lambda _m: None)
    apply = ("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-bench")
    cluster.kubectl(*apply, "-k", str(REPO / "crds"))
    cluster.kubectl(*apply, "-f", str(REPO / "manifests/operator/peering-crds.yaml"))
    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    namespace = f"bench-scale-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        result = run_scale(
            cluster, namespace, args.tiers, out_dir, steady_seconds=args.steady, timeout=args.timeout,
            resync_seconds=args.resync, progress=lambda m: print(m, flush=True), extra_env=extra_env(args),
        )
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    summary = {"command": " ".join(["bench/operator/bench_scale.py", *(argv or sys.argv[1:])]), **result.summary()}
    out = args.out or REPO / "bench" / "operator" / f"scale-{args.tiers}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    ok = result.all_ready_seconds is not None and result.steady_writes == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
