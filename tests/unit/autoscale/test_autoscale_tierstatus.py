"""From an InferenceTier to the autoscaler's inputs, and from a decision to the status slice it applies."""

from __future__ import annotations

from typing import Any

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.autoscale.algorithm import ScaleDecision, ScaleReason, TierMetrics
from tiered_operator.autoscale.promql import SLOMetric
from tiered_operator.autoscale.tierstatus import AUTOSCALER_STATUS_KEYS, autoscale_target, slo_condition, tier_status
from tiered_operator.reconcile.conditions import status_differs


def tier(**spec: Any) -> InferenceTier:
    body = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": "slm", "namespace": "team-a", "generation": 3},
        "spec": {
            "backend": "local",
            "local": {"runtime": "llamacpp", "model": {"source": "pvc://models/tiny.gguf"}},
            "slo": {"latencyP95Ms": 120, "metric": "ttft", "window": "2m"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "tolerance": 15},
            **spec,
        },
    }
    return InferenceTier.from_k8s(body)


def test_target_maps_the_spec_with_tolerance_as_a_fraction() -> None:
    target = autoscale_target(tier())
    assert target is not None
    assert (target.namespace, target.name, target.deployment) == ("team-a", "slm", "slm")
    assert target.policy.tolerance == 0.15
    assert (target.policy.min_replicas, target.policy.max_replicas) == (2, 6)
    assert target.policy.slo_p95_ms == 120.0
    assert target.metric is SLOMetric.TTFT and target.window == "2m"
    assert target.interval_seconds == 30.0  # the CRD default
    assert target.policy.scale_down_stabilization_seconds == 300.0


def test_tiers_without_autoscaling_have_no_target() -> None:
    assert autoscale_target(tier(autoscaling=None)) is None


def test_slo_condition_follows_the_measurement() -> None:
    assert slo_condition(TierMetrics(100.0, 2.0), 120.0).status == "True"
    breached = slo_condition(TierMetrics(150.0, 2.0), 120.0)
    assert (breached.status, breached.reason) == ("False", "SLOBreached")
    idle = slo_condition(TierMetrics(None, 0.0), 120.0)
    assert (idle.status, idle.reason) == ("True", "Idle")
    no_series = slo_condition(TierMetrics(None, None), 120.0)
    assert (no_series.status, no_series.reason) == ("Unknown", "MetricsUnavailable")
    down = slo_condition(None, 120.0, "connection refused")
    assert (down.status, down.reason) == ("Unknown", "MetricsUnavailable")
    assert "connection refused" in down.message


def test_status_slice_records_a_scale() -> None:
    decision = ScaleDecision(2, 4, ScaleReason.SLO_BREACHED, "p95 high")
    status = tier_status(
        {"conditions": [{"type": "Ready", "status": "True"}]},
        condition=slo_condition(TierMetrics(250.4, 5.0), 120.0),
        metrics=TierMetrics(250.4, 5.0),
        decision=decision,
        scaled=True,
        generation=3,
        now="2026-11-28T14:00:00Z",
    )
    assert status["p95Ms"] == 250
    assert status["lastScaleTime"] == "2026-11-28T14:00:00Z"
    assert status["lastScaleReason"] == "SLOBreached: 2 -> 4 replicas"
    assert [c["type"] for c in status["conditions"]] == ["SLOMet"]  # only the autoscaler's condition
    assert status["conditions"][0]["observedGeneration"] == 3


def test_a_hold_keeps_the_last_scale_and_the_transition_time() -> None:
    existing = {
        "p95Ms": 90,
        "lastScaleTime": "2026-11-28T13:00:00Z",
        "lastScaleReason": "SLOBreached: 1 -> 2 replicas",
        "conditions": [
            {"type": "SLOMet", "status": "True", "reason": "WithinSLO", "message": "old",
             "lastTransitionTime": "2026-11-28T13:05:00Z", "observedGeneration": 3},
        ],
    }
    status = tier_status(
        existing, condition=slo_condition(TierMetrics(95.0, 1.0), 120.0), metrics=TierMetrics(95.0, 1.0),
        decision=ScaleDecision(2, 2, ScaleReason.WITHIN_TOLERANCE, "ok"), scaled=False, generation=3,
        now="2026-11-28T14:00:00Z",
    )
    assert status["lastScaleTime"] == "2026-11-28T13:00:00Z"
    assert status["conditions"][0]["lastTransitionTime"] == "2026-11-28T13:05:00Z"
    assert status_differs(existing, status, AUTOSCALER_STATUS_KEYS)  # p95 and message moved
    assert not status_differs({**existing, **status}, status, AUTOSCALER_STATUS_KEYS)  # steady state: nothing to write


def test_unknown_latency_removes_p95_rather_than_showing_a_stale_one() -> None:
    existing = {"p95Ms": 90}
    status = tier_status(
        existing, condition=slo_condition(None, 120.0, "down"), metrics=None, decision=None, scaled=False,
        generation=1, now="2026-11-28T14:00:00Z",
    )
    assert "p95Ms" not in status
    assert status_differs(existing, status, AUTOSCALER_STATUS_KEYS)
