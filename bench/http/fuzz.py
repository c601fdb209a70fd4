"""The atheris harnesses of tests/fuzz/ run long: `python bench/http/fuzz.py [--minutes 10] [--jobs 1]`.

Each target (request: the parser and connection through a socketpair; decoder: Content-Encoding against the standard
decoders) runs for `--minutes` from its seed corpus plus the corpus earlier runs grew
(~/.cache/tiered/fuzz/<target>, reused so coverage accumulates). Writes bench/http/fuzz.json: runs, executions per
second, libFuzzer's coverage counters (cov: edges, ft: features) at the start and the end, corpus size, and every
crash or timeout found (the input is kept next to the JSON as crash-<target>-<sha>; the test that replays the seed
corpus in CI is tests/fuzz/test_fuzz_http.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "tests" / "fuzz"
CACHE = Path(os.environ.get("TIERED_CACHE_DIR", Path.home() / ".cache" / "tiered")) / "fuzz"
STATUS = re.compile(r"#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


def _counters(status: tuple[str, ...] | None) -> dict[str, int] | None:
    return None if status is None else {"cov": int(status[2]), "ft": int(status[3]), "corpus": int(status[4])}


def run_target(target: str, seconds: int, out_dir: Path) -> dict[str, Any]:
    corpus = CACHE / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts = out_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(FUZZ / f"fuzz_http_{target}.py"), f"-max_total_time={seconds}",
           f"-artifact_prefix={artifacts}/{target}-", "-print_final_stats=1", str(corpus),
           str(FUZZ / "corpus" / target)]  # fmt: skip
    if target == "request":
        cmd.insert(2, f"-dict={FUZZ / 'http.dict'}")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, check=False)
    elapsed = time.perf_counter() - started
    log = proc.stdout + proc.stderr
    statuses = STATUS.findall(log)
    inited = next((s for s in statuses if s[1] == "INITED"), None)
    last = statuses[-1] if statuses else None
    done = re.search(r"Done (\d+) runs in (\d+) second", log)
    found = sorted(artifacts.glob(f"{target}-*"))
    kept = []
    for path in found:  # keep the inputs beside the JSON, for the record and for a regression seed
        dest = Path(__file__).with_name(f"crash-{path.name}")
        shutil.copyfile(path, dest)
        kept.append(dest.name)
    return {
        "seconds": round(elapsed, 1),
        "exit_code": proc.returncode,
        "runs": int(done.group(1)) if done else (int(last[0]) if last else 0),
        "execs_per_s": round(int(done.group(1)) / max(1, int(done.group(2))), 1) if done else None,
        "coverage_at_start": _counters(inited),
        "coverage_at_end": _counters(last),
        "crashes": kept,
        "log_tail": log[-1500:] if proc.returncode != 0 else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="per target")
    parser.add_argument("--targets", nargs="*", default=["request", "decoder"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("fuzz.json"))
    args = parser.parse_args()
    out_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"tiered-fuzz-{os.getpid()}"
    results = {t: run_target(t, int(args.minutes * 60), out_dir) for t in args.targets}
    doc = {
        "benchmark": "atheris fuzzing of tiered_http (bench/http/fuzz.py)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "minutes_per_target": args.minutes,
        "results": results,
        "crashes_total": sum(len(r["crashes"]) for r in results.values()),
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if doc["crashes_total"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
