"""What a client sees while an upstream misbehaves: `python bench/reliability/router_faults.py [--requests N]`.

For each fault of the local tier (the cloud tier healthy, then both failing), N requests go through the real router
process, 16 at a time; the script records statuses, which tier answered, and client latency (p50/p95/max) against
the deadline the config implies (attempts x totalMs). A second part measures the circuit breaker: fallback latency
with the local tier failing, before and after its circuit opens. Writes JSON next to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from reliability_helpers import (  # noqa: E402
    CLOSE_MID_BODY,
    CLOSE_MID_STREAM,
    ERROR,
    HANG,
    OK,
    RESET,
    STALL_STREAM,
    RouterProcess,
    Upstream,
    router_config,
    write_config,
)

TIMEOUTS = {"connectMs": 300, "firstByteMs": 700, "totalMs": 1500}
SCENARIOS: list[tuple[str, str, str, float, bool]] = [
    # name, local mode, cloud mode, local delay (s), stream
    ("healthy", OK, OK, 0.0, False),
    ("local 503", ERROR, OK, 0.0, False),
    ("local hangs", HANG, OK, 0.0, False),
    ("local resets", RESET, OK, 0.0, False),
    ("local closes mid-body", CLOSE_MID_BODY, OK, 0.0, False),
    ("local slow (0.3 s)", OK, OK, 0.3, False),
    ("local slower than firstByteMs (1.0 s)", OK, OK, 1.0, False),
    ("stream: local closes mid-stream", CLOSE_MID_STREAM, OK, 0.0, True),
    ("stream: local stalls mid-stream", STALL_STREAM, OK, 0.0, True),
    ("stream: local hangs", HANG, OK, 0.0, True),
    ("both 503", ERROR, ERROR, 0.0, False),
    ("both hang", HANG, HANG, 0.0, False),
    ("both reset", RESET, RESET, 0.0, False),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, n: int, stream: bool) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    tiers: Counter[str] = Counter()
    stream_ends: Counter[str] = Counter()
    sem = asyncio.Semaphore(16)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "stream": stream}

    async def one(session: aiohttp.ClientSession) -> None:
        async with sem:
            started = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=body) as rsp:
                raw = await rsp.read()
            latencies.append(time.perf_counter() - started)
            statuses[rsp.status] += 1
            tiers[rsp.headers.get("x-tiered-tier", "-")] += 1
            if stream and rsp.status == 200:
                stream_ends["[DONE]" if b"[DONE]" in raw else "error event" if b'"error"' in raw else "cut"] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))
    out: dict[str, Any] = {
        "requests": n,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answered_by": dict(tiers),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1),
            "p95": round(percentile(latencies, 0.95) * 1000, 1),
            "max": round(max(latencies) * 1000, 1),
        },
    }
    if stream:
        out["stream_ends"] = dict(stream_ends)
    return out


async def run(tmp: Path, n: int) -> dict[str, Any]:
    slm, cloud = Upstream("slm"), Upstream("cloud")
    await slm.start()
    await cloud.start()

    def config(**overrides: Any) -> dict[str, Any]:
        c = router_config(slm.base_url, cloud.base_url, **overrides)
        for tier in c["tiers"]:
            tier["timeouts"] = TIMEOUTS
        return c

    path = tmp / "router.json"
    write_config(path, config())
    router = RouterProcess(path, tmp / "router.log", log_level="WARNING")
    await asyncio.to_thread(router.start)
    results: dict[str, Any] = {}
    try:
        for name, local_mode, cloud_mode, delay, stream in SCENARIOS:
            slm.mode, cloud.mode, slm.delay_s = local_mode, cloud_mode, delay
            results[name] = await measure(router.url, n, stream)
        slm.mode, cloud.mode, slm.delay_s = ERROR, OK, 0.0
        old = router.config_hash()
        write_config(path, config(circuitBreaker={"failureThreshold": 5, "openSeconds": 2}))
        await asyncio.to_thread(router.wait_for_hash_change, old)
        contacted = len(slm.received)
        before = await measure(router.url, 5, False)  # 5 failures: the circuit opens
        after = await measure(router.url, n, False)
        results["breaker (threshold 5, local 503)"] = {
            "first_5_requests": before,
            "next_requests_circuit_open": after,
            "local_contacted_while_open": len(slm.received) - contacted - 5,
        }
    finally:
        await asyncio.to_thread(router.stop)
        await slm.stop()
        await cloud.stop()
    deadline_ms = 2 * TIMEOUTS["totalMs"]
    return {"timeouts_ms": TIMEOUTS, "retries": 1, "deadline_ms": deadline_ms, "scenarios": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100, help="requests per scenario")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("router_faults.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(Path(tmp), args.requests))
    doc = {
        "benchmark": "router_faults",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": f"python bench/reliability/router_faults.py --requests {args.requests}",
        **result,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    worst = max(
        s["latency_ms"]["max"] for s in result["scenarios"].values() if isinstance(s, dict) and "latency_ms" in s
    )
    print(json.dumps({"deadline_ms": result["deadline_ms"], "worst_latency_ms": worst}, indent=2))
    return 0 if worst <= result["deadline_ms"] + 2000 else 1


if __name__ == "__main__":
    sys.exit(main())
