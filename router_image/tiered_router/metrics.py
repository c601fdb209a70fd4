"""Every metric the router exports, in one place (names are read by the operator's autoscaler and dashboards).

Each router instance owns its own CollectorRegistry so several routers can live in one process (tests, bench)
without clashing; `/metrics` serves that registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

PREFIX = "tiered_router"

# Names (the contract with the operator's autoscaler and the Grafana dashboards).
REQUESTS = f"{PREFIX}_requests"  # counter: tier, route, outcome
REQUEST_LATENCY = f"{PREFIX}_request_latency_seconds"  # histogram: tier
TTFT = f"{PREFIX}_ttft_seconds"  # histogram: tier (time to first byte relayed to the client)
IN_FLIGHT = f"{PREFIX}_in_flight_requests"  # gauge: tier
TOKENS = f"{PREFIX}_tokens"  # counter: tier, direction (in|out)
COST_USD = f"{PREFIX}_cost_usd"  # counter: tier
AVOIDED_USD = f"{PREFIX}_avoided_cost_usd"  # counter: tier (vs the policy's most expensive tier)
DECISIONS = f"{PREFIX}_decisions"  # counter: reason, tier
PII_DETECTIONS = f"{PREFIX}_pii_detections"  # counter: entity, action
FALLBACKS = f"{PREFIX}_fallbacks"  # counter: from_tier, to_tier, trigger
UPSTREAM_ERRORS = f"{PREFIX}_upstream_errors"  # counter: tier, kind (connect|timeout|5xx|4xx|protocol)
CIRCUIT_STATE = f"{PREFIX}_circuit_state"  # gauge: tier (0 closed, 1 half-open, 2 open)
DECISION_LATENCY = f"{PREFIX}_decision_latency_seconds"  # histogram
CONFIG_RELOADS = f"{PREFIX}_config_reloads"  # counter: result (success|invalid)
CONFIG_INFO = f"{PREFIX}_config_info"  # gauge=1: policy, hash
CONFIG_VALID = f"{PREFIX}_config_last_reload_valid"  # gauge 1/0
SPILLOVERS = f"{PREFIX}_spillovers"  # counter: from_tier, to_tier, cause (saturated|starting|over_slo)
LOCAL_WAITS = f"{PREFIX}_local_waits"  # counter: tier, outcome (served|timed_out)
TIER_SERVICE = f"{PREFIX}_tier_service_seconds"  # gauge: tier (spillover's service-time estimate)
ROUTE_THRESHOLD = f"{PREFIX}_route_threshold"  # gauge: policy, route, source (route|policy|auto)

_LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.08, 0.1, 0.12, 0.2, 0.3, 0.5, 0.8, 1, 2, 5, 10, 30)
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


M = TypeVar("M", bound=MetricWrapperBase)


class Bound(Generic[M]):
    """The labelled children of one metric, each created once and then looked up in a dict.

    `metric.labels(...)` validates, takes a lock and builds a key on every call (about 3 µs); the request path
    updates ten series per request, so it goes through these instead. Only for metrics whose children are never
    removed (label values come from the config: tiers, routes, reasons, entities).
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


@dataclass(frozen=True, slots=True)
class TierSeries:
    """Every per-tier child the dispatcher touches on each request, bound once per tier name."""

    latency: Histogram
    ttft: Histogram
    in_flight: Gauge
    tokens_in: Counter
    tokens_out: Counter
    cost: Counter
    avoided: Counter
    circuit: Gauge


class RouterMetrics:
    """The router's collectors, registered in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            REQUESTS, "Requests by tier, route and outcome.", ["tier", "route", "outcome"], registry=r
        )
        self.latency = Histogram(
            REQUEST_LATENCY, "End-to-end request latency per tier.", ["tier"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttft = Histogram(TTFT, "Time to first byte per tier.", ["tier"], buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge(IN_FLIGHT, "Requests being served per tier.", ["tier"], registry=r)
        self.tokens = Counter(TOKENS, "Tokens by tier and direction (in|out).", ["tier", "direction"], registry=r)
        self.cost = Counter(COST_USD, "Spend in USD per tier, from usage and the tier's pricing.", ["tier"], registry=r)
        self.avoided = Counter(
            AVOIDED_USD,
            "USD saved versus serving the same tokens on the policy's most expensive tier.",
            ["tier"],
            registry=r,
        )
        self.decisions = Counter(
            DECISIONS, "Routing decisions by reason and chosen tier.", ["reason", "tier"], registry=r
        )
        self.pii = Counter(PII_DETECTIONS, "PII findings by entity and action.", ["entity", "action"], registry=r)
        self.fallbacks = Counter(
            FALLBACKS, "Fallbacks to the next allowed tier.", ["from_tier", "to_tier", "trigger"], registry=r
        )
        self.upstream_errors = Counter(
            UPSTREAM_ERRORS, "Upstream failures by tier and kind.", ["tier", "kind"], registry=r
        )
        self.circuit = Gauge(
            CIRCUIT_STATE, "Circuit breaker per tier: 0 closed, 1 half-open, 2 open.", ["tier"], registry=r
        )
        self.decision_latency = Histogram(
            DECISION_LATENCY, "Time spent in the decision pipeline.", buckets=_DECISION_BUCKETS, registry=r
        )
        self.reloads = Counter(CONFIG_RELOADS, "Config reload attempts by result.", ["result"], registry=r)
        self.config_info = Gauge(CONFIG_INFO, "The config in force (value 1).", ["policy", "hash"], registry=r)
        self.config_valid = Gauge(CONFIG_VALID, "1 when the last config file read was valid, else 0.", registry=r)
        self.spillovers = Counter(
            SPILLOVERS, "Requests sent past a busy, starting or over-SLO local tier (spillover), by cause.",
            ["from_tier", "to_tier", "cause"], registry=r,
        )
        self.local_waits = Counter(
            LOCAL_WAITS, "Requests that may not leave and waited for a busy or starting local tier, by outcome.",
            ["tier", "outcome"], registry=r,
        )
        self.service_estimate = Gauge(
            TIER_SERVICE, "Per-request service time the router estimates for a tier (spillover's prediction).",
            ["tier"], registry=r,
        )
        self.route_threshold = Gauge(
            ROUTE_THRESHOLD,
            "Threshold in force per route; source auto: derived at load from the policy's examples.",
            ["policy", "route", "source"],
            registry=r,
        )
        # request-path accessors (pre-bound children)
        self.requests_by = Bound(self.requests)
        self.decisions_by = Bound(self.decisions)
        self.pii_by = Bound(self.pii)
        self.fallbacks_by = Bound(self.fallbacks)
        self.upstream_errors_by = Bound(self.upstream_errors)
        self.spillovers_by = Bound(self.spillovers)
        self.local_waits_by = Bound(self.local_waits)
        self.tier_service = Bound(self.service_estimate)
        self._tiers: dict[str, TierSeries] = {}

    def tier(self, name: str) -> TierSeries:
        """The per-tier children of `name` (created, at zero, on first use)."""
        series = self._tiers.get(name)
        if series is None:
            series = self._tiers[name] = TierSeries(
                latency=self.latency.labels(name),
                ttft=self.ttft.labels(name),
                in_flight=self.in_flight.labels(name),
                tokens_in=self.tokens.labels(name, "in"),
                tokens_out=self.tokens.labels(name, "out"),
                cost=self.cost.labels(name),
                avoided=self.avoided.labels(name),
                circuit=self.circuit.labels(name),
            )
        return series

    def declare_tiers(self, tiers: list[str]) -> None:
        """Create every per-tier series at zero when a config loads.

        Prometheus' rate()/increase() need a sample before the first request, or a new tier's first burst (and its
        spend) is invisible, and an idle tier looks like missing data to the autoscaler.
        """
        for tier in tiers:
            self.tier(tier)
