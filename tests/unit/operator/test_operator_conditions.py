"""Conditions per API conventions: transition time kept while status holds, generation stamped."""

from __future__ import annotations

from tiered_operator.reconcile.conditions import FALSE, TRUE, Condition, merge_conditions, transitions


def test_transition_time_kept_when_status_unchanged_and_reset_when_it_flips() -> None:
    first = merge_conditions(None, [Condition("Ready", FALSE, "ModelLoading", "0/1")], generation=1, now="T1")
    same = merge_conditions(first, [Condition("Ready", FALSE, "RolloutInProgress", "x")], generation=2, now="T2")
    flipped = merge_conditions(same, [Condition("Ready", TRUE, "Ready", "1/1")], generation=2, now="T3")
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1" and same[0]["observedGeneration"] == 2
    assert same[0]["reason"] == "RolloutInProgress"
    assert flipped[0]["lastTransitionTime"] == "T3" and flipped[0]["status"] == "True"


def test_conditions_of_other_writers_are_kept() -> None:
    existing = [{"type": "SLOMet", "status": "True", "reason": "WithinSLO", "lastTransitionTime": "T0"}]
    merged = merge_conditions(existing, [Condition("Ready", TRUE, "Ready")], generation=1, now="T1")
    assert [c["type"] for c in merged] == ["Ready", "SLOMet"]


def test_transitions_report_new_and_changed_conditions_only() -> None:
    before = merge_conditions(
        None, [Condition("Ready", FALSE, "A"), Condition("Stalled", FALSE, "B")], generation=1, now="T"
    )
    after = merge_conditions(
        before, [Condition("Ready", TRUE, "R"), Condition("Stalled", FALSE, "B")], generation=1, now="T"
    )
    assert [c["type"] for c in transitions(before, after)] == ["Ready"]
