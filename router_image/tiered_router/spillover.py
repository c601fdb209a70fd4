"""Spillover on load: what the router knows about a local tier's load, and whether a request should go elsewhere.

The decision (decision.py) chooses a tier and lists every other tier the request may reach (`Decision.spill`,
already filtered by residency, capability and budget: a request carrying PII in a restricted namespace has none).
Dispatch (proxy.py) asks this module, before it sends a request to a local tier, whether the tier is

- **starting**: it refused the connection, or answered 503 while its model loads or it drains, within the last
  Retry-After (clipped to [0.5, 5] s);
- **saturated**: its queue answered 429 within the last Retry-After (clipped to [0.2, 1] s);
- **over its SLO**: the latency a new request would see, predicted from the router's own requests in flight to it
  and their measured service time, exceeds 80 % of the tier's latency objective.

If so, and the request may reach another tier, it goes to the first of them (reason `SpilloverLocal<Cause>`).
Requests that may not leave wait: a 429 or a start-up answer is retried until `spillover.maxLocalWaitMs` has
passed since the request arrived, then the tier's own answer (429 with Retry-After, or 503) is relayed. While one
waits, the tier counts as busy for requests that may leave (they spill), so a freed slot goes to the waiting
request rather than to whichever request that could have gone elsewhere arrived first.

The prediction: one SLM replica serves one sequence at a time from a FIFO queue, so a request that finds n
requests ahead of it waits for up to n service times. Each answer gives a service-time sample: the time since the
tier began on it, which is when it was sent or when the tier gave its previous answer, whichever was later (with
several replicas, or other routers sharing the tier, the samples shrink or grow to the time one more request
costs, which is what the prediction needs); the estimate is an exponentially weighted mean. Predicted latency:
(in flight + 1) x (estimate + its mean deviation) for an e2e objective, in flight x the same for a ttft one.
Before the first answer there is no estimate, and the tier takes one request at a time; a request in flight for
longer than the objective marks the tier over it whatever the estimate.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import StrEnum

from .config import SloMetric, TierConfig
from .decision import Reason

EWMA_WEIGHT = 0.2
"""Weight of the newest service-time sample (about the last ten requests dominate)."""
SLO_HEADROOM = 0.8
"""The prediction uses the mean service time, and requests vary around it (prompt and answer length, a busy
machine): the tier is filled up to 80 % of its objective, so the requests that take longer still meet it."""
STARTING_HOLD_S = (0.5, 5.0)
SATURATED_HOLD_S = (0.2, 1.0)


class Cause(StrEnum):
    """Why a local tier is passed over (metric label); `reason` is the x-tiered-reason value."""

    SATURATED = "saturated"
    STARTING = "starting"
    OVER_SLO = "over_slo"

    @property
    def reason(self) -> Reason:
        return {"saturated": Reason.SPILLOVER_SATURATED, "starting": Reason.SPILLOVER_STARTING,
                "over_slo": Reason.SPILLOVER_OVER_SLO}[self.value]


@dataclass
class TierLoad:
    """The router's view of one tier's load; lives across config reloads (keyed by tier name and URL)."""

    service_s: float | None = None
    service_dev_s: float = 0.0
    """Exponentially weighted mean absolute deviation of the samples from `service_s`."""
    unavailable_cause: Cause | None = None
    unavailable_until: float = 0.0
    sent_at: dict[int, float] = field(default_factory=dict)
    """Our requests in flight to the tier: ticket -> when it was sent (monotonic seconds)."""
    last_answer: float | None = None
    waiting: int = 0
    """Requests that may not leave, waiting for the tier (between a busy or starting answer and their own answer):
    while any wait, requests that may leave go elsewhere instead of taking the slot the waiting ones retry for."""
    _tickets: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def in_flight(self) -> int:
        return len(self.sent_at)

    def start(self, now: float) -> int:
        """A request is sent now: its ticket."""
        ticket = next(self._tickets)
        self.sent_at[ticket] = now
        return ticket

    def finish(self, ticket: int) -> float | None:
        """The request ended (answered, failed or cancelled): when it was sent."""
        return self.sent_at.pop(ticket, None)

    def answered(self, sent: float, now: float) -> None:
        """A successful answer to a request sent at `sent`: a service-time sample, and the tier is no longer
        starting or saturated. The tier began on it when it was sent or when it gave its previous answer,
        whichever was later (a FIFO server goes from one request to the next)."""
        self.unavailable_cause = None
        began = sent if self.last_answer is None else max(sent, self.last_answer)
        self.last_answer = now
        sample = now - began
        if sample <= 0:
            return
        if self.service_s is None:
            self.service_s = sample
            return
        self.service_dev_s = (1 - EWMA_WEIGHT) * self.service_dev_s + EWMA_WEIGHT * abs(sample - self.service_s)
        self.service_s = (1 - EWMA_WEIGHT) * self.service_s + EWMA_WEIGHT * sample

    def oldest_s(self, now: float) -> float:
        """How long the oldest of our requests in flight has been waiting (0 when none)."""
        return now - min(self.sent_at.values()) if self.sent_at else 0.0

    def mark(self, cause: Cause, retry_after_s: float | None, now: float) -> None:
        """The tier answered 429 (saturated) or is starting: remember it for a clipped Retry-After."""
        low, high = SATURATED_HOLD_S if cause is Cause.SATURATED else STARTING_HOLD_S
        hold = min(high, max(low, retry_after_s if retry_after_s is not None else low))
        self.unavailable_cause, self.unavailable_until = cause, now + hold

    def predicted_s(self, metric: SloMetric) -> float | None:
        """The latency a request sent now would see (with the service time's mean plus its mean deviation, as TCP
        sizes its retransmission timeout), or None before the first measurement."""
        if self.service_s is None:
            return None
        ahead = self.in_flight if metric is SloMetric.TTFT else self.in_flight + 1
        return ahead * (self.service_s + self.service_dev_s)


def spill_cause(tier: TierConfig, load: TierLoad, now: float) -> Cause | None:
    """Why a request should not be sent to `tier` now (None: send it). Pure over its inputs.

    With an objective: before the first answer has measured the service time, one request at a time; and a
    request of ours already in flight for longer than the objective shows the tier is over it whatever the
    estimate says (the machine slowed down, or others share the tier)."""
    if load.unavailable_cause is not None and now < load.unavailable_until:
        return load.unavailable_cause
    if load.waiting:  # the hold has run out, but a request that may not leave is still waiting for the tier
        return load.unavailable_cause or Cause.SATURATED
    if tier.slo is not None and load.in_flight:
        slo_s = tier.slo.latency_p95_ms / 1000
        predicted = load.predicted_s(tier.slo.metric)
        if predicted is None or predicted > SLO_HEADROOM * slo_s or load.oldest_s(now) > slo_s:
            return Cause.OVER_SLO
    return None


def load_cause(status: int, error_code: str | None) -> Cause | None:
    """What an upstream answer says about its load: 429 = saturated; 503 loading/draining = starting."""
    if status == 429:
        return Cause.SATURATED
    if status == 503 and error_code in ("model_not_ready", "draining"):
        return Cause.STARTING
    return None


def retry_after_s(value: str | None) -> float | None:
    """A Retry-After header's seconds (delta form only; an HTTP date is treated as absent)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
