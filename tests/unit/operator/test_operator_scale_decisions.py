"""The small decisions that keep the operator's request count flat at 1,000 tiers (docs/operator.md, "Scale")."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.handlers.reconciler import announce_ready, related_tiers
from tiered_operator.handlers.residency import needs_stamp, resync_due, tier_event_matters
from tiered_operator.handlers.state import PendingWrites, awaiting_finalizer


def test_reconcile_waits_for_kopfs_finalizer_on_a_new_object() -> None:
    assert awaiting_finalizer({"metadata": {"name": "t"}})
    assert awaiting_finalizer({"metadata": {"finalizers": ["other.io/x"]}})
    assert not awaiting_finalizer({"metadata": {"finalizers": ["tiered.dev/finalizer"]}})
    # an object being deleted is never held back (kopf will not add a finalizer to it)
    assert not awaiting_finalizer({"metadata": {"deletionTimestamp": "2026-11-28T00:00:00Z"}})


def test_new_objects_are_stamped_only_after_a_relabel() -> None:
    assert not needs_stamp(None, "restricted;*", relabelled=False)  # created under the current labels
    assert needs_stamp(None, "local-only;*", relabelled=True)  # the namespace changed since: wake it
    assert needs_stamp("restricted;*", "local-only;*", relabelled=False)
    assert not needs_stamp("local-only;*", "local-only;*", relabelled=True)


def test_residency_resync_runs_once_a_minute_per_namespace_not_per_tier() -> None:
    assert resync_due(None, 5.0)
    assert not resync_due(100.0, 130.0)
    assert resync_due(100.0, 160.0)


@pytest.mark.parametrize(
    ("event", "before", "now", "matters"),
    [
        (None, None, (1, False, True), True),  # first sight (listing at start)
        ("ADDED", None, (1, False, False), True),
        ("MODIFIED", (1, False, False), (1, False, True), True),  # kopf's finalizer arrived
        ("MODIFIED", (1, False, True), (1, False, True), False),  # status or metadata only
        ("MODIFIED", (1, False, True), (2, False, True), True),  # spec changed
        ("MODIFIED", (1, False, True), (1, True, True), True),  # deletion started
        ("DELETED", (1, True, True), (1, True, True), True),
    ],
)
def test_only_tier_events_that_change_residency_ask_for_a_pass(
    event: str | None, before: tuple[int, bool, bool] | None, now: tuple[int, bool, bool], matters: bool
) -> None:
    assert tier_event_matters(event, before, now) is matters


def test_ready_events_on_flips_only() -> None:
    assert not announce_ready(None, "False")  # first report of a new tier: not ready yet, no Event
    assert announce_ready(None, "True")
    assert announce_ready("False", "True")
    assert announce_ready("True", "False")
    assert not announce_ready("False", "False")  # DeploymentMissing → RolloutInProgress → ModelLoading: one rollout


def test_a_tier_reconcile_loads_only_related_tiers(make_policy: Callable[..., RoutingPolicy]) -> None:
    policies = [make_policy("a", tiers=["x", "y"]), make_policy("b", tiers=["z"]), make_policy("c", tiers=["y", "w"])]
    assert sorted(set(related_tiers("y", policies))) == ["w", "x", "y"]
    assert related_tiers("lonely", policies) == ["lonely"]


def test_pending_writes_outstanding_until_observed_or_expired() -> None:
    now = [0.0]
    pending = PendingWrites(expiry=10.0, clock=lambda: now[0])
    key = ("Deployment", "ns", "t")
    assert not pending.outstanding(key)
    pending.wrote(key, "h1")
    assert pending.outstanding(key)
    pending.observed(key)
    assert not pending.outstanding(key)
    pending.wrote(key, "h2")
    now[0] = 11.0
    assert not pending.outstanding(key)  # a lost event never holds the status back for long
