"""Processes and load for the autoscaling end-to-end test: a real SLM server, a real router in front of it, and
a load driver speaking the official `openai` client to the router.

Everything is a real process on 127.0.0.1 with a port picked at runtime; the load driver runs its asyncio loop
in a background thread so the test itself stays synchronous while it polls Prometheus and the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

REPO = Path(__file__).resolve().parents[2]
AUTOSCALE_TESTS = REPO / "tests" / "integration" / "autoscale"
if str(AUTOSCALE_TESTS) not in sys.path:  # prometheus_process.py is a plain module of the integration tests
    sys.path.insert(0, str(AUTOSCALE_TESTS))

from prometheus_process import PrometheusProcess, free_port, wait_until  # noqa: E402

__all__ = [
    "LoadDriver",
    "PrometheusProcess",
    "Served",
    "free_port",
    "router_config",
    "start_router",
    "start_slm",
    "stop_process",
    "wait_until",
]

BIN = Path(sys.executable).parent


@dataclass
class Served:
    """A server process and where it listens."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _cli(name: str) -> str:
    """The console script next to this interpreter (the venv's), so the test runs what the image runs."""
    path = BIN / name
    if not path.exists():
        raise AssertionError(f"{path} is missing: install the project (pip install -e .)")
    return str(path)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as rsp:
            return bool(rsp.status == 200)
    except OSError:
        return False


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_slm(model: Path, log: Path) -> Served:
    """`tiered-slm serve --model M --port 0` (one llama.cpp thread on this 2-core box); ready after warm-up."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_cli("tiered-slm"), "serve", "--model", str(model), "--host", "127.0.0.1", "--port", "0",
             "--queue-size", "64", "--threads", "1", "--ctx", "1024", "--cache-dir", str(log.parent / "slm-cache")],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    port: list[int] = []

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"tiered-slm exited with {process.returncode}: {log.read_text()[-2000:]}")
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        if match:
            port[:] = [int(match.group(1))]
        return bool(port) and _http_ok(f"http://127.0.0.1:{port[0]}/readyz")

    try:
        wait_until(listening, 60, f"tiered-slm ready (log {log})", interval=0.2)
    except BaseException:
        stop_process(process)
        raise
    return Served(process, port[0], log)


def router_config(*, policy: str, namespace: str, tier: str, slm_url: str) -> dict[str, Any]:
    """One local tier and nothing else: every request goes to the SLM, no fallback to hide its latency."""
    return {
        "schemaVersion": 1,
        "policy": policy,
        "namespace": namespace,
        "tiers": [{"name": tier, "kind": "local", "baseURL": f"{slm_url}/v1", "model": tier,
                   "timeouts": {"connectMs": 1000, "firstByteMs": 60000, "totalMs": 120000}}],
        "defaultTier": tier,
        "fallback": {"retries": 0},
    }  # fmt: skip


def start_router(config: dict[str, Any], workdir: Path) -> Served:
    """`tiered-router serve --config FILE --host 127.0.0.1 --port P`; ready once /readyz says so."""
    config_path = workdir / "router.json"
    config_path.write_text(json.dumps(config))
    log = workdir / "router.log"
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_cli("tiered-router"), "serve", "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"tiered-router exited with {process.returncode}: {log.read_text()[-2000:]}")
        return _http_ok(f"http://127.0.0.1:{port}/readyz")

    try:
        wait_until(ready, 30, f"tiered-router ready on {port} (log {log})")
    except BaseException:
        stop_process(process)
        raise
    return Served(process, port, log)


@dataclass
class LoadStats:
    """What one group of workers saw (latencies in seconds)."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def p95_ms(self) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class LoadDriver:
    """Closed-loop chat-completion workers against the router (official `openai` client, no retries).

    ``start(n, pause)`` starts a group of ``n`` workers, each sending one request, waiting for its answer, then
    sleeping ``pause`` seconds; ``stop(group)`` ends that group after its requests in flight finish.
    """

    def __init__(self, base_url: str, max_tokens: int = 32) -> None:
        self.max_tokens = max_tokens
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="load-driver", daemon=True)
        self.thread.start()
        self.client = self._call(self._client(base_url))
        self._groups: dict[int, tuple[asyncio.Event, list[Future[None]], LoadStats]] = {}

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _client(base_url: str) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=90)

    async def _worker(self, stop: asyncio.Event, pause: float, stats: LoadStats) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hello there, how are you?"}],
                    max_tokens=self.max_tokens,
                )
                stats.latencies.append(time.monotonic() - started)
            except Exception as exc:  # recorded and asserted on by the test, never hidden
                stats.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)
            if pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    def start(self, workers: int, pause: float = 0.0) -> int:
        async def make_event() -> asyncio.Event:
            return asyncio.Event()

        stop: asyncio.Event = self._call(make_event())
        stats = LoadStats()
        futures = [asyncio.run_coroutine_threadsafe(self._worker(stop, pause, stats), self.loop)
                   for _ in range(workers)]
        group = len(self._groups)
        self._groups[group] = (stop, futures, stats)
        return group

    def stats(self, group: int) -> LoadStats:
        return self._groups[group][2]

    def stop(self, group: int, timeout: float = 120) -> None:
        stop, futures, _ = self._groups[group]
        self.loop.call_soon_threadsafe(stop.set)
        for future in futures:
            future.result(timeout)

    def close(self) -> None:
        for group in list(self._groups):
            stop, futures, _ = self._groups[group]
            self.loop.call_soon_threadsafe(stop.set)
            for future in futures:
                with contextlib.suppress(Exception):  # closing: the test has already judged the results
                    future.result(120)
        self._call(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

