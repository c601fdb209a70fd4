"""Admission control: a bounded queue in front of the model's single worker, and drain on shutdown.

A CPU model serves one generation at a time per instance; everything else waits. Waiting without bound turns
overload into timeouts for everyone, so the queue is bounded: when it is full the server answers 429 with a
Retry-After estimated from recent service times, and the router or client can go elsewhere. During drain (after
SIGTERM) nothing new is admitted (503) while admitted requests run to completion.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


class QueueFull(Exception):
    """The wait queue is at capacity; ``retry_after`` is the suggested wait in whole seconds."""

    def __init__(self, waiting: int, capacity: int, retry_after: int) -> None:
        super().__init__(f"queue full: {waiting} requests waiting (capacity {capacity})")
        self.retry_after = retry_after


class Draining(Exception):
    """The server is shutting down and admits no new requests."""


def retry_after_seconds(waiting: int, running: int, mean_service_s: float, workers: int = 1) -> int:
    """Seconds until a slot is likely free: the work ahead divided by the workers, clamped to [1, 60]."""
    ahead = waiting + running
    estimate = ahead * max(mean_service_s, 0.0) / max(workers, 1)
    return int(min(60, max(1, math.ceil(estimate))))


def ewma(previous: float, sample: float, weight: float = 0.2) -> float:
    """Exponentially weighted mean, for the service-time estimate behind Retry-After."""
    return previous + weight * (sample - previous)


@dataclass
class AdmissionSnapshot:
    waiting: int
    running: int
    draining: bool


class Admission:
    """Bounded FIFO admission to ``workers`` generation slots (one per model instance)."""

    def __init__(self, capacity: int, workers: int = 1, initial_service_s: float = 1.0) -> None:
        if capacity < 0 or workers < 1:
            raise ValueError("queue capacity must be >= 0 and workers >= 1")
        self.capacity = capacity
        self.workers = workers
        self.mean_service_s = initial_service_s
        self.waiting = 0
        self.running = 0
        self.draining = False
        self._slots = asyncio.Semaphore(workers)
        self._idle = asyncio.Event()
        self._idle.set()

    def snapshot(self) -> AdmissionSnapshot:
        return AdmissionSnapshot(self.waiting, self.running, self.draining)

    def _check_admissible(self) -> None:
        if self.draining:
            raise Draining("server is draining (shutting down); retry on another replica")
        if self.running + self.waiting >= self.workers and self.waiting >= self.capacity:
            raise QueueFull(self.waiting, self.capacity,
                            retry_after_seconds(self.waiting, self.running, self.mean_service_s, self.workers))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit (or raise QueueFull / Draining at once), wait for a worker slot, hold it for the body."""
        self._check_admissible()
        self.waiting += 1
        self._idle.clear()
        try:
            await self._slots.acquire()
        except BaseException:
            self.waiting -= 1
            self._update_idle()
            raise
        self.waiting -= 1
        self.running += 1
        started = asyncio.get_running_loop().time()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            self.mean_service_s = ewma(self.mean_service_s, asyncio.get_running_loop().time() - started)
            self._update_idle()

    def _update_idle(self) -> None:
        if self.waiting == 0 and self.running == 0:
            self._idle.set()

    def start_draining(self) -> None:
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is waiting or running; False when ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True
