"""The handlers' in-memory helpers: plain copies of kopf bodies, pending writes."""

from __future__ import annotations

from typing import Any

from tiered_operator.handlers.state import PendingWrites, slim


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
    pending.confirmed(key, "12")
    pending.observed(key, "11")  # the object's previous version, arriving late: our write is not visible yet
    assert pending.waiting(key, "h1")
    pending.observed(key, "12")
    assert not pending.waiting(key, "h1")
    pending.wrote(key, "h1")
    clock.now = 11
    assert not pending.waiting(key, "h1")


def test_a_write_shown_by_the_index_is_settled_even_without_an_event() -> None:
    """A server-side apply that changes nothing produces no watch event; the index already shows its version."""
    pending = PendingWrites(expiry=60, clock=Clock())
    key = ("Service", "ns", "a")
    pending.wrote(key, "h1")
    pending.confirmed(key, "7")
    assert pending.outstanding(key, {"metadata": {"resourceVersion": "6"}})
    assert not pending.outstanding(key, {"metadata": {"resourceVersion": "7"}})


def test_an_event_before_the_response_settles_the_write_once_the_response_says_which_version() -> None:
    pending = PendingWrites(expiry=60, clock=Clock())
    key = ("ConfigMap", "ns", "a")
    pending.wrote(key, "h1")
    pending.observed(key, "9")  # handled before the apply returned
    assert pending.outstanding(key)
    pending.confirmed(key, "9")
    assert not pending.outstanding(key)


def test_a_delete_is_settled_by_its_deleted_event_or_by_the_index_losing_the_object() -> None:
    pending = PendingWrites(expiry=60, clock=Clock())
    key = ("NetworkPolicy", "ns", "a")
    pending.wrote(key, "<deleted>")
    assert pending.outstanding(key, {"metadata": {"resourceVersion": "3"}})
    assert not pending.outstanding(key, None)
    pending.wrote(key, "<deleted>")
    pending.observed(key, "4", deleted=True)
    assert not pending.outstanding(key, {"metadata": {"resourceVersion": "3"}})


def test_created_lists_an_owners_unseen_creates_until_seen_deleted_or_expired() -> None:
    """What the index cannot show yet (its watch started late) is still known to exist, per owner and kind."""
    clock = Clock()
    pending = PendingWrites(expiry=60, clock=clock)
    owner, other = ("ns", "InferenceTier", "a"), ("ns", "InferenceTier", "b")
    pending.wrote(("CiliumNetworkPolicy", "ns", "a-1"), "h1", owner)
    pending.wrote(("CiliumNetworkPolicy", "ns", "a-2"), "h2", owner)
    pending.wrote(("CiliumNetworkPolicy", "ns", "b-1"), "h3", other)
    pending.wrote(("NetworkPolicy", "ns", "a-1"), "h4", owner)
    assert pending.created("CiliumNetworkPolicy", owner) == ["a-1", "a-2"]
    pending.confirmed(("CiliumNetworkPolicy", "ns", "a-1"), "5")
    pending.observed(("CiliumNetworkPolicy", "ns", "a-1"), "5")  # seen: the index shows it from now on
    pending.wrote(("CiliumNetworkPolicy", "ns", "a-2"), "<deleted>", owner)  # a delete is not a create
    assert pending.created("CiliumNetworkPolicy", owner) == []
    assert pending.created("CiliumNetworkPolicy", other) == ["b-1"]
    clock.now = 61
    assert pending.created("CiliumNetworkPolicy", other) == []
    assert pending.created("NetworkPolicy", owner) == []


def test_a_status_write_counts_as_seen_once_the_watch_reaches_its_resource_version() -> None:
    from tiered_operator.handlers.reconciler import _caught_up

    assert not _caught_up("10", "11")  # the index still shows an older object
    assert _caught_up("11", "11") and _caught_up("12", "11")
    assert _caught_up("anything", None)  # unknown write version: trust the index
    assert not _caught_up("abc", "abd") and _caught_up("abc", "abc")  # opaque versions: equality only
