"""Why a proxy hop costs more per request at low rates: `python bench/router/idle_gap.py [--rates 10 50 200]`.

Same processes as bench/router/overhead.py (a direct upstream, the bare forwarding floor on tiered_http, the keyword
router), open loops at each rate, targets interleaved, `--reps` repetitions. Beside the client-side latency, for
each loop it reads from the kernel, per request:

- the proxy's CPU time and its run-queue wait (/proc/PID/task/*/schedstat: ns on a CPU, ns runnable but waiting for
  one) and its voluntary context switches (each one is a sleep, so a wake-up follows);
- the idle entries of every CPU (/sys/devices/system/cpu/cpu*/cpuidle/state*/usage): on this VM the cpuidle driver
  is haltpoll with guest_halt_poll_ns = 0, so an idle vCPU halts at once and the next wake-up pays the host's
  HLT exit and IPI path.

Then the same again under `--condition keepers`: one `nice -n 19` busy loop per CPU, which keeps every vCPU out of
halt without taking CPU time from anything at normal priority (CFS gives a nice-19 task 1.5 % of a contended CPU). If
the low-rate gap is wake-up latency from halted vCPUs, it closes under the keepers; if it is the proxy's own work
(cold caches after 20-100 ms idle), the proxy's CPU time per request stays high under them. Writes
bench/router/idle_gap.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from overhead import (  # noqa: E402
    FLOOR_CODE,
    PY,
    UPSTREAM_CODE,
    free_port,
    open_loop,
    pct,
    router_config,
    start,
    wait_http,
)


def sched(pid: int) -> tuple[int, int, int]:
    """(ns on CPU, ns waiting on a run queue, voluntary context switches) summed over the threads of `pid`."""
    on = wait = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            fields = (task / "schedstat").read_text().split()
            on += int(fields[0])
            wait += int(fields[1])
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    switches += int(line.split()[1])
    return on, wait, switches


def idle_entries() -> int:
    """Idle-state entries of all CPUs so far (every state)."""
    total = 0
    for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpuidle/state*/usage"):
        with contextlib.suppress(OSError, ValueError):
            total += int(path.read_text())
    return total


def cpuidle_settings() -> dict[str, str]:
    out = {}
    for path in [Path("/sys/devices/system/cpu/cpuidle/current_driver"),
                 Path("/sys/devices/system/cpu/cpuidle/current_governor_ro"),
                 *Path("/sys/module/haltpoll/parameters").glob("*")]:  # fmt: skip
        with contextlib.suppress(OSError):
            out[path.name] = path.read_text().strip()
    return out


async def measure(url: str, model: str, rate: float, count: int, pid: int | None) -> dict[str, Any]:
    before = sched(pid) if pid else (0, 0, 0)
    idle0 = idle_entries()
    me0 = sched(os.getpid())
    run = await open_loop(url, model, rate, count)
    idle1 = idle_entries()
    me1 = sched(os.getpid())
    after = sched(pid) if pid else (0, 0, 0)
    n = max(1, count + 30)  # open_loop sends 30 warm-up requests first
    lat = run["latencies_ms"]
    return {
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "errors": run["errors"],
        "proxy_cpu_us_per_req": round((after[0] - before[0]) / n / 1000, 1) if pid else None,
        "proxy_runqueue_wait_us_per_req": round((after[1] - before[1]) / n / 1000, 1) if pid else None,
        "proxy_sleeps_per_req": round((after[2] - before[2]) / n, 2) if pid else None,
        "client_runqueue_wait_us_per_req": round((me1[1] - me0[1]) / n / 1000, 1),
        "idle_entries_per_req": round((idle1 - idle0) / n, 2),
    }  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    keepers: list[subprocess.Popen[bytes]] = []
    tmp = Path(tempfile.mkdtemp(prefix="tiered-idle-gap-"))
    results: dict[str, Any] = {}
    try:
        up_port = free_port()
        procs.append(start([PY, "-c", UPSTREAM_CODE, str(up_port)], env))
        upstream = f"http://127.0.0.1:{up_port}/v1"
        await wait_http(f"http://127.0.0.1:{up_port}/")
        targets: dict[str, tuple[str, str, int | None]] = {"direct": (upstream + "/chat/completions", "m", None)}
        port = free_port()
        procs.append(start([PY, "-c", FLOOR_CODE, str(port), upstream + "/chat/completions"], env))
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        targets["floor"] = (f"http://127.0.0.1:{port}/v1/chat/completions", "m", procs[-1].pid)
        cfg = tmp / "router.json"
        cfg.write_text(json.dumps(router_config(upstream, "keyword")))
        port = free_port()
        procs.append(start([PY, "-m", "tiered_router", "serve", "--config", str(cfg), "--host", "127.0.0.1",
                            "--port", str(port), "--log-level", "WARNING"], env, cwd=tmp))  # fmt: skip
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        targets["router (keyword)"] = (f"http://127.0.0.1:{port}/v1/chat/completions", "auto", procs[-1].pid)
        for condition in args.conditions:
            if condition == "keepers":
                keepers = [subprocess.Popen(["nice", "-n", "19", PY, "-c", "while True: pass"])
                           for _ in range(os.cpu_count() or 1)]  # fmt: skip
                await asyncio.sleep(1.0)
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for rate in args.rates:
                key = f"{rate:g}"
                runs[key] = {name: [] for name in targets}
                count = max(int(rate * args.open_seconds), args.min_requests)
                for rep in range(args.reps):
                    names = list(targets)
                    order = names[rep % len(names) :] + names[: rep % len(names)]
                    for name in order:
                        url, model, pid = targets[name]
                        runs[key][name].append(await measure(url, model, rate, count, pid))
                        await asyncio.sleep(0.3)
                print(condition, key, "done", file=sys.stderr, flush=True)
            results[condition] = summarize(runs)
            for k in keepers:
                k.terminate()
                k.wait(5)
            keepers = []
        return results
    finally:
        for p in procs + keepers:
            p.terminate()
        for p in procs + keepers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


def summarize(runs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Medians over repetitions; added latency from same-repetition differences against `direct`."""
    out: dict[str, Any] = {}
    for rate, by_target in runs.items():
        direct = by_target["direct"]
        out[rate] = {}
        for name, reps in by_target.items():
            entry: dict[str, Any] = {
                key: statistics.median(r[key] for r in reps)
                for key in reps[0]
                if reps[0][key] is not None and key != "errors"
            }
            entry["errors"] = sum(r["errors"] for r in reps)
            if name != "direct":
                added = [r["p50_ms"] - d["p50_ms"] for r, d in zip(reps, direct, strict=True)]
                entry["added_p50_ms"] = round(statistics.median(added), 3)
                entry["added_p50_ms_runs"] = [round(a, 3) for a in added]
            out[rate][name] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rates", type=float, nargs="*", default=[10.0, 50.0, 200.0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--open-seconds", type=float, default=4.0)
    parser.add_argument("--min-requests", type=int, default=150)
    parser.add_argument("--conditions", nargs="*", default=["as-is", "keepers"])
    parser.add_argument("--out", type=Path, default=BENCH / "idle_gap.json")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    load_before = round(os.getloadavg()[0], 2)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results = asyncio.run(main_async(args))
    doc = {
        "benchmark": "low-rate overhead gap (bench/router/idle_gap.py)",
        "when": started,
        "load_average_1m": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        "cpuidle": cpuidle_settings(),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "results": results,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
