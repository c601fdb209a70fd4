"""The real router in front of a stand-in upstream, scraped by a real Prometheus: the autoscaler's queries on the
router's own series, and the budget loop flipping the router to `whenExhausted` through the operator's builder."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from prometheus_process import NAMESPACE, PrometheusProcess, RouterProcess

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.autoscale import promql
from tiered_operator.autoscale.algorithm import ScaleReason, ScalingPolicy, desired_replicas
from tiered_operator.autoscale.prometheus import PrometheusMetrics, PrometheusSettings
from tiered_operator.autoscale.promql import SLOMetric, TierSelector
from tiered_operator.handlers.autoscale import AutoscalerKube, evaluate_budget
from tiered_operator.kube import Kube
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy
from tiered_operator.settings import OperatorSettings

pytestmark = pytest.mark.integration


def drive(router: RouterProcess, seconds: float, workers: int = 3) -> list[int]:
    """Send chat completions from `workers` threads for `seconds`; returns the status codes."""
    codes: list[int] = []
    deadline = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < deadline:
            codes.append(router.chat()[0])

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return codes


def test_router_latency_above_the_slo_decides_a_scale_up(
    start_upstream: Callable[[float], str],
    start_router: Callable[[str], RouterProcess],
    start_prometheus: Callable[..., PrometheusProcess],
) -> None:
    upstream = start_upstream(0.25)  # every completion takes 250 ms: 2.5x a 100 ms objective
    config = {
        "schemaVersion": 1, "policy": "default", "namespace": NAMESPACE, "defaultTier": "slm",
        "tiers": [{"name": "slm", "kind": "local", "baseURL": upstream, "model": "tiny"}],
    }
    router = start_router(json.dumps(config))
    prom = start_prometheus(NAMESPACE, [router.address])
    router.chat()  # the router creates its per-tier series on first use; let a scrape see them
    selector = TierSelector(NAMESPACE, "slm")
    prom.wait_for(f'sum({promql.ROUTER_METRICS.request_duration_seconds}_count{{tier="slm"}})', lambda v: v >= 1)

    codes = drive(router, 4.0)
    assert codes and set(codes) == {200}
    query = promql.p95_ms_query(selector, SLOMetric.E2E, "1m")
    prom.wait_for(query, lambda v: v > 200.0)
    prom.wait_for(promql.in_flight_query(selector), lambda v: v == 0.0)  # a scrape after the last response

    measured = PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0)).tier_metrics(
        selector, SLOMetric.E2E, "1m"
    )

    # At least the upstream's 250 ms; how much the router adds on top depends on how busy this machine is.
    assert measured.p95_ms is not None and 250.0 <= measured.p95_ms <= 1000.0
    assert measured.in_flight == 0.0  # the gauge exists and the load is over
    decision = desired_replicas(2, measured, ScalingPolicy(min_replicas=1, max_replicas=10, slo_p95_ms=100.0),
                                now=time.time())
    assert decision.reason in (ScaleReason.SLO_BREACHED, ScaleReason.SCALE_UP_LIMITED)
    assert decision.desired == 6  # ceil(2 * p95 / 100) >= 6, and at most 2 + maxScaleUpStep 4


def _tier(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_spent_budget_makes_the_router_reject_cloud_traffic(
    crds_installed: Any,
    namespace: str,
    start_upstream: Callable[[float], str],
    start_router: Callable[[str], RouterProcess],
    start_prometheus: Callable[..., PrometheusProcess],
) -> None:
    cluster = crds_installed
    cloud = start_upstream(0.0)
    objects = [
        _tier(namespace, "slm", {
            "backend": "local", "local": {"runtime": "llamacpp", "model": {"source": "pvc://models/tiny.gguf"}},
        }),
        _tier(namespace, "gpt", {
            "backend": "cloud",
            "cloud": {"provider": "openai-compatible", "baseURL": cloud, "model": "gpt-standin",
                      "apiKeySecretRef": {"name": "gpt-key"}},
            # 120 tokens a request at $1000 per 1M tokens: $0.12 a request.
            "pricing": {"inputUSDPerMillion": "1000", "outputUSDPerMillion": "1000"},
        }),
        {"apiVersion": labels.API_VERSION, "kind": labels.KIND_ROUTING_POLICY,
         "metadata": {"name": "hybrid", "namespace": namespace},
         "spec": {"tiers": ["gpt", "slm"], "defaultTier": "gpt",
                  "budget": {"monthlyUSD": "0.50", "whenExhausted": "reject"}}},
    ]
    cluster.kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-f", "-",
                    input="\n---\n".join(json.dumps(o) for o in objects))

    def stored(kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        return out

    def compile_config() -> str:
        """What the operator renders into the router ConfigMap, from the objects as stored."""
        tiers = {n: InferenceTier.from_k8s(stored("inferencetier", n)) for n in ("slm", "gpt")}
        compiled = compile_policy(RoutingPolicy.from_k8s(stored("routingpolicy", "hybrid")), tiers,
                                  NamespacePolicy.from_labels({}), OperatorSettings())
        assert compiled.text is not None, compiled.error
        return compiled.text

    router = start_router(compile_config())
    prom = start_prometheus(namespace, [router.address])
    assert router.chat()[0] == 200  # creates the router's cost series; let a scrape see them
    prom.wait_for(f'sum({promql.ROUTER_METRICS.cost_usd_total}{{namespace="{namespace}"}})', lambda v: v > 0)
    codes = drive(router, 2.0, workers=2)
    assert codes and set(codes) == {200}
    spend_q = promql.spend_query(namespace, "hybrid", 3600, ["gpt"])
    prom.wait_for(spend_q, lambda v: v > 0.5, timeout=20)

    api = kubernetes.config.new_client_from_config(config_file=str(cluster.operator_kubeconfig))
    kube = AutoscalerKube.sharing(Kube(api_client=api, reporting_instance="autoscale-test"))
    source = PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0))
    decision = evaluate_budget(stored("routingpolicy", "hybrid"), source, kube, datetime.datetime.now(datetime.UTC))

    assert decision.exhausted, decision.message
    assert float(stored("routingpolicy", "hybrid")["status"]["monthToDateUSD"]) > 0.5
    config_text = compile_config()
    assert json.loads(config_text)["budget"]["exhausted"] is True  # the operator's builder read BudgetOK=False
    router.config.write_text(config_text)  # what the kubelet does with the updated ConfigMap

    def refused() -> bool:
        status, headers = router.chat()
        return status == 429 and headers.get("x-tiered-reason") is not None

    deadline = time.monotonic() + 15
    while not refused():
        assert time.monotonic() < deadline, "the router kept sending cloud traffic after the budget was spent"
        time.sleep(0.5)
    assert router.chat()[0] == 429  # and it stays refused
