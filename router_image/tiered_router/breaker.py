"""Per-upstream circuit breaker: stop sending requests to a tier that keeps failing, probe it again later.

Closed -> (failureThreshold consecutive failures) -> open for openSeconds -> half-open: one probe request is let
through; success closes the circuit, failure opens it again. The clock is injected so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum


class CircuitState(IntEnum):
    """Gauge values exported as tiered_router_circuit_state."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Consecutive-failure breaker for one upstream."""

    def __init__(
        self, failure_threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probe_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self.opened_at is None:
            return CircuitState.CLOSED
        if self.clock() - self.opened_at >= self.open_seconds:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def allow(self) -> bool:
        """Whether a request may be sent now (in half-open, only one probe at a time)."""
        state = self.state
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probe_in_flight = False

    def record_failure(self) -> None:
        self.probe_in_flight = False
        if self.opened_at is not None:  # a failed probe re-opens for a full period
            self.opened_at = self.clock()
            return
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.opened_at = self.clock()
