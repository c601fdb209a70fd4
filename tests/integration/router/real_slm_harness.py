"""The router in front of a real SLM server process (SmolLM2-135M-Instruct) and a cloud stand-in, for tests that
need real generation on the local tier: capability routing, structured outputs through the router, spillover.

The router and the stand-in run in a background event loop (as in router_harness.Servers), so the official
synchronous `openai` client can call the router; the SLM server is `tiered-slm serve`, a separate process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import openai
from router_standin_upstream import StandinUpstream

from tiered_router.server import build_service

T = TypeVar("T")


class SlmProcess:
    """`tiered-slm serve` on a free port with the given model; stopped with SIGTERM (it drains)."""

    def __init__(self, model: Path, log: Path, *, ctx: int = 2048, threads: int = 1, queue_size: int = 16,
                 extra: tuple[str, ...] = (), wait_ready: bool = True) -> None:
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tiered_slm", "serve", "--model", str(model), "--model-id", "slm",
             "--host", "127.0.0.1", "--port", "0", "--ctx", str(ctx), "--threads", str(threads),
             "--queue-size", str(queue_size), "--cache-dir", str(log.parent / "slm-cache"), *extra],
            stdout=self._out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.url = self._wait_listening(wait_ready)

    def _wait_listening(self, ready: bool, timeout: float = 120) -> str:
        """The URL once the server listens (it answers 503 model_not_ready until its model is loaded), and with
        `ready` once the model is loaded and warmed up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            text = self.log.read_text()
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
            if found and (not ready or "model ready" in text):
                return found.group(1)
            time.sleep(0.1)
        raise AssertionError(f"SLM server not ready:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


class RealTiers:
    """Router (local tier = a real SLM process, cloud tier = a stand-in) in a background loop."""

    def __init__(self, tmp_path: Path, slm_url: str, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.slm_url = slm_url
        self.cloud = StandinUpstream("cloud")
        self.call(self.cloud.start())
        self.config_path = tmp_path / "router.json"
        self.config_path.write_text(json.dumps(self.router_config(**overrides)))
        self.service = build_service(self.config_path, poll_seconds=0.1)
        port = self.call(self.service.start("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{port}/v1"

    def router_config(self, **overrides: Any) -> dict[str, Any]:
        """A restricted namespace, a local tier with llama.cpp's capabilities, a keyword route to it, cloud as the
        default: what the operator renders for such InferenceTiers."""
        config: dict[str, Any] = {
            "schemaVersion": 1, "policy": "real", "namespace": "team-a",
            "tiers": [
                {"name": "slm", "kind": "local", "baseURL": f"{self.slm_url}/v1", "model": "slm",
                 "capabilities": {"tools": False, "logprobs": False, "contextLength": 2048},
                 "timeouts": {"connectMs": 1000, "firstByteMs": 60000, "totalMs": 120000}},
                {"name": "cloud", "kind": "cloud", "baseURL": self.cloud.base_url, "model": "frontier",
                 "region": "eu-west-1", "pricing": {"inputPer1M": 2.5, "outputPer1M": 10.0},
                 "timeouts": {"connectMs": 1000, "firstByteMs": 10000, "totalMs": 30000}},
            ],
            "defaultTier": "cloud",
            "routes": [{"name": "local-work", "tier": "slm", "keywords": ["hello", "extract", "summarise"],
                        "examples": ["say hi to me"]}],
            "residency": {"namespaceClass": "restricted"},
            "fallback": {"retries": 1, "on": ["5xx", "timeout", "connect"]},
        }  # fmt: skip
        config.update(overrides)
        return config

    def apply(self, config: dict[str, Any], timeout: float = 10) -> None:
        """Write a new config and wait until the router serves it."""
        text = json.dumps(config)
        self.config_path.with_suffix(".tmp").write_text(text)
        self.config_path.with_suffix(".tmp").replace(self.config_path)
        expected = hashlib.sha256(text.encode()).hexdigest()[:16]
        deadline = time.monotonic() + timeout
        while self.service.holder.state is None or self.service.holder.state.config_hash != expected:
            if time.monotonic() > deadline:
                raise AssertionError("router did not apply the new config")
            time.sleep(0.02)

    def client(self, timeout: float = 120) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=timeout)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/metrics", timeout=10) as response:
            return str(response.read().decode())

    def close(self) -> None:
        self.call(self.service.stop(1.0))
        self.call(self.cloud.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()
