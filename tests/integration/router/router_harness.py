"""Runs the real router and two stand-in upstreams on 127.0.0.1 in a background event loop.

A background loop (rather than the test's own) lets synchronous clients — the official `openai` sync client,
hypothesis-driven fuzzing — talk to the servers over real sockets without blocking them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
from router_standin_upstream import StandinUpstream

from tiered_router.server import build_service

T = TypeVar("T")


def router_config(slm: StandinUpstream, cloud: StandinUpstream, **overrides: Any) -> dict[str, Any]:
    """A policy with a local tier in front of a cloud tier; keyword routes make routing deterministic."""
    config: dict[str, Any] = {
        "schemaVersion": 1,
        "policy": "test-policy",
        "tiers": [
            {"name": "slm", "kind": "local", "baseURL": slm.base_url, "model": "tiny-q4",
             "pricing": {"inputPer1M": 0.05, "outputPer1M": 0.1},
             "timeouts": {"connectMs": 500, "firstByteMs": 3000, "totalMs": 10000}},
            {"name": "cloud", "kind": "cloud", "baseURL": cloud.base_url, "model": "frontier", "region": "eu-west-1",
             "pricing": {"inputPer1M": 2.5, "outputPer1M": 10.0},
             "timeouts": {"connectMs": 500, "firstByteMs": 3000, "totalMs": 10000}},
        ],
        "defaultTier": "cloud",
        "routes": [
            {"name": "smalltalk", "tier": "slm", "keywords": ["hello", "translate"], "examples": ["say hi to me"]},
            {"name": "analysis", "tier": "cloud", "keywords": ["analyse", "legal"],
             "examples": ["write a detailed legal analysis"]},
        ],
        "residency": {"namespaceClass": "restricted"},
        "fallback": {"retries": 1, "on": ["5xx", "timeout", "connect"]},
        "circuitBreaker": {"failureThreshold": 50, "openSeconds": 30},
    }  # fmt: skip
    config.update(overrides)
    return config


class Servers:
    """Router + upstreams in one background loop; `url` is the router's base URL (with /v1)."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.slm = StandinUpstream("slm")
        self.cloud = StandinUpstream("cloud")
        self.call(self.slm.start())
        self.call(self.cloud.start())
        self.config_path = tmp_path / "router.json"
        self.write_config(**overrides)
        self.service = build_service(self.config_path, poll_seconds=0.1)
        self.port = self.call(self.service.start("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=20)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def write_config(self, **overrides: Any) -> dict[str, Any]:
        config = router_config(self.slm, self.cloud, **overrides)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)  # atomic, like a ConfigMap symlink swap
        return config

    def apply_config(self, timeout: float = 10, **overrides: Any) -> dict[str, Any]:
        """Write a (valid) config and wait until the router serves it: no fixed sleep racing the reload poll."""
        config = self.write_config(**overrides)
        expected = hashlib.sha256(self.config_path.read_text().encode()).hexdigest()[:16]
        deadline = time.monotonic() + timeout
        while self.config_hash() != expected:
            if time.monotonic() > deadline:
                raise AssertionError("router did not apply the new config")
            time.sleep(0.02)
        return config

    def config_hash(self) -> str:
        state = self.service.holder.state
        assert state is not None
        return state.config_hash

    def wait_for_reload(self, old_hash: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.config_hash() != old_hash:
                return
            time.sleep(0.05)
        raise AssertionError("router did not reload its config")

    def metrics(self) -> str:
        return self.http.get("/metrics").text

    def chat(self, content: str, model: str = "auto", **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        return self.http.post("/v1/chat/completions", json=body)

    def close(self) -> None:
        self.http.close()
        self.call(self.service.stop(1.0))
        self.call(self.slm.stop())
        self.call(self.cloud.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the router process answers /readyz with 200; fails if it exits or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "router did not become ready"
        await asyncio.sleep(0.1)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total
