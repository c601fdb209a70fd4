"""Fuzzing figures: `python bench/reliability/router_fuzz.py` runs tests/reliability/test_router_fuzz.py (≥10,000
hypothesis-generated requests plus malformed raw HTTP against the real router) and writes its status counts to
router_fuzz.json next to this file. The test's pass/fail is reported too: the figures are written either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    out = Path(__file__).with_name("router_fuzz.json")
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fuzz.json"
        env = {**os.environ, "TIERED_FUZZ_REPORT": str(report)}
        test = "tests/reliability/test_router_fuzz.py::test_fuzzed_requests_get_only_2xx_or_4xx_and_router_survives"
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
        elapsed = time.perf_counter() - started
        figures = json.loads(report.read_text())
    doc = {
        "benchmark": "router_fuzz",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/reliability/router_fuzz.py",
        "test_passed": proc.returncode == 0,
        "elapsed_s": round(elapsed, 1),
        **figures,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "server_error_samples"}, indent=2))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
