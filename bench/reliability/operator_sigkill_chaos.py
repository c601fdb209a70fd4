"""Operator chaos at the issue's size: `python bench/reliability/operator_sigkill_chaos.py [--tiers 50] [--kills 20]`.

Uses the local control plane (started if needed, as the tests do), installs the CRDs, runs the same chaos as
tests/reliability/test_operator_chaos.py in a fresh namespace, and writes the result to operator_sigkill_chaos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from operator_chaos import run_chaos  # noqa: E402

from tiered_dev import devcluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tiers", type=int, default=50)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    state_dir = Path(os.environ.get("TIERED_DEV_DIR", ROOT / ".dev")).resolve()
    cluster = devcluster.up(state_dir, progress=lambda _msg: None)
    apply = ("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests")
    cluster.kubectl(*apply, "-k", str(ROOT / "crds"))
    namespace = f"chaos-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = run_chaos(cluster, namespace, Path(tmp), args.tiers, args.kills, seed=args.seed,
                               converge_timeout=300)  # fmt: skip
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    doc = {
        "benchmark": "operator_sigkill_chaos",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python bench/reliability/operator_sigkill_chaos.py --tiers {args.tiers} --kills {args.kills}",
        "elapsed_s": round(time.perf_counter() - started, 1),
        **result.as_json(),
    }
    Path(__file__).with_name("operator_sigkill_chaos.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if not result.problems else 1


if __name__ == "__main__":
    sys.exit(main())
