"""desired_replicas: the scaling rule, one behaviour per test."""

from __future__ import annotations

import pytest

from tiered_operator.autoscale.algorithm import (
    Recommendation,
    ScaleReason,
    ScalingPolicy,
    TierMetrics,
    desired_replicas,
    proportional_replicas,
)

POLICY = ScalingPolicy(
    min_replicas=1,
    max_replicas=10,
    slo_p95_ms=100.0,
    tolerance=0.1,
    scale_down_stabilization_seconds=300.0,
    max_scale_up_step=4,
    max_scale_down_step=1,
)


def p95(ms: float, in_flight: float = 3.0) -> TierMetrics:
    return TierMetrics(p95_ms=ms, in_flight=in_flight)


def test_p95_above_slo_scales_up_proportionally_at_once() -> None:
    decision = desired_replicas(2, p95(180.0), POLICY, now=1000.0)
    assert decision.desired == 4  # ceil(2 * 1.8)
    assert decision.reason is ScaleReason.SLO_BREACHED
    assert decision.changed


def test_scale_up_is_bounded_by_max_scale_up_step() -> None:
    decision = desired_replicas(2, p95(500.0), POLICY, now=1000.0)
    assert decision.desired == 6  # wants ceil(2 * 5) = 10, at most 2 + 4
    assert decision.reason is ScaleReason.SCALE_UP_LIMITED


def test_scale_up_is_clamped_to_max_replicas() -> None:
    decision = desired_replicas(9, p95(300.0), POLICY, now=1000.0)
    assert decision.desired == 10
    at_max = desired_replicas(10, p95(300.0), POLICY, now=1000.0)
    assert not at_max.changed
    assert at_max.reason is ScaleReason.AT_MAX_REPLICAS


@pytest.mark.parametrize("ms", [90.0, 100.0, 109.9])
def test_p95_inside_the_tolerance_band_changes_nothing(ms: float) -> None:
    decision = desired_replicas(3, p95(ms), POLICY, now=1000.0)
    assert not decision.changed
    assert decision.reason is ScaleReason.WITHIN_TOLERANCE


def test_just_outside_the_band_acts() -> None:
    assert desired_replicas(3, p95(111.0), POLICY, now=1000.0).desired == 4


def test_scale_down_waits_for_a_full_stabilization_window() -> None:
    history: tuple[Recommendation, ...] = ()
    decisions = []
    for i in range(0, 301, 30):  # p95 at 40 % of the SLO for 300 s, one evaluation every 30 s
        d = desired_replicas(4, p95(40.0), POLICY, now=1000.0 + i, history=history)
        history = d.history
        decisions.append(d)
    assert all(not d.changed for d in decisions[:-1])
    assert all(d.reason is ScaleReason.SCALE_DOWN_STABILIZING for d in decisions[:-1])
    assert decisions[-1].desired == 3  # window covered; one step (maxScaleDownStep=1)
    assert decisions[-1].reason is ScaleReason.OVER_PROVISIONED


def test_scale_down_uses_the_highest_recommendation_in_the_window() -> None:
    # 330 s ago a low reading, 200 s ago a reading that wanted to keep 4 replicas: no scale-down yet.
    history = (Recommendation(670.0, 2), Recommendation(800.0, 4))
    decision = desired_replicas(4, p95(40.0), POLICY, now=1000.0, history=history)
    assert not decision.changed
    assert decision.reason is ScaleReason.SCALE_DOWN_STABILIZING


def test_scale_down_steps_are_bounded() -> None:
    policy = ScalingPolicy(
        min_replicas=1, max_replicas=10, slo_p95_ms=100.0, scale_down_stabilization_seconds=60.0,
        max_scale_down_step=2,
    )
    history = (Recommendation(900.0, 1),)
    decision = desired_replicas(8, p95(10.0), policy, now=1000.0, history=history)
    assert decision.desired == 6


def test_after_a_restart_scale_down_waits_a_window_again() -> None:
    decision = desired_replicas(4, p95(40.0), POLICY, now=1000.0, history=())
    assert not decision.changed
    assert decision.reason is ScaleReason.SCALE_DOWN_STABILIZING


def test_zero_stabilization_window_scales_down_immediately() -> None:
    policy = ScalingPolicy(min_replicas=1, max_replicas=10, slo_p95_ms=100.0, scale_down_stabilization_seconds=0)
    assert desired_replicas(4, p95(40.0), policy, now=1000.0).desired == 3


def test_no_data_holds_replicas() -> None:
    decision = desired_replicas(3, TierMetrics(None, None), POLICY, now=1000.0)
    assert not decision.changed
    assert decision.reason is ScaleReason.METRICS_UNAVAILABLE


def test_no_data_keeps_the_history_unchanged() -> None:
    history = (Recommendation(900.0, 2),)
    decision = desired_replicas(3, TierMetrics(None, None), POLICY, now=1000.0, history=history)
    assert decision.history == history


def test_requests_in_flight_but_none_completed_holds() -> None:
    decision = desired_replicas(3, TierMetrics(None, 5.0), POLICY, now=1000.0)
    assert not decision.changed
    assert decision.reason is ScaleReason.INSUFFICIENT_DATA


def test_idle_tier_recommends_min_replicas_after_the_window() -> None:
    idle = TierMetrics(p95_ms=None, in_flight=0.0)
    history = (Recommendation(600.0, 1), Recommendation(900.0, 1))
    decision = desired_replicas(2, idle, POLICY, now=1000.0, history=history)
    assert decision.desired == 1
    assert decision.reason is ScaleReason.IDLE


def test_bounds_apply_even_without_metrics() -> None:
    policy = ScalingPolicy(min_replicas=3, max_replicas=5, slo_p95_ms=100.0)
    raised_min = desired_replicas(1, TierMetrics(None, None), policy, now=1000.0)
    assert raised_min.desired == 3
    assert raised_min.reason is ScaleReason.BELOW_MIN_REPLICAS
    lowered_max = desired_replicas(9, p95(100.0), policy, now=1000.0)
    assert lowered_max.desired == 5
    assert lowered_max.reason is ScaleReason.ABOVE_MAX_REPLICAS


def test_at_min_replicas_an_over_provisioned_reading_changes_nothing() -> None:
    decision = desired_replicas(1, p95(10.0), POLICY, now=1000.0)
    assert not decision.changed
    assert decision.reason is ScaleReason.AT_MIN_REPLICAS


def test_scale_from_zero_when_latency_is_reported() -> None:
    policy = ScalingPolicy(min_replicas=0, max_replicas=4, slo_p95_ms=100.0)
    assert desired_replicas(0, p95(250.0), policy, now=1000.0).desired == 3


def test_history_keeps_only_the_window_plus_one_older_entry() -> None:
    history = tuple(Recommendation(float(t), 3) for t in range(0, 1000, 30))
    decision = desired_replicas(3, p95(100.0), POLICY, now=1000.0, history=history)
    ages = sorted(1000.0 - r.at for r in decision.history)
    assert ages[-1] >= 300.0 and ages[-2] < 300.0
    assert len(decision.history) <= 12


def test_proportional_replicas_has_no_float_off_by_one() -> None:
    assert proportional_replicas(3, 200.0000000001, POLICY) == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 3, "max_replicas": 2},
        {"min_replicas": 1, "max_replicas": 2, "tolerance": 1.0},
        {"min_replicas": 1, "max_replicas": 2, "slo_p95_ms": 0.0},
        {"min_replicas": 1, "max_replicas": 2, "max_scale_up_step": 0},
    ],
)
def test_invalid_policies_are_rejected_with_the_field_named(kwargs: dict[str, float]) -> None:
    kwargs = {"slo_p95_ms": 100.0, **kwargs}
    with pytest.raises(ValueError):
        ScalingPolicy(**kwargs)  # type: ignore[arg-type]
