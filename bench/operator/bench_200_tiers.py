"""The 200-tier figure of docs/operator.md: bench_scale.py with --tiers 200, written to bench/operator/scale-200.json.

    .venv/bin/python bench/operator/bench_200_tiers.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import REPO, main

if __name__ == "__main__":
    sys.exit(main(["--tiers", "200", "--out", str(REPO / "bench" / "operator" / "scale-200.json"), *sys.argv[1:]]))
