"""The small decisions that keep the operator's request count flat at 1,000 tiers (docs/operator.md, "Scale")."""

from __future__ import annotations

from collections.abc import Callable

from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.handlers.reconciler import announce_ready, outranked, related_tiers
from tiered_operator.handlers.state import PendingWrites, awaiting_finalizer

AUTOSCALED = {"backend": "local", "autoscaling": {"maxReplicas": 3}, "slo": {"latencyP95Ms": 50}}


def test_reconcile_waits_for_kopfs_finalizer_only_where_kopf_adds_one() -> None:
    tiers, policies = "inferencetiers", "routingpolicies"
    # a plain tier has no daemon, so kopf never adds a finalizer: no write, and nothing to wait for
    assert not awaiting_finalizer(tiers, {"metadata": {"name": "t"}, "spec": {"backend": "local"}})
    # the autoscaler (a daemon) and the budget loop (a daemon on every policy) do need kopf's finalizer
    assert awaiting_finalizer(tiers, {"metadata": {"name": "t"}, "spec": AUTOSCALED})
    assert awaiting_finalizer(policies, {"metadata": {"finalizers": ["other.io/x"]}})
    assert not awaiting_finalizer(policies, {"metadata": {"finalizers": ["tiered.dev/finalizer"]}})
    # an object being deleted is never held back (kopf will not add a finalizer to it)
    assert not awaiting_finalizer(policies, {"metadata": {"deletionTimestamp": "2026-11-28T00:00:00Z"}})


def test_the_resync_loop_pauses_while_a_live_peer_outranks_this_replica() -> None:
    now = 1_800_000_000.0
    fresh = "2027-01-15T08:00:00"  # = now, as kopf writes lastseen (UTC, no zone)
    assert outranked({"other": {"priority": 200, "lastseen": fresh, "lifetime": 15}}, 100, now)
    assert not outranked({"me": {"priority": 100, "lastseen": fresh, "lifetime": 15}}, 100, now)
    assert not outranked({"lower": {"priority": 50, "lastseen": fresh, "lifetime": 15}}, 100, now)
    stale = "2027-01-15T07:59:00"
    assert not outranked({"dead": {"priority": 200, "lastseen": stale, "lifetime": 15}}, 100, now)
    assert not outranked(None, 100, now) and not outranked({}, 100, now)


def test_ready_events_on_flips_only() -> None:
    assert not announce_ready(None, "False")  # first report of a new tier: not ready yet, no Event
    assert not announce_ready(None, "True")  # ready at first sight: in status, no Event
    assert not announce_ready({"status": "False", "reason": "ModelLoading"}, "True")  # a rollout finishing
    assert announce_ready({"status": "False", "reason": "CrashLoopBackOff"}, "True")  # recovered from a failure
    assert announce_ready({"status": "True", "reason": "Ready"}, "False")  # readiness lost
    assert not announce_ready({"status": "False", "reason": "ModelLoading"}, "False")


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
    pending.confirmed(key, "5")
    assert pending.outstanding(key)
    pending.observed(key, "5")
    assert not pending.outstanding(key)
    pending.wrote(key, "h2")
    now[0] = 11.0
    assert not pending.outstanding(key)  # a lost event never holds the status back for long
