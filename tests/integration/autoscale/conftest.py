"""Fixtures: a real Prometheus on loopback scraping a real metrics process every second.

  metrics_target     a stand-in router /metrics process (standin_router_metrics.py) the test drives over HTTP
  start_prometheus   start a Prometheus scraping it (1 s interval) with a given `namespace` target label
  prometheus         one such Prometheus for namespace "team-a"; `.kill()` simulates an outage
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_process import MetricsTarget, PrometheusProcess, RouterProcess, free_port, wait_until

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is missing: apt-get install -y prometheus (Debian bookworm)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def metrics_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsTarget]:
    """One stand-in metrics process per test module (tests use distinct tier names)."""
    port_file = tmp_path_factory.mktemp("metrics") / "metrics.port"
    process = subprocess.Popen([sys.executable, str(HERE / "standin_router_metrics.py"), str(port_file)])
    try:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", 15, "metrics target port")
        yield MetricsTarget(process, int(port_file.read_text()))
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[Callable[..., PrometheusProcess]]:
    """Start a Prometheus scraping `targets` every second, attaching `namespace=<ns>` like pod discovery does."""
    started: list[PrometheusProcess] = []

    def start(namespace: str, targets: list[str]) -> PrometheusProcess:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        prom = PrometheusProcess(prometheus_binary, workdir, targets, namespace=namespace)
        started.append(prom)
        prom.start()
        # The first scrape proves the targets are up before a test drives any traffic.
        prom.wait_for('count(up{job="tiered-router"} == 1)', lambda v: v == len(targets), timeout=15)
        return prom

    try:
        yield start
    finally:
        for prom in started:
            prom.stop()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, metrics_target: MetricsTarget, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusProcess]:
    """One Prometheus per test module scraping `metrics_target` for namespace "team-a" (never killed: a test that
    needs an outage starts its own with `start_prometheus`)."""
    prom = PrometheusProcess(prometheus_binary, tmp_path_factory.mktemp("prometheus"), [metrics_target.address])
    prom.start()
    try:
        prom.wait_for('count(up{job="tiered-router"} == 1)', lambda v: v == 1, timeout=15)
        yield prom
    finally:
        prom.stop()


def _start_with_port_file(argv: list[str], port_file: Path, what: str) -> tuple[subprocess.Popen[bytes], int]:
    process = subprocess.Popen(argv)
    try:
        wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", 15, what)
    except AssertionError:
        process.kill()
        raise
    return process, int(port_file.read_text())


@pytest.fixture
def start_upstream(tmp_path: Path) -> Iterator[Callable[[float], str]]:
    """Start stand-in OpenAI upstreams answering after `delay` seconds; returns each one's base URL (…/v1)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(delay: float) -> str:
        port_file = tmp_path / f"upstream-{len(processes)}.port"
        argv = [sys.executable, str(HERE / "standin_openai_upstream.py"), str(port_file), str(delay)]
        process, port = _start_with_port_file(argv, port_file, "upstream port")
        processes.append(process)
        return f"http://127.0.0.1:{port}/v1"

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[[str], RouterProcess]]:
    """Start the real router (`python -m tiered_router serve`) on a config text; rewrite `.config` to reload it."""
    routers: list[RouterProcess] = []

    def start(config_text: str) -> RouterProcess:
        config = tmp_path / f"router-{len(routers)}.json"
        config.write_text(config_text)
        port = free_port()
        log = (tmp_path / f"router-{len(routers)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "tiered_router", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--poll-seconds", "0.5"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        router = RouterProcess(process, port, config)
        routers.append(router)
        wait_until(router.ready, 30, f"router ready on port {port}")
        return router

    try:
        yield start
    finally:
        for router in routers:
            router.process.terminate()
            router.process.wait(timeout=10)
