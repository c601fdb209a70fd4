"""status.localShare of a RoutingPolicy: the router's request counter, read through Prometheus by the budget loop."""

from __future__ import annotations

import pytest

from tiered_operator.autoscale import promql
from tiered_operator.autoscale.budget import local_share
from tiered_operator.reconcile.status import route_thresholds_status


@pytest.mark.parametrize(
    ("local", "total", "share"),
    [(73.0, 100.0, "0.73"), (0.0, 10.0, "0.00"), (10.0, 10.0, "1.00"), (None, 4.0, "0.00"), (2.0, 3.0, "0.67")],
)
def test_local_share_is_a_two_place_decimal(local: float | None, total: float, share: str) -> None:
    assert local_share(local, total) == share


@pytest.mark.parametrize("total", [None, 0.0])
def test_no_answered_request_leaves_local_share_unset(total: float | None) -> None:
    assert local_share(0.0, total) is None


def test_local_share_never_leaves_zero_to_one() -> None:
    assert local_share(12.0, 10.0) == "1.00"  # rate artefacts of increase() across a restart


def test_served_query_counts_successful_requests_of_the_policys_routers() -> None:
    q = promql.served_query("team-a", "hybrid", 3600, ["slm-b", "slm-a"])
    assert q == (
        'sum(increase(tiered_router_requests_total{namespace="team-a",outcome="success",tier=~"slm-a|slm-b"}'
        "[3600s]) * on (namespace, job, instance) group_left() max by (namespace, job, instance) "
        '(max_over_time(tiered_router_config_info{namespace="team-a",policy="hybrid"}[3600s])))'
    )
    everything = promql.served_query("team-a", "hybrid", 3600)
    assert 'outcome="success"' in everything and "tier=~" not in everything


def test_route_threshold_query_reads_the_policys_routers_series() -> None:
    assert promql.route_threshold_query("team-a", "hybrid") == (
        'max by (route, source) (tiered_router_route_threshold{namespace="team-a",policy="hybrid"})'
    )


def test_route_thresholds_status_is_one_decimal_string_per_route_sorted() -> None:
    samples = [
        ({"route": "weather", "source": "auto"}, 0.36071),
        ({"route": "banking", "source": "route"}, 0.9),
        ({"route": "odd", "source": "made-up"}, 0.1),  # not a source the router writes: ignored
        ({"source": "auto"}, 0.2),  # no route label: ignored
    ]
    assert route_thresholds_status(samples) == [
        {"route": "banking", "threshold": "0.9", "source": "route"},
        {"route": "weather", "threshold": "0.3607", "source": "auto"},
    ]
    assert route_thresholds_status([]) is None
