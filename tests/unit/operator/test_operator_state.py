"""The handlers' in-memory helpers: plain copies of kopf bodies, pending writes, the TTL cache."""

from __future__ import annotations

from typing import Any

from tiered_operator.handlers.state import PendingWrites, TTLCache, slim


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slim_drops_managed_fields_and_copies_deeply() -> None:
    body: dict[str, Any] = {"metadata": {"name": "a", "managedFields": [{"manager": "x"}]}, "spec": {"l": [{"k": 1}]}}
    out = slim(body)
    assert out == {"metadata": {"name": "a"}, "spec": {"l": [{"k": 1}]}}
    out["spec"]["l"][0]["k"] = 2
    assert body["spec"]["l"][0]["k"] == 1


def test_pending_write_suppresses_the_same_write_until_its_event_or_expiry() -> None:
    clock = Clock()
    pending = PendingWrites(expiry=10, clock=clock)
    key = ("Deployment", "ns", "a")
    pending.wrote(key, "h1")
    assert pending.waiting(key, "h1")
    assert not pending.waiting(key, "h2")  # a different desired state is never held back
    pending.observed(key)
    assert not pending.waiting(key, "h1")
    pending.wrote(key, "h1")
    clock.now = 11
    assert not pending.waiting(key, "h1")


def test_ttl_cache_reloads_after_ttl() -> None:
    clock = Clock()
    cache = TTLCache(ttl=2, clock=clock)
    loads: list[str] = []

    def load(value: str) -> str:
        loads.append(value)
        return value

    assert cache.get("ns", lambda: load("a")) == "a"
    assert cache.get("ns", lambda: load("b")) == "a"
    clock.now = 3
    assert cache.get("ns", lambda: load("c")) == "c"
    assert loads == ["a", "c"]


def test_a_status_write_counts_as_seen_once_the_watch_reaches_its_resource_version() -> None:
    from tiered_operator.handlers.reconciler import _caught_up

    assert not _caught_up("10", "11")  # the index still shows an older object
    assert _caught_up("11", "11") and _caught_up("12", "11")
    assert _caught_up("anything", None)  # unknown write version: trust the index
    assert not _caught_up("abc", "abd") and _caught_up("abc", "abc")  # opaque versions: equality only
