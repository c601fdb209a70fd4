"""The query layer and the algorithm on real data: a real Prometheus scraping a real metrics process every 1 s."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import pytest
from prometheus_process import NAMESPACE, MetricsTarget, PrometheusProcess, series_at_zero

from tiered_operator.autoscale import promql
from tiered_operator.autoscale.algorithm import ScaleReason, ScalingPolicy, TierMetrics, desired_replicas
from tiered_operator.autoscale.budget import decide_budget
from tiered_operator.autoscale.prometheus import MetricsUnavailableError, PrometheusMetrics, PrometheusSettings
from tiered_operator.autoscale.promql import SLOMetric, TierSelector
from tiered_operator.autoscale.tierstatus import slo_condition

pytestmark = pytest.mark.integration

POLICY = ScalingPolicy(min_replicas=1, max_replicas=8, slo_p95_ms=100.0)


def client(prom: PrometheusProcess) -> PrometheusMetrics:
    return PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0))


def test_p95_above_the_slo_on_real_data_decides_a_scale_up(
    metrics_target: MetricsTarget, prometheus: PrometheusProcess
) -> None:
    tier = TierSelector(NAMESPACE, "breach")
    series_at_zero(metrics_target, prometheus, "breach")
    metrics_target.post("/observe", tier="breach", seconds=0.02, count=50)
    metrics_target.post("/observe", tier="breach", seconds=0.3, count=150)  # most requests slow: p95 in (200, 300]
    metrics_target.post("/inflight", tier="breach", value=6)
    prometheus.wait_for(promql.p95_ms_query(tier, SLOMetric.E2E, "1m"), lambda v: v > 200.0)

    measured = client(prometheus).tier_metrics(tier, SLOMetric.E2E, "1m")

    # histogram_quantile interpolates inside the router's (0.2, 0.3] bucket: 0.2 + 0.1 * (190 - 50) / 150 s.
    assert measured.p95_ms == pytest.approx(293.33, abs=0.5)
    assert measured.in_flight == 6.0
    decision = desired_replicas(2, measured, POLICY, now=time.time())
    assert decision.desired == 6  # ceil(2 * 2.93), exactly the maxScaleUpStep bound of 2 + 4
    assert decision.reason is ScaleReason.SLO_BREACHED
    assert slo_condition(measured, POLICY.slo_p95_ms).reason == "SLOBreached"


def test_ttft_slo_reads_the_ttft_histogram(metrics_target: MetricsTarget, prometheus: PrometheusProcess) -> None:
    tier = TierSelector(NAMESPACE, "streaming")
    series_at_zero(metrics_target, prometheus, "streaming")
    metrics_target.post("/observe", tier="streaming", metric="ttft", seconds=0.04, count=100)
    metrics_target.post("/observe", tier="streaming", metric="e2e", seconds=2.0, count=100)
    metrics_target.post("/inflight", tier="streaming", value=1)
    prometheus.wait_for(promql.p95_ms_query(tier, SLOMetric.TTFT, "1m"), lambda v: v > 0)

    ttft = client(prometheus).tier_metrics(tier, SLOMetric.TTFT, "1m")

    assert ttft.p95_ms is not None and 25.0 < ttft.p95_ms <= 50.0
    decision = desired_replicas(2, ttft, POLICY, now=time.time())
    assert decision.reason is ScaleReason.SCALE_DOWN_STABILIZING  # under the SLO: no scale-up


def test_a_tier_without_samples_holds_replicas(metrics_target: MetricsTarget, prometheus: PrometheusProcess) -> None:
    series_at_zero(metrics_target, prometheus, "other")
    metrics_target.post("/observe", tier="other", seconds=0.3, count=10)  # data exists, just not for this tier
    prometheus.wait_for(
        promql.p95_ms_query(TierSelector(NAMESPACE, "other"), SLOMetric.E2E, "1m"), lambda v: v > 0
    )

    measured = client(prometheus).tier_metrics(TierSelector(NAMESPACE, "absent"), SLOMetric.E2E, "1m")

    assert measured == TierMetrics(p95_ms=None, in_flight=None)
    decision = desired_replicas(3, measured, POLICY, now=time.time())
    assert not decision.changed
    assert decision.reason is ScaleReason.METRICS_UNAVAILABLE


def test_an_idle_tier_reads_as_idle_not_as_missing(
    metrics_target: MetricsTarget, prometheus: PrometheusProcess
) -> None:
    tier = TierSelector(NAMESPACE, "idle")
    series_at_zero(metrics_target, prometheus, "idle")
    metrics_target.post("/observe", tier="idle", seconds=0.05, count=20)
    metrics_target.post("/inflight", tier="idle", value=0)
    query = promql.p95_ms_query(tier, SLOMetric.E2E, "3s")
    prometheus.wait_for(query, lambda v: v > 0)
    # No more traffic: once the 3 s window holds no increase the quantile is NaN, which means "idle".
    prometheus.wait_for(query, lambda v: v != v, timeout=20)

    measured = client(prometheus).tier_metrics(tier, SLOMetric.E2E, "3s")

    assert measured == TierMetrics(p95_ms=None, in_flight=0.0)
    assert slo_condition(measured, 100.0).reason == "Idle"


def test_prometheus_killed_means_metrics_unavailable_within_seconds(
    metrics_target: MetricsTarget, start_prometheus: Callable[..., PrometheusProcess]
) -> None:
    prometheus = start_prometheus(NAMESPACE, [metrics_target.address])  # its own: this one gets killed
    tier = TierSelector(NAMESPACE, "outage")
    series_at_zero(metrics_target, prometheus, "outage")
    metrics_target.post("/observe", tier="outage", seconds=0.3, count=10)
    prometheus.wait_for(promql.p95_ms_query(tier, SLOMetric.E2E, "1m"), lambda v: v > 0)
    source = client(prometheus)
    prometheus.kill()

    started = time.monotonic()
    with pytest.raises(MetricsUnavailableError, match="did not answer") as caught:
        source.tier_metrics(tier, SLOMetric.E2E, "1m")
    elapsed = time.monotonic() - started

    assert elapsed < 5.0, f"an outage must be reported quickly, took {elapsed:.1f}s"
    held = desired_replicas(3, TierMetrics(None, None), POLICY, now=time.time())
    assert not held.changed
    condition = slo_condition(None, 100.0, str(caught.value))
    assert (condition.status, condition.reason) == ("Unknown", "MetricsUnavailable")


def test_month_to_date_spend_from_the_cost_counter(
    metrics_target: MetricsTarget, prometheus: PrometheusProcess
) -> None:
    metrics_target.post("/touch", tier="gpt")  # counters exist at 0 before any spend
    spend_q = promql.spend_query(NAMESPACE, "default", 3600, ["gpt"])
    prometheus.wait_for(spend_q, lambda v: v == 0.0)
    metrics_target.post("/cost", tier="gpt", usd=4.0, avoided=1.5)
    metrics_target.post("/cost", tier="gpt", usd=3.0, avoided=0.5)
    prometheus.wait_for(spend_q, lambda v: v > 0)
    # increase() extrapolates the observed slope towards the range ends, so a series a few seconds old
    # over-reads (always upwards: a budget errs towards exhausting early). Let it age ~12 scrapes.
    prometheus.wait_for(
        'count_over_time(tiered_router_cost_usd_total{tier="gpt"}[1h])', lambda v: v >= 12, timeout=30
    )

    source = client(prometheus)
    spend = source.query_scalar(spend_q)
    avoided = source.query_scalar(promql.avoided_query(NAMESPACE, "default", 3600))

    assert spend is not None and 7.0 <= spend <= 7.0 * 1.15
    assert avoided is not None and 2.0 <= avoided <= 2.0 * 1.15
    over = decide_budget(
        monthly_usd=Decimal("5"), when_exhausted="reject", spend_usd=spend, avoided_usd=avoided,
        metrics_ok=True, previously_exhausted=False,
    )
    assert over.exhausted and over.status == "False"
    under = decide_budget(
        monthly_usd=Decimal("50"), when_exhausted="reject", spend_usd=spend, avoided_usd=avoided,
        metrics_ok=True, previously_exhausted=True,
    )
    assert not under.exhausted
