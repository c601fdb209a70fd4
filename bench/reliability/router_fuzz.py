"""Fuzzing figures: `python bench/reliability/router_fuzz.py` runs tests/reliability/test_router_fuzz.py (≥10,000
hypothesis-generated requests plus malformed raw HTTP against the real router) and
tests/reliability/test_router_schemathesis.py (schemathesis, every check, against the router's `/openapi.json`),
and writes their status counts to router_fuzz.json next to this file. Each test's pass/fail is reported too: the
figures are written either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_test(test: str, report_env: str) -> tuple[bool, float, dict[str, Any]]:
    """Run one pytest node with `report_env` naming a file the test writes its figures to."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "figures.json"
        env = {**os.environ, report_env: str(report)}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
        elapsed = time.perf_counter() - started
        figures: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {"output": proc.stdout[-3000:]}
    return proc.returncode == 0, elapsed, figures


def main() -> int:
    out = Path(__file__).with_name("router_fuzz.json")
    hyp_ok, hyp_s, hyp = run_test(
        "tests/reliability/test_router_fuzz.py::test_fuzzed_requests_get_only_2xx_or_4xx_and_router_survives",
        "TIERED_FUZZ_REPORT",
    )
    st_ok, st_s, st = run_test(
        "tests/reliability/test_router_schemathesis.py::test_router_conforms_to_its_openapi_document_under_schemathesis",
        "TIERED_SCHEMATHESIS_REPORT",
    )
    doc = {
        "benchmark": "router_fuzz",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python bench/reliability/router_fuzz.py",
        "test_passed": hyp_ok and st_ok,
        "requests_total": hyp.get("requests", 0) + st.get("requests", 0),
        "hypothesis": {"test_passed": hyp_ok, "elapsed_s": round(hyp_s, 1), **hyp},
        "schemathesis": {"test_passed": st_ok, "elapsed_s": round(st_s, 1), **st},
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2)[:4000])
    return 0 if doc["test_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
