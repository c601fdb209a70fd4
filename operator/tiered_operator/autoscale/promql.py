"""PromQL builders: the exact queries the autoscaler and the budget loop send (shown in docs/autoscaling.md).

Pure string functions, so the text in the docs, the debug log and the tests is the same text. Metric and label
names come from the router's metrics module (one source of truth); label values are escaped, durations are
validated, so nothing a user writes in a spec can change the shape of a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from tiered_router import metrics as router_metrics

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


class SLOMetric(StrEnum):
    """Which latency the SLO is about: the whole request (e2e) or the time to the first token (ttft)."""

    E2E = "e2e"
    TTFT = "ttft"


@dataclass(frozen=True)
class RouterMetricNames:
    """The router's series the queries read (names from tiered_router.metrics, the one source of truth).

    The router labels its series by ``tier`` only; Prometheus adds the target labels (``namespace``, ``job``,
    ``instance``). Which policy a router serves is in its ``config_info{policy, hash}`` info gauge.
    """

    request_duration_seconds: str = router_metrics.REQUEST_LATENCY
    ttft_seconds: str = router_metrics.TTFT
    in_flight_requests: str = router_metrics.IN_FLIGHT
    cost_usd_total: str = f"{router_metrics.COST_USD}_total"
    avoided_cost_usd_total: str = f"{router_metrics.AVOIDED_USD}_total"
    config_info: str = router_metrics.CONFIG_INFO
    requests_total: str = f"{router_metrics.REQUESTS}_total"
    route_threshold: str = router_metrics.ROUTE_THRESHOLD
    label_tier: str = "tier"
    label_policy: str = "policy"


ROUTER_METRICS = RouterMetricNames()


@dataclass(frozen=True)
class TierSelector:
    """Which series belong to one tier: its namespace and name.

    ``namespace_label`` is the label Prometheus attaches for the scraped pod's namespace (``namespace`` with
    the ServiceMonitor/PodMonitor and the scrape config in manifests/monitoring/).
    """

    namespace: str
    tier: str
    namespace_label: str = "namespace"


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``5m`` or ``1h30m``; ValueError names what was expected."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a Prometheus duration (e.g. 30s, 5m, 1h30m)")
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """A range selector for a whole number of seconds (at least 1s): ``[<n>s]`` without the brackets."""
    return f"{max(1, int(seconds))}s"


def escape_label_value(value: str) -> str:
    """Quote a label value for a PromQL matcher (backslash, double quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _matchers(pairs: dict[str, str]) -> str:
    return ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs.items())


def tier_matchers(selector: TierSelector) -> str:
    """``namespace="ns",tier="name"`` for the router's per-tier series."""
    return _matchers({selector.namespace_label: selector.namespace, ROUTER_METRICS.label_tier: selector.tier})


def latency_histogram(metric: SLOMetric) -> str:
    """The router histogram behind an SLO metric (base name; ``_bucket`` is appended by the query)."""
    if metric is SLOMetric.TTFT:
        return ROUTER_METRICS.ttft_seconds
    return ROUTER_METRICS.request_duration_seconds


def p95_ms_query(selector: TierSelector, metric: SLOMetric, window: str, quantile: float = 0.95) -> str:
    """p95 in milliseconds of the tier's latency over the SLO window, across all routers and pods.

    Summing the bucket rates ``by (le)`` before ``histogram_quantile`` aggregates every router replica. When no
    request completed in the window the rates are all 0 and the result is NaN, which the query layer reports as
    "no sample" (distinct from "no series", which returns an empty vector).
    """
    parse_duration(window)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    bucket = f"{latency_histogram(metric)}_bucket"
    return (
        f"1000 * histogram_quantile({quantile:g}, "
        f"sum by (le) (rate({bucket}{{{tier_matchers(selector)}}}[{window}])))"
    )


def in_flight_query(selector: TierSelector) -> str:
    """Requests the routers currently have open to this tier (all router replicas summed)."""
    return f"sum({ROUTER_METRICS.in_flight_requests}{{{tier_matchers(selector)}}})"


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _policy_counter_increase(
    counter: str,
    namespace: str,
    policy: str,
    range_seconds: float,
    namespace_label: str,
    tiers: Sequence[str] | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """``increase()`` of a router counter over the range, summed over the routers that served ``policy``
    (only the series of ``tiers`` when given).

    The router's counters carry no policy label; each router exports ``config_info{policy=...} 1``. Joining
    on the target (namespace, job, instance) with the info gauge's ``max_over_time`` over the same range keeps
    the spend of routers that served the policy earlier in the range and are gone now (rolled pods).
    """
    rng = format_duration(range_seconds)
    counter_labels = {namespace_label: namespace, **(extra or {})}
    ns = _matchers(counter_labels)
    if tiers is not None:
        bad = [t for t in tiers if not _DNS_LABEL.fullmatch(t)]
        if bad or not tiers:
            raise ValueError(f"tier names must be non-empty DNS labels, got {list(tiers)}")
        ns += f',{ROUTER_METRICS.label_tier}=~"{"|".join(sorted(tiers))}"'
    info = _matchers({namespace_label: namespace, ROUTER_METRICS.label_policy: policy})
    target = f"{namespace_label}, job, instance"
    return (
        f"sum(increase({counter}{{{ns}}}[{rng}]) * on ({target}) group_left() "
        f"max by ({target}) (max_over_time({ROUTER_METRICS.config_info}{{{info}}}[{rng}])))"
    )


def spend_query(
    namespace: str,
    policy: str,
    range_seconds: float,
    cloud_tiers: Sequence[str],
    namespace_label: str = "namespace",
) -> str:
    """Cloud USD the policy's routers spent over the last ``range_seconds`` (month to date when given the
    seconds since the start of the month): the router's cost counter of the policy's cloud tiers (local tiers'
    amortised cost is not budgeted). ``increase`` handles router restarts."""
    return _policy_counter_increase(
        ROUTER_METRICS.cost_usd_total, namespace, policy, range_seconds, namespace_label, cloud_tiers
    )


def avoided_query(namespace: str, policy: str, range_seconds: float, namespace_label: str = "namespace") -> str:
    """USD the same traffic would have cost on the policy's most expensive tier minus what it did cost."""
    return _policy_counter_increase(
        ROUTER_METRICS.avoided_cost_usd_total, namespace, policy, range_seconds, namespace_label
    )


SERVED_OUTCOME = "success"
"""The router's `outcome` label value of a request answered by its tier."""


def served_query(
    namespace: str,
    policy: str,
    range_seconds: float,
    tiers: Sequence[str] | None = None,
    namespace_label: str = "namespace",
) -> str:
    """Requests the policy's routers answered successfully over the range (only those of `tiers` when given):
    the numerator (local tiers) and denominator (all tiers) of `status.localShare`."""
    return _policy_counter_increase(
        ROUTER_METRICS.requests_total, namespace, policy, range_seconds, namespace_label, tiers,
        extra={"outcome": SERVED_OUTCOME},
    )


def route_threshold_query(namespace: str, policy: str, namespace_label: str = "namespace") -> str:
    """The threshold each route of the policy's routers loaded, one series per (route, source); replicas of one
    config report the same value, so max merges them."""
    matchers = _matchers({namespace_label: namespace, ROUTER_METRICS.label_policy: policy})
    return f"max by (route, source) ({ROUTER_METRICS.route_threshold}{{{matchers}}})"
