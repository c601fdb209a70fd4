"""Every metric the router exports, in one place (names are read by the operator's autoscaler and dashboards).

Each router instance owns its own CollectorRegistry so several routers can live in one process (tests, bench)
without clashing; `/metrics` serves that registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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

_LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.08, 0.1, 0.12, 0.2, 0.3, 0.5, 0.8, 1, 2, 5, 10, 30)
_DECISION_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05)


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

    def declare_tiers(self, tiers: list[str]) -> None:
        """Create every per-tier series at zero when a config loads.

        Prometheus' rate()/increase() need a sample before the first request, or a new tier's first burst (and its
        spend) is invisible, and an idle tier looks like missing data to the autoscaler.
        """
        for tier in tiers:
            self.latency.labels(tier)
            self.ttft.labels(tier)
            self.in_flight.labels(tier)
            self.cost.labels(tier)
            self.avoided.labels(tier)
            self.circuit.labels(tier)
            for direction in ("in", "out"):
                self.tokens.labels(tier, direction)
