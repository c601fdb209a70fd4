"""Helpers for the autoscaling integration tests: a real Prometheus process (the Debian `prometheus` binary) on
loopback with its own config and TSDB, and a handle on the metrics process it scrapes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
NAMESPACE = "team-a"
"""What the scrape config attaches as the `namespace` target label (the pod's namespace in a cluster)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class MetricsTarget:
    """The stand-in router metrics process."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def post(self, path: str, **params: Any) -> None:
        url = f"http://{self.address}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5) as rsp:
            assert rsp.status == 200


@dataclass
class PrometheusProcess:
    """One Prometheus server with its own config and TSDB under a temp dir."""

    binary: str
    workdir: Path
    targets: list[str]
    namespace: str = NAMESPACE
    scrape_interval: str = "1s"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        config = self.workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML; no PyYAML needed in the test
                {
                    "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
                    "scrape_configs": [
                        {
                            "job_name": "tiered-router",
                            "static_configs": [{"targets": self.targets, "labels": {"namespace": self.namespace}}],
                        }
                    ],
                }
            )
        )
        self.log = self.workdir / "prometheus.log"
        self.process = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--web.enable-lifecycle",
            ],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, 30, f"Prometheus ready on {self.url} (log: {self.log})")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as rsp:
            result: list[dict[str, Any]] = json.load(rsp)["data"]["result"]
            return result

    def wait_for(self, promql: str, predicate: Callable[[float], bool], timeout: float = 20.0) -> float:
        """Poll until the query's single value satisfies `predicate`; returns that value."""
        seen: list[float] = []

        def check() -> bool:
            result = self.query(promql)
            if len(result) != 1:
                return False
            value = float(result[0]["value"][1])
            seen.append(value)
            return predicate(value)

        try:
            wait_until(check, timeout, f"{promql} (last values {seen[-3:]})", interval=0.5)
        except AssertionError:
            raise AssertionError(f"timed out waiting for {promql}; last values {seen[-3:]}") from None
        return seen[-1]

    def kill(self) -> None:
        """SIGKILL: an outage, not a graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def series_at_zero(target: MetricsTarget, prom: PrometheusProcess, tier: str = "slm") -> None:
    """Create the tier's series at 0 and wait for a scrape, as a router does when it loads its config.

    rate()/increase() need a sample before the first observation; a series born with its first burst
    already counted shows no increase (the router must pre-create its per-tier series for the same reason).
    """
    target.post("/touch", tier=tier)
    prom.wait_for(f'sum(tiered_router_request_latency_seconds_count{{tier="{tier}"}})', lambda v: v == 0.0)


@dataclass
class RouterProcess:
    """The real router serving on loopback; `.config` is the file it watches."""

    process: subprocess.Popen[bytes]
    port: int
    config: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"router exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=1) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def chat(self, text: str = "hello there", timeout: float = 10.0) -> tuple[int, dict[str, str]]:
        """POST one chat completion; returns (status, response headers)."""
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}).encode()
        request = urllib.request.Request(
            f"http://{self.address}/v1/chat/completions", data=body, method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as rsp:
                rsp.read()
                return rsp.status, dict(rsp.headers)
        except urllib.error.HTTPError as err:
            err.read()
            return err.code, dict(err.headers)
