"""The scaling decision: a pure function from what Prometheus measured to a replica count.

Nothing here does I/O or reads a clock; the caller passes ``now`` and the recommendation history it kept
from earlier evaluations. That makes the algorithm replayable: feed it a recorded series and count the
changes (tests/unit/autoscale/test_replay.py).

The rule, in order (docs/autoscaling.md has the reasoning):

1. The spec's bounds win first: a replica count outside ``[minReplicas, maxReplicas]`` is brought inside,
   even without metrics (a bound is a spec decision, not a metric one).
2. No p95 and no in-flight figure → hold (``MetricsUnavailable``): never scale on missing data.
3. No completed request in the SLO window but zero requests in flight → the tier is idle; the raw
   recommendation is ``minReplicas``. Requests in flight but none completed → hold (``InsufficientData``).
4. Otherwise the raw recommendation is proportional, like the HorizontalPodAutoscaler:
   ``ceil(current * p95 / slo)``, but only when ``|p95 / slo - 1| > tolerance``; inside the band it is
   ``current``.
5. Scale-up happens at once, at most ``maxScaleUpStep`` replicas per evaluation.
6. Scale-down uses the highest recommendation seen during the stabilization window, and only once the kept
   history covers the whole window (after an operator restart the history is empty, so it waits a window);
   at most ``maxScaleDownStep`` replicas per evaluation.
7. The result is clamped to ``[minReplicas, maxReplicas]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum


class ScaleReason(StrEnum):
    """Why the decision came out as it did; CamelCase, used as status reason and Event reason."""

    SLO_BREACHED = "SLOBreached"
    SCALE_UP_LIMITED = "ScaleUpLimited"
    WITHIN_TOLERANCE = "WithinTolerance"
    OVER_PROVISIONED = "OverProvisioned"
    IDLE = "Idle"
    SCALE_DOWN_STABILIZING = "ScaleDownStabilizing"
    BELOW_MIN_REPLICAS = "BelowMinReplicas"
    ABOVE_MAX_REPLICAS = "AboveMaxReplicas"
    AT_MAX_REPLICAS = "AtMaxReplicas"
    AT_MIN_REPLICAS = "AtMinReplicas"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    INSUFFICIENT_DATA = "InsufficientData"


@dataclass(frozen=True)
class ScalingPolicy:
    """The knobs of one tier's autoscaler (from ``spec.local.autoscaling`` and ``spec.slo``)."""

    min_replicas: int
    max_replicas: int
    slo_p95_ms: float
    tolerance: float = 0.1
    """Relative band around the SLO in which nothing changes: 0.1 means p95 within ±10 % of the SLO."""
    scale_down_stabilization_seconds: float = 300.0
    max_scale_up_step: int = 4
    max_scale_down_step: int = 1

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError(
                f"need 0 <= minReplicas <= maxReplicas and maxReplicas >= 1, "
                f"got min={self.min_replicas} max={self.max_replicas}"
            )
        if self.slo_p95_ms <= 0:
            raise ValueError(f"slo latencyP95Ms must be > 0, got {self.slo_p95_ms}")
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if self.scale_down_stabilization_seconds < 0:
            raise ValueError("scaleDownStabilizationSeconds must be >= 0")
        if self.max_scale_up_step < 1 or self.max_scale_down_step < 1:
            raise ValueError("maxScaleUpStep and maxScaleDownStep must be >= 1")


@dataclass(frozen=True)
class TierMetrics:
    """What Prometheus said about one tier. ``None`` means "no sample", not zero.

    ``p95_ms`` is None when no request completed in the SLO window (the histogram's rate is 0/0) or the
    series does not exist; ``in_flight`` is None when its series does not exist.
    """

    p95_ms: float | None
    in_flight: float | None

    @property
    def missing(self) -> bool:
        """True when neither figure exists: Prometheus has nothing about this tier."""
        return self.p95_ms is None and self.in_flight is None


@dataclass(frozen=True)
class Recommendation:
    """One evaluation's raw (unstabilized, unclamped-by-step) replica recommendation."""

    at: float
    replicas: int


@dataclass(frozen=True)
class ScaleDecision:
    """The outcome: the replica count to have, why, and the history to pass to the next evaluation."""

    current: int
    desired: int
    reason: ScaleReason
    message: str
    history: tuple[Recommendation, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """True when the Deployment must be scaled."""
        return self.desired != self.current


def _clamp(value: int, policy: ScalingPolicy) -> int:
    return max(policy.min_replicas, min(policy.max_replicas, value))


def proportional_replicas(current: int, p95_ms: float, policy: ScalingPolicy) -> int:
    """HPA-style raw recommendation: ``ceil(current * p95 / slo)`` outside the tolerance band.

    A tier at zero replicas that still reports latency is treated as one replica, so that scale-from-zero
    is possible when min is 0.
    """
    ratio = p95_ms / policy.slo_p95_ms
    if abs(ratio - 1.0) <= policy.tolerance:
        return current
    base = max(current, 1)
    # Guard against float noise turning an exact product (3 * 1.0000000001) into one replica more.
    return max(0, math.ceil(base * ratio - 1e-9))


def scale_up_limit(current: int, policy: ScalingPolicy) -> int:
    """The most replicas one evaluation may scale up to."""
    return current + policy.max_scale_up_step


def _prune(history: tuple[Recommendation, ...], now: float, window: float) -> tuple[Recommendation, ...]:
    """Keep the recommendations inside the window plus the newest one older than it.

    The one just outside proves the history covers the whole window (see ``_covers``).
    """
    inside = tuple(r for r in history if now - r.at < window)
    older = [r for r in history if now - r.at >= window]
    return ((max(older, key=lambda r: r.at),) if older else ()) + inside


def _covers(history: tuple[Recommendation, ...], now: float, window: float) -> bool:
    return any(now - r.at >= window for r in history)


def _bounds_reason(current: int, policy: ScalingPolicy) -> ScaleReason | None:
    if current < policy.min_replicas:
        return ScaleReason.BELOW_MIN_REPLICAS
    if current > policy.max_replicas:
        return ScaleReason.ABOVE_MAX_REPLICAS
    return None


def desired_replicas(
    current: int,
    metrics: TierMetrics,
    policy: ScalingPolicy,
    now: float,
    history: tuple[Recommendation, ...] = (),
) -> ScaleDecision:
    """Decide the replica count for one evaluation (see the module docstring for the rule).

    ``history`` is the previous decision's ``history``; the caller keeps it between evaluations.
    """
    slo = policy.slo_p95_ms
    window = policy.scale_down_stabilization_seconds
    bounds = f"[{policy.min_replicas}, {policy.max_replicas}]"

    if metrics.p95_ms is None and (metrics.in_flight is None or metrics.in_flight > 0):
        # Missing data: hold. The spec's bounds still apply; the history gets no new entry.
        if metrics.in_flight is None:
            reason = ScaleReason.METRICS_UNAVAILABLE
            detail = "no latency or in-flight samples for this tier"
        else:
            reason = ScaleReason.INSUFFICIENT_DATA
            detail = f"{metrics.in_flight:g} requests in flight but none completed in the SLO window"
        bounded = _clamp(current, policy)
        if bounded != current:
            out_of_bounds = _bounds_reason(current, policy)
            assert out_of_bounds is not None
            return ScaleDecision(
                current, bounded, out_of_bounds,
                f"{detail}; {current} replicas is outside {bounds}, moving to {bounded}", history,
            )
        return ScaleDecision(current, current, reason, f"{detail}; holding {current} replicas", history)

    if metrics.p95_ms is None:
        raw, reason = policy.min_replicas, ScaleReason.IDLE
        detail = "no request completed in the SLO window and none in flight"
    else:
        raw = proportional_replicas(current, metrics.p95_ms, policy)
        ratio = metrics.p95_ms / slo
        detail = (
            f"p95 {metrics.p95_ms:.1f} ms vs SLO {slo:g} ms "
            f"(ratio {ratio:.2f}, tolerance {policy.tolerance:g})"
        )
        reason = (
            ScaleReason.SLO_BREACHED if ratio > 1 + policy.tolerance
            else ScaleReason.OVER_PROVISIONED if ratio < 1 - policy.tolerance
            else ScaleReason.WITHIN_TOLERANCE
        )
    history = _prune((*history, Recommendation(now, raw)), now, window)

    target = current
    if raw > current:
        limit = scale_up_limit(current, policy)
        target = min(raw, limit)
        if raw > limit and limit < policy.max_replicas:
            reason = ScaleReason.SCALE_UP_LIMITED
            detail += f"; wants {raw}, at most {limit} this evaluation"
    elif reason in (ScaleReason.OVER_PROVISIONED, ScaleReason.IDLE) and current <= policy.min_replicas:
        reason = ScaleReason.AT_MIN_REPLICAS
    elif raw < current:
        if _covers(history, now, window):
            stabilized = max([raw, *(r.replicas for r in history if now - r.at < window)])
            target = min(current, max(stabilized, current - policy.max_scale_down_step))
        if target == current:
            reason = ScaleReason.SCALE_DOWN_STABILIZING
            detail += f"; would scale down to {raw}, waiting out the {window:g}s stabilization window"

    final = _clamp(target, policy)
    if final != target:
        out_of_bounds = _bounds_reason(current, policy)
        if out_of_bounds is not None:
            reason = out_of_bounds
        elif final == current == policy.max_replicas:
            reason = ScaleReason.AT_MAX_REPLICAS
        detail += f"; clamped to {bounds}"
    if final != current:
        detail += f"; scaling {current} -> {final}"
    return ScaleDecision(current, final, reason, detail, history)
