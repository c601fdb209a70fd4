"""The atheris harnesses (tests/fuzz/fuzz_http_*.py) in a bounded run: each for FUZZ_SECONDS (25 s by default) from
its seed corpus, in a subprocess (libFuzzer exits the process). A crash fails the test with the input that caused
it; bench/http/fuzz.py runs the same harnesses for longer and records what they found."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SECONDS = int(os.environ.get("FUZZ_SECONDS", "25"))


@pytest.mark.parametrize("target", ["request", "decoder"])
def test_a_bounded_fuzzing_run_finds_no_crash(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    cmd = [sys.executable, str(HERE / f"fuzz_http_{target}.py"), f"-max_total_time={SECONDS}",
           f"-artifact_prefix={tmp_path}/", str(corpus), str(HERE / "corpus" / target)]  # fmt: skip
    if target == "request":
        cmd.insert(2, f"-dict={HERE / 'http.dict'}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    log = proc.stdout + proc.stderr
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    assert proc.returncode == 0 and not crashes, f"{crashes}\n{log[-4000:]}"
    runs = re.search(r"Done (\d+) runs", log)
    assert runs is not None and int(runs.group(1)) >= 1000, log[-2000:]  # it ran, and not only the seeds
