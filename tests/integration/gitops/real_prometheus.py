"""A real Prometheus (Debian's prometheus 2.42 binary) on a loopback port, scraping real metrics endpoints.

Used to check the Grafana dashboard's PromQL: Prometheus parses each expression (a syntax error comes back as
`bad_data`), evaluates it against series it really scraped, and answers through the same /api/v1/query endpoint
Grafana's Prometheus data source calls.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SCRAPE_INTERVAL_S = 1


@dataclass(frozen=True)
class ScrapeTarget:
    """One scrape job: `host:port` and the labels Kubernetes service discovery would attach (e.g. namespace)."""

    job: str
    address: str
    labels: dict[str, str]


@dataclass(frozen=True)
class QueryResult:
    """The answer of /api/v1/query: status 'success' or 'error', the error type/text, the result vector."""

    status: str
    error_type: str
    error: str
    result: list[dict[str, Any]]


def prometheus_binary() -> str:
    """The prometheus executable (Debian package `prometheus`)."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        raise RuntimeError("prometheus is not installed: apt-get install -y prometheus (Debian bookworm: 2.42)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(targets: list[ScrapeTarget]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [
            {
                "job_name": target.job,
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                # Keep the target's own labels (kube-state-metrics' namespace/tier), as its real scrape config does.
                "honor_labels": True,
                "static_configs": [{"targets": [target.address], "labels": target.labels}],
            }
            for target in targets
        ],
    }


def _get_json(url: str, timeout: float = 5) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:  # 400/422 carry the JSON error body
        return dict(json.load(exc))


@contextmanager
def running_prometheus(workdir: Path, targets: list[ScrapeTarget], start_timeout: float = 30) -> Iterator[str]:
    """Start Prometheus with its own config and TSDB under `workdir`; yield its base URL; stop it."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(_config(targets)))
    port = _free_port()
    log = (workdir / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus_binary(),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus not ready after {start_timeout}s")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def instant_query(base_url: str, expr: str, at: float | None = None) -> QueryResult:
    """GET /api/v1/query?query=expr (evaluated at unix time `at`, default now): Grafana's instant query."""
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    url = f"{base_url}/api/v1/query?{urllib.parse.urlencode(params)}"
    body = _get_json(url)
    data = body.get("data") or {}
    result = data.get("result", []) if isinstance(data, dict) else []
    if isinstance(data, dict) and data.get("resultType") == "scalar":
        result = [{"metric": {}, "value": data["result"]}]
    return QueryResult(
        status=str(body.get("status")),
        error_type=str(body.get("errorType", "")),
        error=str(body.get("error", "")),
        result=list(result),
    )


def wait_for_scrapes(base_url: str, job: str, samples: int, timeout: float = 20) -> None:
    """Block until Prometheus has scraped `job` successfully at least `samples` times (the target is up)."""
    deadline = time.monotonic() + timeout
    expr = f'count_over_time(up{{job="{job}"}}[1m]) and up{{job="{job}"}} == 1'
    while time.monotonic() < deadline:
        answer = instant_query(base_url, expr)
        if answer.result and float(answer.result[0]["value"][1]) >= samples:
            return
        time.sleep(0.25)
    raise TimeoutError(f"prometheus did not scrape job {job} {samples} times within {timeout}s")
