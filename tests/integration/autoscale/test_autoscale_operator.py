"""The whole loop in the real operator process (`python -m tiered_operator`, its own ServiceAccount identity): the
reconciler creates the tier's Deployment, the autoscale daemon reads a real Prometheus and scales it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_process import MetricsTarget, PrometheusProcess, series_at_zero, wait_until

from tiered_operator import labels
from tiered_operator.autoscale import promql
from tiered_operator.autoscale.promql import SLOMetric, TierSelector

pytestmark = pytest.mark.integration

INTERVAL = 5  # evaluationIntervalSeconds (the CRD minimum)
STABILIZATION = 15


@pytest.fixture
def start_operator(crds_installed: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(prometheus_url: str) -> Path:
        log = tmp_path / f"operator-{len(processes)}.log"
        env = {**os.environ, "TIERED_PROMETHEUS_URL": prometheus_url, "TIERED_RESYNC_SECONDS": "5"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with log.open("wb") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "tiered_operator", "--namespace", namespace, "--standalone",
                 "--kubeconfig", str(crds_installed.operator_kubeconfig)],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            ))
        return log

    try:
        yield start
    finally:
        # Let the operator remove its finalizer before it stops, so the namespace can go.
        crds_installed.kubectl("delete", "inferencetiers", "--all", "-n", namespace, "--wait=true",
                               "--timeout=30s", check=False)
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def test_operator_scales_on_a_breach_holds_on_an_outage(
    crds_installed: Any,
    namespace: str,
    metrics_target: MetricsTarget,
    start_prometheus: Callable[..., PrometheusProcess],
    start_operator: Callable[[str], Path],
) -> None:
    cluster = crds_installed
    prom = start_prometheus(namespace, [metrics_target.address])
    series_at_zero(metrics_target, prom)
    metrics_target.post("/inflight", tier="slm", value=0)
    tier = {
        "apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
        "metadata": {"name": "slm", "namespace": namespace},
        "spec": {
            "backend": "local",
            "local": {"runtime": "llamacpp", "model": {"source": "pvc://models/tiny.gguf"}},
            "slo": {"latencyP95Ms": 100, "metric": "e2e", "window": "10s"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 6, "evaluationIntervalSeconds": INTERVAL,
                            "scaleDownStabilizationSeconds": STABILIZATION, "maxScaleDownStep": 5},
        },
    }
    cluster.kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-f", "-", input=json.dumps(tier))
    log = start_operator(prom.url)

    def get(kind: str) -> dict[str, Any]:
        out = cluster.kubectl("get", kind, "slm", "-n", namespace, "-o", "json", "--ignore-not-found").stdout
        return json.loads(out) if out.strip() else {}

    def replicas() -> int | None:
        return (get("deployment").get("spec") or {}).get("replicas")

    def slo_met() -> dict[str, Any]:
        conditions = (get("inferencetier").get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "SLOMet"), {})

    def failure(what: str) -> str:
        return f"{what}\n--- operator log ---\n{log.read_text(errors='replace')[-12000:]}"

    try:
        wait_until(lambda: slo_met().get("reason") == "Idle", 60, "SLOMet=True Idle before any traffic")
    except AssertionError as exc:
        raise AssertionError(failure(str(exc))) from None
    assert replicas() == 1

    # Load: p95 = 293 ms against 100 ms. Keep it coming so the 10 s window stays breached.
    query = promql.p95_ms_query(TierSelector(namespace, "slm"), SLOMetric.E2E, "10s")
    metrics_target.post("/observe", tier="slm", seconds=0.3, count=100)
    prom.wait_for(query, lambda v: v > 100.0, timeout=20)
    breach_seen = time.monotonic()
    while replicas() == 1:
        metrics_target.post("/observe", tier="slm", seconds=0.3, count=20)
        assert time.monotonic() - breach_seen < 2 * INTERVAL + 2, failure("no scale-up within two intervals")
        time.sleep(0.25)
    scaled_after = time.monotonic() - breach_seen
    assert replicas() == 3  # ceil(1 * 295 / 100), within the step bound of 1 + 4
    print(f"scaled up {scaled_after:.1f}s after Prometheus showed the breach")

    # Load stops: the window empties (Idle), and scale-down waits out the stabilization window.
    prom.wait_for(query, lambda v: v != v, timeout=30)
    quiet_seen = time.monotonic()
    before = replicas()
    while replicas() == before:
        assert time.monotonic() - quiet_seen < STABILIZATION + 3 * INTERVAL, failure("no scale-down")
        time.sleep(0.25)
    scaled_down_after = time.monotonic() - quiet_seen
    assert scaled_down_after >= STABILIZATION - INTERVAL, f"scaled down after only {scaled_down_after:.1f}s"
    print(f"scaled down {scaled_down_after:.1f}s after the load stopped (stabilization {STABILIZATION}s)")

    # Prometheus dies: replicas held, SLOMet Unknown/MetricsUnavailable.
    held = replicas()
    prom.kill()
    wait_until(lambda: slo_met().get("reason") == "MetricsUnavailable", 2 * INTERVAL + 10, "SLOMet=Unknown")
    assert slo_met()["status"] == "Unknown"
    time.sleep(INTERVAL)
    assert replicas() == held
