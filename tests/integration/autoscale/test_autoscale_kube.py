"""The autoscaler's writes on a real API server, driven by a real Prometheus: scale subresource, status, Events,
and the budget condition the router-config builder reads. Runs as the operator's own identity (RBAC from
manifests/), so a missing permission fails here."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest
from prometheus_process import MetricsTarget, PrometheusProcess, series_at_zero

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.autoscale.algorithm import Recommendation
from tiered_operator.autoscale.prometheus import PrometheusMetrics, PrometheusSettings
from tiered_operator.autoscale.tierstatus import autoscale_target
from tiered_operator.handlers.autoscale import AutoscalerKube, evaluate_budget, evaluate_tier
from tiered_operator.kube import Kube
from tiered_operator.reconcile.router_config import budget_exhausted

pytestmark = pytest.mark.integration


def _apply(cluster: Any, manifest: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-f", "-", input=json.dumps(manifest))


def _get(cluster: Any, *what: str) -> dict[str, Any]:
    out = cluster.kubectl("get", *what, "-o", "json", "--show-managed-fields").stdout
    obj: dict[str, Any] = json.loads(out)
    return obj


def _deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    selector = {labels.LABEL_TIER: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": selector},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "slm", "image": "ghcr.io/tiered-dev/tiered-slm:0.1.0"}]},
            },
        },
    }


def _tier(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND_INFERENCE_TIER,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "backend": "local",
            "local": {"runtime": "llamacpp", "model": {"source": "pvc://models/tiny.gguf"}},
            "slo": {"latencyP95Ms": 100, "metric": "e2e", "window": "1m"},
            "autoscaling": {"minReplicas": 1, "maxReplicas": 8, "evaluationIntervalSeconds": 5},
        },
    }


@pytest.fixture
def autoscaler_kube(cluster: Any) -> AutoscalerKube:
    api = kubernetes.config.new_client_from_config(config_file=str(cluster.operator_kubeconfig))
    return AutoscalerKube.sharing(Kube(api_client=api, reporting_instance="autoscale-test"))


def test_breach_scales_the_deployment_and_an_outage_holds_it(
    crds_installed: Any,
    namespace: str,
    autoscaler_kube: AutoscalerKube,
    metrics_target: MetricsTarget,
    start_prometheus: Callable[..., PrometheusProcess],
) -> None:
    cluster = crds_installed
    _apply(cluster, _deployment(namespace, "slm", 2))
    _apply(cluster, _tier(namespace, "slm"))
    prom = start_prometheus(namespace, [metrics_target.address])
    series_at_zero(metrics_target, prom)
    metrics_target.post("/observe", tier="slm", seconds=0.02, count=50)
    metrics_target.post("/observe", tier="slm", seconds=0.3, count=150)
    metrics_target.post("/inflight", tier="slm", value=6)
    prom.wait_for(f'sum(rate(tiered_router_request_latency_seconds_count{{namespace="{namespace}"}}[1m]))',
                  lambda v: v > 0)
    source = PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0))

    tier_obj = _get(cluster, "inferencetier", "slm", "-n", namespace)
    target = autoscale_target(InferenceTier.from_k8s(tier_obj))
    assert target is not None
    decision = evaluate_tier(tier_obj, target, source, autoscaler_kube, (), time.time())

    assert decision is not None and (decision.current, decision.desired) == (2, 6)
    deployment = _get(cluster, "deployment", "slm", "-n", namespace)
    assert deployment["spec"]["replicas"] == 6
    owners = [m["manager"] for m in deployment["metadata"]["managedFields"] if "f:replicas" in json.dumps(m)]
    assert labels.AUTOSCALER_FIELD_MANAGER in owners
    status = _get(cluster, "inferencetier", "slm", "-n", namespace)["status"]
    assert status["p95Ms"] == 293
    assert status["lastScaleReason"] == "SLOBreached: 2 -> 6 replicas"
    slo_met = next(c for c in status["conditions"] if c["type"] == "SLOMet")
    assert (slo_met["status"], slo_met["reason"]) == ("False", "SLOBreached")
    events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)["items"]
    assert any(e["reason"] == "SLOBreached" and "from 2 to 6" in e["message"] for e in events)

    # Prometheus goes away: replicas held, SLOMet Unknown/MetricsUnavailable, no stale p95 shown.
    prom.kill()
    tier_obj = _get(cluster, "inferencetier", "slm", "-n", namespace)
    held = evaluate_tier(tier_obj, target, source, autoscaler_kube, decision.history, time.time())

    assert held is not None and not held.changed
    assert _get(cluster, "deployment", "slm", "-n", namespace)["spec"]["replicas"] == 6
    status = _get(cluster, "inferencetier", "slm", "-n", namespace)["status"]
    slo_met = next(c for c in status["conditions"] if c["type"] == "SLOMet")
    assert (slo_met["status"], slo_met["reason"]) == ("Unknown", "MetricsUnavailable")
    assert "p95Ms" not in status
    assert status["lastScaleReason"] == "SLOBreached: 2 -> 6 replicas"  # the last scale is still on record


def test_status_slice_leaves_other_writers_conditions_alone(
    crds_installed: Any, namespace: str, autoscaler_kube: AutoscalerKube
) -> None:
    cluster = crds_installed
    _apply(cluster, _deployment(namespace, "slm", 1))
    _apply(cluster, _tier(namespace, "slm"))
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": "", "lastTransitionTime": now}
    operator_kube = Kube(api_client=autoscaler_kube.kube.api)  # the reconciler's field manager
    operator_kube.apply_status(
        labels.PLURAL_INFERENCE_TIERS, labels.KIND_INFERENCE_TIER, namespace, "slm", {"conditions": [ready]}
    )
    tier_obj = _get(cluster, "inferencetier", "slm", "-n", namespace)
    target = autoscale_target(InferenceTier.from_k8s(tier_obj))
    assert target is not None

    # No Prometheus configured at all: the autoscaler holds and says why.
    decision = evaluate_tier(tier_obj, target, None, autoscaler_kube, (Recommendation(0.0, 1),), time.time())

    assert decision is not None and not decision.changed
    conditions = {c["type"]: c for c in _get(cluster, "inferencetier", "slm", "-n", namespace)["status"]["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["SLOMet"]["reason"] == "MetricsUnavailable"
    assert "TIERED_PROMETHEUS_URL" in conditions["SLOMet"]["message"]
    stored = _get(cluster, "inferencetier", "slm", "-n", namespace)
    managers = {m["manager"] for m in stored["metadata"]["managedFields"]}
    assert {labels.FIELD_MANAGER, labels.AUTOSCALER_FIELD_MANAGER} <= managers


def test_budget_exhaustion_is_what_the_router_config_builder_reads(
    crds_installed: Any,
    namespace: str,
    autoscaler_kube: AutoscalerKube,
    metrics_target: MetricsTarget,
    start_prometheus: Callable[..., PrometheusProcess],
) -> None:
    cluster = crds_installed
    policy: dict[str, Any] = {
        "apiVersion": labels.API_VERSION,
        "kind": labels.KIND_ROUTING_POLICY,
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {
            "tiers": ["slm", "gpt"],
            "defaultTier": "slm",
            "budget": {"monthlyUSD": "5", "whenExhausted": "reject"},
        },
    }
    _apply(cluster, policy)
    _apply(cluster, {
        "apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
        "metadata": {"name": "gpt", "namespace": namespace},
        "spec": {"backend": "cloud", "cloud": {"provider": "openai", "model": "gpt-4o-mini",
                                               "apiKeySecretRef": {"name": "gpt-key"}}},
    })  # only cloud tiers count against the budget; "slm" does not even exist
    prom = start_prometheus(namespace, [metrics_target.address])
    metrics_target.post("/touch", tier="gpt")
    spend_q = f'sum(tiered_router_cost_usd_total{{namespace="{namespace}",tier="gpt"}})'
    prom.wait_for(spend_q, lambda v: v == 0.0)
    metrics_target.post("/cost", tier="gpt", usd=6.0, avoided=2.0)
    prom.wait_for(spend_q, lambda v: v == 6.0)
    samples = f'count_over_time(tiered_router_cost_usd_total{{namespace="{namespace}",tier="gpt"}}[1h])'
    prom.wait_for(samples, lambda v: v >= 4)  # a few scrapes, so increase() does not over-read much
    source = PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0))

    decision = evaluate_budget(
        _get(cluster, "routingpolicy", "default", "-n", namespace), source, autoscaler_kube,
        datetime.datetime.now(datetime.UTC),
    )

    assert decision.exhausted
    stored = _get(cluster, "routingpolicy", "default", "-n", namespace)
    budget_ok = next(c for c in stored["status"]["conditions"] if c["type"] == "BudgetOK")
    assert (budget_ok["status"], budget_ok["reason"]) == ("False", "BudgetExhausted")
    assert float(stored["status"]["monthToDateUSD"]) >= 6.0
    assert budget_exhausted(RoutingPolicy.from_k8s(stored))  # the operator's builder sees exhaustion

    # Raising the budget flips it back on the next evaluation.
    policy["spec"]["budget"]["monthlyUSD"] = "100"
    _apply(cluster, policy)
    evaluate_budget(
        _get(cluster, "routingpolicy", "default", "-n", namespace), source, autoscaler_kube,
        datetime.datetime.now(datetime.UTC),
    )
    stored = _get(cluster, "routingpolicy", "default", "-n", namespace)
    assert not budget_exhausted(RoutingPolicy.from_k8s(stored))
