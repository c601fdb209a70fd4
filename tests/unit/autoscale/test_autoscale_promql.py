"""PromQL builders: the exact text the autoscaler sends (the same text docs/autoscaling.md shows)."""

from __future__ import annotations

import pytest

from tiered_operator.autoscale import promql
from tiered_operator.autoscale.promql import SLOMetric, TierSelector

TIER = TierSelector(namespace="team-a", tier="slm-small")


def test_e2e_p95_query_reads_the_request_duration_histogram() -> None:
    assert promql.p95_ms_query(TIER, SLOMetric.E2E, "5m") == (
        "1000 * histogram_quantile(0.95, sum by (le) (rate("
        'tiered_router_request_latency_seconds_bucket{namespace="team-a",tier="slm-small"}[5m])))'
    )


def test_ttft_p95_query_reads_the_ttft_histogram() -> None:
    query = promql.p95_ms_query(TIER, SLOMetric.TTFT, "1h30m")
    assert "tiered_router_ttft_seconds_bucket{" in query
    assert query.endswith("[1h30m])))")


def test_in_flight_query_sums_every_router() -> None:
    assert promql.in_flight_query(TIER) == (
        'sum(tiered_router_in_flight_requests{namespace="team-a",tier="slm-small"})'
    )


def test_spend_query_counts_the_cloud_tiers_of_the_routers_serving_the_policy() -> None:
    assert promql.spend_query("team-a", "default", 86400.7, ["gpt", "azure-eu"]) == (
        'sum(increase(tiered_router_cost_usd_total{namespace="team-a",tier=~"azure-eu|gpt"}[86400s]) '
        "* on (namespace, job, instance) group_left() "
        "max by (namespace, job, instance) ("
        'max_over_time(tiered_router_config_info{namespace="team-a",policy="default"}[86400s])))'
    )


def test_avoided_query_counts_every_tier() -> None:
    query = promql.avoided_query("team-a", "default", 0.2)
    assert 'tiered_router_avoided_cost_usd_total{namespace="team-a"}[1s]' in query


@pytest.mark.parametrize("tiers", [[], ["gpt|.*"], ["Upper"]])
def test_spend_query_refuses_tier_names_that_are_not_dns_labels(tiers: list[str]) -> None:
    with pytest.raises(ValueError, match="DNS labels"):
        promql.spend_query("team-a", "default", 60, tiers)


def test_label_values_cannot_break_out_of_the_matcher() -> None:
    hostile = TierSelector(namespace='a"} or vector(1) #', tier="t\\x")
    query = promql.in_flight_query(hostile)
    assert 'namespace="a\\"} or vector(1) #"' in query
    assert 'tier="t\\\\x"' in query


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert promql.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "5m]", "1.5h"])
def test_bad_windows_are_rejected_before_any_query(text: str) -> None:
    with pytest.raises(ValueError, match="Prometheus duration"):
        promql.p95_ms_query(TIER, SLOMetric.E2E, text)
