"""Two operator replicas: only the leader reconciles; when it dies, the other takes over within 30 s."""

from __future__ import annotations

import time

import pytest
from operator_harness import Kube, OperatorFactory, https_tier, wait_for

pytestmark = pytest.mark.integration


def test_only_the_leader_reconciles_and_the_follower_takes_over_when_it_dies(
    kube: Kube, operators: OperatorFactory
) -> None:
    follower = operators.start(priority=10)
    leader = operators.start(priority=20)
    wait_for(lambda: "Pausing operations" in follower.log(), 30, "the lower-priority replica to pause")

    kube.apply(https_tier("first"))
    kube.wait_condition("inferencetier", "first", "Ready", "True", timeout=60)
    assert any(w[1] == "Deployment" for w in leader.writes())
    # the first replica to start creates the peering object both use; after that, a paused replica writes nothing
    assert [w for w in follower.writes() if w[1] != "KopfPeering"] == [], "the paused replica must not write"

    leader.kill()
    killed = time.monotonic()
    kube.apply(https_tier("second"))
    wait_for(lambda: kube.get("deployment", "second"), 30, "the follower to reconcile a new tier")
    takeover = time.monotonic() - killed
    print(f"\nleader killed -> follower reconciled a new tier in {takeover:.1f}s")
    assert takeover < 30
    assert "Resuming operations" in follower.log()
    kube.wait_condition("inferencetier", "second", "Ready", "True", timeout=30)
