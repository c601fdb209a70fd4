"""Issue 7, first acceptance bullet, end to end: the real control plane, the real operator process, a real Prometheus
(Debian binary, 1 s scrape) scraping a real router process in front of a real SLM server process.

Load through the router drives the tier's p95 above its SLO; the Deployment must be scaled up within two
evaluation intervals of Prometheus showing the breach (found with the autoscaler's own PromQL). When the load
stops, scale-down must wait out the stabilization window. Then Prometheus is killed: replicas are held and the
tier's SLOMet condition turns Unknown with reason MetricsUnavailable.

The SLM server serves the real model (SmolLM2-135M-Instruct, Q4_1). The SLO (4 s) sits between what it answers
through the router with one client (8 tokens: a few hundred ms on a quiet 2-core box, about 1 s when the box is
busy) and with 16 concurrent clients (about 16 times that): the llama.cpp server runs one thread, so concurrent
requests queue and latency grows with load — the condition the autoscaler exists for.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from autoscale_e2e_support import (
    LoadDriver,
    PrometheusProcess,
    Served,
    router_config,
    start_router,
    start_slm,
    stop_process,
    wait_until,
)
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tiered_dev.models import SMOLLM2_135M_INSTRUCT
from tiered_operator import labels
from tiered_operator.autoscale import promql
from tiered_operator.autoscale.promql import SLOMetric, TierSelector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIER = "slm"
POLICY = "e2e-policy"
INTERVAL = 5  # evaluationIntervalSeconds (the CRD minimum)
STABILIZATION = 15  # scaleDownStabilizationSeconds
SLO_MS = 4000  # latencyP95Ms
WINDOW = "10s"  # slo.window
TOLERANCE = 0.10  # the CRD's default tolerance (10 %): SLOBreached means p95 > SLO * 1.1
LOAD_WORKERS = 16
MIN_REPLICAS, MAX_REPLICAS = 1, 4


# --- fixtures: every process the test starts is stopped by its fixture ----------------------------------------


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is missing: apt-get install -y prometheus (Debian bookworm)", pytrace=False)
    return found


@pytest.fixture
def slm(real_model: Path, tmp_path: Path) -> Iterator[Served]:
    server = start_slm(real_model, tmp_path / "slm.log")
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture
def router(slm: Served, namespace: str, tmp_path: Path) -> Iterator[Served]:
    # The router labels its series `tier="<InferenceTier name>"`; Prometheus adds `namespace` as a target label.
    config = router_config(policy=POLICY, namespace=namespace, tier=TIER, slm_url=f"http://{slm.address}")
    server = start_router(config, tmp_path)
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture
def prometheus(prometheus_binary: str, router: Served, namespace: str, tmp_path: Path) -> Iterator[PrometheusProcess]:
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    prom = PrometheusProcess(prometheus_binary, workdir, [router.address], namespace=namespace, scrape_interval="1s")
    try:
        prom.start()
        prom.wait_for('count(up{job="tiered-router"} == 1)', lambda v: v == 1, timeout=15)
        yield prom
    finally:
        prom.stop()


@pytest.fixture
def load(router: Served) -> Iterator[LoadDriver]:
    driver = LoadDriver(f"http://{router.address}/v1", max_tokens=8)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture
def apps(crds_installed: Any) -> Iterator[tuple[k8s.AppsV1Api, k8s.CustomObjectsApi]]:
    api_client = k8s_config.new_client_from_config(config_file=str(crds_installed.kubeconfig))
    try:
        yield k8s.AppsV1Api(api_client), k8s.CustomObjectsApi(api_client)
    finally:
        api_client.close()


@pytest.fixture
def start_operator(crds_installed: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """The real operator process, started as test_autoscale_operator.py starts it."""
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
            stop_process(process)


# --- the test --------------------------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%H:%M:%S.%f")[:-3]


def test_slo_breach_scales_up_load_stop_scales_down_after_stabilization_outage_holds(
    crds_installed: Any,
    namespace: str,
    slm: Served,
    router: Served,
    prometheus: PrometheusProcess,
    load: LoadDriver,
    apps: tuple[k8s.AppsV1Api, k8s.CustomObjectsApi],
    start_operator: Callable[[str], Path],
) -> None:
    apps_api, custom_api = apps
    p95_query = promql.p95_ms_query(TierSelector(namespace, TIER), SLOMetric.E2E, WINDOW)
    print(f"\nautoscaler PromQL: {p95_query}")
    operator_log: list[Path] = []

    def p95_ms() -> float | None:
        result = prometheus.query(p95_query)
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def replicas() -> int | None:
        try:
            scale = apps_api.read_namespaced_deployment_scale(TIER, namespace, _request_timeout=5)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int(scale.spec.replicas or 0) if scale.spec is not None else 0

    def slo_met() -> dict[str, Any]:
        tier: dict[str, Any] = custom_api.get_namespaced_custom_object(  # type: ignore[assignment]
            labels.GROUP, labels.VERSION, namespace, labels.PLURAL_INFERENCE_TIERS, TIER, _request_timeout=5)
        conditions = (tier.get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == "SLOMet"), {})

    def diagnose(what: str) -> str:
        parts = [what]
        for name, path in [("operator", p) for p in operator_log] + [("router", router.log), ("slm", slm.log),
                                                                      ("prometheus", prometheus.log)]:
            parts.append(f"--- {name} log ({path}) ---\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    # Idle traffic first (one client, 4 requests/s): the tier's series exist and p95 is well under the SLO.
    trickle = load.start(1, pause=0.25)
    idle_p95 = prometheus.wait_for(p95_query, math.isfinite, timeout=30)
    assert idle_p95 < SLO_MS, f"idle p95 {idle_p95:.1f} ms is already over the {SLO_MS} ms SLO: the box is too busy"

    tier = {
        "apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
        "metadata": {"name": TIER, "namespace": namespace},
        "spec": {
            "backend": "local",
            "local": {"runtime": "llamacpp", "model": {"source": f"pvc://models/{SMOLLM2_135M_INSTRUCT.filename}",
                                                        "sha256": SMOLLM2_135M_INSTRUCT.sha256}},
            "slo": {"latencyP95Ms": SLO_MS, "metric": "e2e", "window": WINDOW},
            "autoscaling": {"minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
                            "evaluationIntervalSeconds": INTERVAL, "scaleDownStabilizationSeconds": STABILIZATION},
        },
    }  # fmt: skip
    crds_installed.kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-f", "-", input=json.dumps(tier))
    operator_log.append(start_operator(prometheus.url))
    try:
        wait_until(lambda: slo_met().get("reason") == "WithinSLO" and replicas() == MIN_REPLICAS, 60,
                   "SLOMet=True WithinSLO with one replica under idle traffic", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(diagnose(str(exc))) from None

    # --- load: p95 over the SLO → scale-up within two evaluation intervals of Prometheus showing it -----------
    load_started = time.time()
    burst = load.start(LOAD_WORKERS)
    breach_seen: float | None = None
    breach_p95: float | None = None
    scaled_at: float | None = None
    scaled_to: int | None = None
    saw_breached_condition = False
    deadline = time.monotonic() + 60
    while scaled_at is None or breach_seen is None:
        assert time.monotonic() < deadline, diagnose(
            f"no breach/scale-up within 60 s of load (breach seen {breach_seen}, scaled {scaled_at})")
        value = p95_ms()
        now = time.time()
        if breach_seen is None and value is not None and value > SLO_MS * (1 + TOLERANCE):
            breach_seen, breach_p95 = now, value
        current = replicas()
        if scaled_at is None and current is not None and current > MIN_REPLICAS:
            scaled_at, scaled_to = time.time(), current
        time.sleep(0.2)
    up_delay = scaled_at - breach_seen
    assert up_delay <= 2 * INTERVAL, diagnose(
        f"scaled up {up_delay:.1f}s after Prometheus showed the breach (limit {2 * INTERVAL}s)")

    # Keep the load on a little longer so the tier climbs further (a later scale-down then has room to continue,
    # which makes "held during the outage" meaningful).
    peak = scaled_to or MIN_REPLICAS
    until = time.monotonic() + 2 * INTERVAL + 1
    while time.monotonic() < until and peak < MAX_REPLICAS:
        peak = max(peak, replicas() or 0)
        saw_breached_condition = saw_breached_condition or slo_met().get("reason") == "SLOBreached"
        time.sleep(0.5)
    saw_breached_condition = saw_breached_condition or slo_met().get("reason") == "SLOBreached"
    assert saw_breached_condition, diagnose("SLOMet never showed SLOBreached under load")
    load.stop(burst)
    load_stopped = time.time()
    burst_stats = load.stats(burst)
    assert not burst_stats.errors, f"requests failed under load: {burst_stats.errors[:5]}"

    # --- load stops: scale-down only after the stabilization window -------------------------------------------
    back_under: float | None = None
    scaled_down_at: float | None = None
    scaled_down_to = peak
    limit_s = 10 + STABILIZATION + 4 * INTERVAL
    deadline = time.monotonic() + limit_s  # the SLO window drains, then stabilization
    while scaled_down_at is None:
        assert time.monotonic() < deadline, diagnose(f"no scale-down within {limit_s}s of the load stopping")
        value = p95_ms()
        now = time.time()
        if back_under is None and value is not None and value <= SLO_MS:
            back_under = now
        current = replicas() or 0
        if current < peak:
            scaled_down_at = time.time()
            scaled_down_to = current
        peak = max(peak, current)
        time.sleep(0.2)
    down_delay = scaled_down_at - load_stopped
    assert down_delay >= STABILIZATION, diagnose(
        f"scaled down {down_delay:.1f}s after the load stopped, inside the {STABILIZATION}s stabilization window")
    assert back_under is not None, "Prometheus never showed p95 back under the SLO before the scale-down"
    assert scaled_down_at - back_under <= STABILIZATION + 2 * INTERVAL + 1, diagnose(
        f"scale-down came {scaled_down_at - back_under:.1f}s after p95 was back under the SLO")

    # --- Prometheus killed: replicas held, SLOMet Unknown / MetricsUnavailable ---------------------------------
    before = slo_met()
    assert before.get("reason") != "MetricsUnavailable", f"SLOMet was already {before} before the outage"
    held = replicas()
    prometheus.kill()
    killed_at = time.time()
    try:
        wait_until(lambda: slo_met().get("reason") == "MetricsUnavailable", 2 * INTERVAL + 5,
                   "SLOMet reason MetricsUnavailable after Prometheus was killed", interval=0.25)
    except AssertionError as exc:
        raise AssertionError(diagnose(str(exc))) from None
    unknown_at = time.time()
    condition = slo_met()
    assert condition["status"] == "Unknown", condition
    seen: list[int | None] = []
    watch_until = time.monotonic() + 2 * INTERVAL + 1  # at least two more evaluations without Prometheus
    while time.monotonic() < watch_until:
        seen.append(replicas())
        time.sleep(0.5)
    assert set(seen) == {held}, diagnose(f"replicas moved during the outage: held {held}, saw {seen}")
    trickle_stats = load.stats(trickle)
    assert not trickle_stats.errors, f"idle requests failed: {trickle_stats.errors[:5]}"

    burst_p95 = burst_stats.p95_ms()
    print(
        "\n=== autoscale e2e figures (UTC; delays in seconds) ===\n"
        f"SLO p95 {SLO_MS} ms over {WINDOW}, evaluation every {INTERVAL}s, stabilization {STABILIZATION}s, "
        f"tolerance {TOLERANCE:.0%}\n"
        f"idle p95 (Prometheus, 1 client): {idle_p95:.1f} ms; load {LOAD_WORKERS} clients from {_utc(load_started)}, "
        f"client-side p95 {burst_p95:.1f} ms over {len(burst_stats.latencies)} requests\n"
        f"breach seen in Prometheus at {_utc(breach_seen)} (p95 {breach_p95:.1f} ms)\n"
        f"scaled up at {_utc(scaled_at)} to {scaled_to} replicas: delay {up_delay:.1f}s "
        f"(limit {2 * INTERVAL}s); peak {peak} replicas\n"
        f"load stopped at {_utc(load_stopped)}; p95 back under SLO in Prometheus at "
        f"{_utc(back_under)} (+{back_under - load_stopped:.1f}s)\n"
        f"scaled down at {_utc(scaled_down_at)} to {scaled_down_to} replicas: {down_delay:.1f}s after the load "
        f"stopped, {scaled_down_at - back_under:.1f}s after p95 was back under (stabilization {STABILIZATION}s)\n"
        f"Prometheus killed at {_utc(killed_at)} with {held} replicas; SLOMet Unknown/MetricsUnavailable at "
        f"{_utc(unknown_at)} (+{unknown_at - killed_at:.1f}s); replicas held at {held} for "
        f"{2 * INTERVAL + 1}s after that ({len(seen)} reads)\n"
        f"idle client requests: {len(trickle_stats.latencies)}, none failed"
    )
