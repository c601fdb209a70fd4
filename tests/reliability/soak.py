"""Soak: a constant arrival rate of chat completions through the real router into the real SLM server for minutes,
counting every error and sampling both processes' RSS.

Shared by tests/reliability/test_soak.py and bench/reliability/soak.py. Real processes only:
- `tiered-slm make-test-model` writes a tiny random-weight Llama GGUF (64 wide, 1 layer: the smallest shape the
  generator makes sense for, so llama.cpp's share of each request is small and the 2-core box keeps up);
- `tiered-slm serve` on it (`start_server_process` from tests/integration/slm/slm_helpers.py, 1 llama.cpp thread);
- `tiered-router serve` in front (`RouterProcess` from reliability_helpers.py) with a keyword route and the lexical
  encoder, so the soak does not depend on the neural classifier;
- an open-loop generator (aiohttp): request i is due at start + i/rate whatever happened to the earlier ones, and
  its latency is measured from that due time, so a stall shows up as latency instead of as a slower rate
  (no coordinated omission).

An error is anything but a 200 whose body is a chat completion with a string message, answered by the `slm` tier
(x-tiered-tier): HTTP errors, timeouts, connection errors, malformed bodies.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from reliability_helpers import REPO, RouterProcess, router_config, write_config

sys.path.insert(0, str(REPO / "tests" / "integration" / "slm"))
from slm_helpers import ServerProcess, start_server_process

MODEL_SHAPE = ("--embd", "64", "--layers", "1", "--ff", "128")
MODEL_ID = "soak-tiny"
QUEUE_SIZE = 1024  # 5 s of backlog at 200 req/s, under the router's 20 s first-byte timeout


@dataclass(frozen=True)
class SoakSettings:
    seconds: float = 600.0
    rate: float = 200.0
    max_tokens: int = 4
    timeout_s: float = 30.0
    sample_every_s: float = 5.0
    warmup_s: float | None = None  # default: 60 s, or a quarter of a run shorter than 5 minutes

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return 60.0 if self.seconds >= 300 else self.seconds / 4


@dataclass
class Outcome:
    due_s: float  # when it was due, from the start of the run
    lag_s: float  # how late the generator actually sent it
    latency_s: float  # due -> whole response read
    error: str | None


@dataclass
class RssSample:
    t_s: float
    router_kib: int
    slm_kib: int
    router_cpu_s: float
    slm_cpu_s: float
    load1: float


@dataclass
class SoakRun:
    settings: SoakSettings
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[RssSample] = field(default_factory=list)
    send_seconds: float = 0.0
    router_alive: bool = False
    slm_alive: bool = False


# --- processes ---------------------------------------------------------------------------------------------------


def make_model(directory: Path) -> Path:
    path = directory / "soak-tiny-f32.gguf"
    subprocess.run([sys.executable, "-m", "tiered_slm", "make-test-model", str(path), *MODEL_SHAPE],
                   check=True, capture_output=True, cwd=REPO)  # fmt: skip
    return path


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as rsp:
            return int(rsp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def start_slm(model: Path, cache_dir: Path, timeout: float = 120) -> ServerProcess:
    """`tiered-slm serve` until /readyz is 200; its output keeps being read so the pipe never fills."""
    args = ["--model", str(model), "--ctx", "256", "--queue-size", str(QUEUE_SIZE), "--cache-dir", str(cache_dir),
            "--model-id", MODEL_ID]  # fmt: skip
    server = start_server_process(args, timeout_s=timeout)

    def drain() -> None:
        assert server.process.stdout is not None
        for line in server.process.stdout:
            server.log_lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while _http_status(server.base_url + "/readyz") != 200:
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.process.kill()
            raise AssertionError("SLM server never became ready:\n" + "".join(server.log_lines[-40:]))
        time.sleep(0.2)
    return server


def soak_router_config(slm_url: str) -> dict[str, Any]:
    """One local tier (so a failure is an error, not a fallback), a keyword route, the lexical encoder."""
    base = router_config(slm_url + "/v1", slm_url + "/v1")
    slm = {**base["tiers"][0], "model": MODEL_ID,
           "timeouts": {"connectMs": 1000, "firstByteMs": 20000, "totalMs": 25000}}  # fmt: skip
    return {**base, "policy": "soak", "tiers": [slm], "defaultTier": "slm",
            "routes": [{"name": "chat", "tier": "slm", "keywords": ["hello"], "examples": ["say hello to me"]}],
            "fallback": {"retries": 0, "on": ["5xx", "timeout", "connect"]},
            "residency": {"namespaceClass": "unrestricted"}}  # fmt: skip


def start_router(slm_url: str, directory: Path) -> RouterProcess:
    config = directory / "router.json"
    write_config(config, soak_router_config(slm_url))
    return RouterProcess(config, directory / "router.log", log_level="WARNING").start()


# --- measuring ---------------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def classify(status: int, headers: Any, raw: bytes) -> str | None:
    """None for a good answer, else a short reason (pure)."""
    if status != 200:
        try:
            err = json.loads(raw)["error"]
            return f"http {status} {err.get('type')}/{err.get('code')}"
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"http {status}"
    try:
        body = json.loads(raw)
        content = body["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "malformed body"
    if not isinstance(content, str):
        return "malformed body"
    if headers.get("x-tiered-tier") != "slm":
        return f"answered by tier {headers.get('x-tiered-tier')!r}"
    return None


def body_for(i: int, max_tokens: int) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": f"hello there, this is request {i}"}]}  # fmt: skip


async def _one(session: aiohttp.ClientSession, url: str, i: int, due: float, start: float, settings: SoakSettings,
               out: list[Outcome]) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    lag = loop.time() - due
    error: str | None
    try:
        async with session.post(url, json=body_for(i, settings.max_tokens)) as rsp:
            raw = await rsp.read()
            error = classify(rsp.status, rsp.headers, raw)
    except TimeoutError:
        error = "timeout"
    except aiohttp.ClientError as exc:
        error = f"connection: {type(exc).__name__}"
    out.append(Outcome(due - start, lag, loop.time() - due, error))


async def _sample(run: SoakRun, pids: tuple[int, int], start: float, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            router, slm = pids
            run.samples.append(RssSample(loop.time() - start, rss_kib(router), rss_kib(slm), cpu_seconds(router),
                                         cpu_seconds(slm), os.getloadavg()[0]))  # fmt: skip
        except OSError:  # a process died: the run reports it
            return
        try:
            await asyncio.wait_for(stop.wait(), run.settings.sample_every_s)
            return
        except TimeoutError:
            continue


async def open_loop(router_url: str, pids: tuple[int, int], settings: SoakSettings) -> SoakRun:
    """Send `rate` requests per second for `seconds`, each at its due time, and wait for every answer."""
    run = SoakRun(settings)
    url = router_url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=0)  # open loop: the client never queues a request behind another
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = loop.time()
        sampler = asyncio.create_task(_sample(run, pids, start, stop))
        pending: set[asyncio.Task[None]] = set()
        for i in range(int(settings.seconds * settings.rate)):
            due = start + i / settings.rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(_one(session, url, i, due, start, settings, run.outcomes))
            pending.add(task)
            task.add_done_callback(pending.discard)
        run.send_seconds = loop.time() - start
        if pending:
            await asyncio.wait(pending)
        stop.set()
        await sampler
    return run


# --- the report (pure) -------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def growth_percent(samples: list[RssSample], attr: str, warmup: float) -> tuple[float, float, int, int]:
    """(end growth %, peak growth %, baseline KiB, end KiB) of one process's RSS after the warm-up."""
    after = [s for s in samples if s.t_s >= warmup]
    if not after:
        return float("nan"), float("nan"), 0, 0
    base, end = getattr(after[0], attr), getattr(after[-1], attr)
    peak = max(getattr(s, attr) for s in after)
    return 100.0 * (end - base) / base, 100.0 * (peak - base) / base, base, end


def summarise(run: SoakRun) -> dict[str, Any]:
    s = run.settings
    outcomes = run.outcomes
    errors = Counter(o.error for o in outcomes if o.error)
    minutes = []
    for m in range(int((s.seconds + 59) // 60)):
        bucket = [o for o in outcomes if m * 60 <= o.due_s < (m + 1) * 60]
        if not bucket:
            continue
        lat = [o.latency_s * 1000 for o in bucket]
        in_minute = [x for x in run.samples if m * 60 <= x.t_s < (m + 1) * 60 + s.sample_every_s / 2]
        last = in_minute[-1] if in_minute else None
        span = min(60.0, s.seconds - m * 60)
        minutes.append({
            "minute": m + 1, "requests": len(bucket), "errors": sum(1 for o in bucket if o.error),
            "rate_per_s": round(len(bucket) / span, 1),
            "p50_ms": round(percentile(lat, 0.50), 1), "p99_ms": round(percentile(lat, 0.99), 1),
            "max_ms": round(max(lat), 1),
            "router_rss_mib": round(last.router_kib / 1024, 1) if last else None,
            "slm_rss_mib": round(last.slm_kib / 1024, 1) if last else None,
            "load1": round(last.load1, 2) if last else None,
        })  # fmt: skip
    lat_all = [o.latency_s * 1000 for o in outcomes]
    latency = {"p50": round(percentile(lat_all, 0.5), 1), "p99": round(percentile(lat_all, 0.99), 1),
               "max": round(max(lat_all, default=0.0), 1)}  # fmt: skip
    rss = {}
    for name in ("router", "slm"):
        end, peak, base, end_kib = growth_percent(run.samples, f"{name}_kib", s.warmup)
        rss[name] = {"baseline_mib": round(base / 1024, 1), "end_mib": round(end_kib / 1024, 1),
                     "growth_percent": round(end, 2), "peak_growth_percent": round(peak, 2)}  # fmt: skip
    cpu = {}
    if len(run.samples) >= 2:
        first, last_sample = run.samples[0], run.samples[-1]
        wall = last_sample.t_s - first.t_s
        cpu = {"router_cores": round((last_sample.router_cpu_s - first.router_cpu_s) / wall, 2),
               "slm_cores": round((last_sample.slm_cpu_s - first.slm_cpu_s) / wall, 2)}  # fmt: skip
    return {
        "seconds": s.seconds, "target_rate_per_s": s.rate, "max_tokens": s.max_tokens, "warmup_s": s.warmup,
        "requests": len(outcomes), "errors": sum(errors.values()), "errors_by_kind": dict(errors),
        "achieved_rate_per_s": round(len(outcomes) / run.send_seconds, 2) if run.send_seconds else 0.0,
        "send_lag_ms_max": round(max((o.lag_s for o in outcomes), default=0.0) * 1000, 1),
        "latency_ms": latency,
        "rss": rss, "cpu": cpu, "per_minute": minutes,
        "router_alive_at_end": run.router_alive, "slm_alive_at_end": run.slm_alive,
    }  # fmt: skip


def document(report: dict[str, Any], command: str, load_before: tuple[float, float, float],
             elapsed_s: float) -> dict[str, Any]:  # fmt: skip
    """The JSON written by bench/reliability/soak.py (and by the test when TIERED_SOAK_REPORT names a file)."""
    return {
        "benchmark": "soak",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(elapsed_s, 1),
        **report,
    }


def run_soak(directory: Path, settings: SoakSettings) -> dict[str, Any]:
    """Model, SLM server, router, the load; returns `summarise`'s report (processes stopped afterwards)."""
    model = make_model(directory)
    slm = start_slm(model, directory / "cache")
    router: RouterProcess | None = None
    try:
        router = start_router(slm.base_url, directory)
        assert router.process is not None
        run = asyncio.run(open_loop(router.url, (router.process.pid, slm.process.pid), settings))
        run.router_alive = router.alive()
        run.slm_alive = slm.process.poll() is None
        return summarise(run)
    finally:
        if router is not None:
            router.stop()
        slm.process.terminate()
        try:
            slm.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            slm.process.kill()
