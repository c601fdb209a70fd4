"""From an InferenceTier to the autoscaler's inputs, and from a decision to the status it writes. Pure.

The autoscaler owns a slice of the tier's status: ``p95Ms``, ``lastScaleTime``, ``lastScaleReason`` and the
``SLOMet`` condition. It writes that slice with server-side apply under its own field manager, so the
operator's status writer (Ready, Available, ...) and the autoscaler never erase each other's fields.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.autoscale.algorithm import ScaleDecision, ScalingPolicy, TierMetrics
from tiered_operator.autoscale.promql import SLOMetric, TierSelector, parse_duration
from tiered_operator.reconcile.conditions import FALSE, TRUE, UNKNOWN, Condition, merge_conditions

CONDITION_SLO_MET = "SLOMet"
REASON_WITHIN_SLO = "WithinSLO"
REASON_SLO_BREACHED = "SLOBreached"
REASON_IDLE = "Idle"
REASON_METRICS_UNAVAILABLE = "MetricsUnavailable"
REASON_INSUFFICIENT_DATA = "InsufficientData"


@dataclass(frozen=True)
class AutoscaleTarget:
    """Everything one evaluation needs from the InferenceTier's spec."""

    namespace: str
    name: str
    deployment: str
    policy: ScalingPolicy
    selector: TierSelector
    metric: SLOMetric
    window: str
    interval_seconds: float


def autoscale_target(tier: InferenceTier, deployment: str | None = None) -> AutoscaleTarget | None:
    """The autoscaler's view of a tier, or None when the tier is not a local tier with autoscaling and an SLO."""
    spec = tier.spec
    if spec.backend != "local" or spec.autoscaling is None or spec.slo is None:
        return None
    auto, slo = spec.autoscaling, spec.slo
    namespace = tier.metadata.namespace or "default"
    name = tier.metadata.name or ""
    parse_duration(slo.window)  # the schema already checks it; this guards hand-built objects
    return AutoscaleTarget(
        namespace=namespace,
        name=name,
        deployment=deployment or name,
        policy=ScalingPolicy(
            min_replicas=auto.min_replicas,
            max_replicas=auto.max_replicas,
            slo_p95_ms=float(slo.latency_p95_ms),
            tolerance=auto.tolerance / 100.0,
            scale_down_stabilization_seconds=float(auto.scale_down_stabilization_seconds),
            max_scale_up_step=auto.max_scale_up_step,
            max_scale_down_step=auto.max_scale_down_step,
        ),
        selector=TierSelector(namespace=namespace, tier=name),
        metric=SLOMetric(slo.metric),
        window=slo.window,
        interval_seconds=float(auto.evaluation_interval_seconds),
    )


def slo_condition(metrics: TierMetrics | None, slo_p95_ms: float, error: str | None = None) -> Condition:
    """SLOMet from what Prometheus said; ``metrics`` None means Prometheus did not answer (``error`` says why)."""
    if metrics is None:
        return Condition(
            CONDITION_SLO_MET, UNKNOWN, REASON_METRICS_UNAVAILABLE,
            f"Prometheus did not answer, replicas held: {error or 'unknown error'}",
        )
    if metrics.p95_ms is None:
        if metrics.in_flight is None:
            return Condition(
                CONDITION_SLO_MET, UNKNOWN, REASON_METRICS_UNAVAILABLE,
                "no latency samples for this tier in Prometheus, replicas held "
                "(is the router scraped? see manifests/monitoring/)",
            )
        if metrics.in_flight > 0:
            return Condition(
                CONDITION_SLO_MET, UNKNOWN, REASON_INSUFFICIENT_DATA,
                f"{metrics.in_flight:g} requests in flight but none completed in the SLO window",
            )
        return Condition(CONDITION_SLO_MET, TRUE, REASON_IDLE, "no requests in the SLO window")
    text = f"p95 {metrics.p95_ms:.0f} ms, objective {slo_p95_ms:g} ms"
    if metrics.p95_ms <= slo_p95_ms:
        return Condition(CONDITION_SLO_MET, TRUE, REASON_WITHIN_SLO, text)
    return Condition(CONDITION_SLO_MET, FALSE, REASON_SLO_BREACHED, text)


def tier_status(
    existing: Mapping[str, Any] | None,
    *,
    condition: Condition,
    metrics: TierMetrics | None,
    decision: ScaleDecision | None,
    scaled: bool,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The autoscaler's slice of ``status`` (what it applies), given the stored status.

    ``lastScaleTime``/``lastScaleReason`` change only when ``scaled``; otherwise the stored values are carried
    (an apply that left them out would delete them). ``p95Ms`` is left out when unknown, so status never shows
    a stale latency as if it were current.
    """
    existing = existing or {}
    merged = merge_conditions(existing.get("conditions"), [condition], generation=generation, now=now)
    slo_met = next(c for c in merged if c["type"] == CONDITION_SLO_MET)
    status: dict[str, Any] = {"conditions": [slo_met]}
    if metrics is not None and metrics.p95_ms is not None and math.isfinite(metrics.p95_ms):
        status["p95Ms"] = round(metrics.p95_ms)
    if scaled and decision is not None:
        status["lastScaleTime"] = now
        status["lastScaleReason"] = f"{decision.reason.value}: {decision.current} -> {decision.desired} replicas"
    else:
        for key in ("lastScaleTime", "lastScaleReason"):
            if existing.get(key) is not None:
                status[key] = existing[key]
    return status


AUTOSCALER_STATUS_KEYS = frozenset({"p95Ms", "lastScaleTime", "lastScaleReason"})
"""Status fields of an InferenceTier the autoscaler owns (besides its SLOMet condition)."""
