"""The index audit's pure parts: which indexed objects are stale, and lookups skipping tombstoned uids."""

from __future__ import annotations

from typing import Any

from tiered_operator.handlers.state import IndexedRef, Indexes, Tombstones, stale


def _body(name: str, uid: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": uid, "namespace": "ns"}}


def _indexes(gone: Tombstones) -> Indexes:
    key = ("ns", "InferenceTier", "t")
    return Indexes(
        tiers={("ns", "t"): [_body("t", "tier-uid")]},
        policies={},
        children={
            "Deployment": {key: [_body("t", "dep-uid")]},
            "Service": {key: [_body("t", "svc-uid")]},
            "ConfigMap": {key: [_body("t-router", "cm-uid")]},
        },
        gone=gone,
    )


def test_refs_name_every_indexed_object_with_its_owner() -> None:
    refs = _indexes(Tombstones()).refs()
    assert {(r.kind, r.name, r.uid, r.owner_kind, r.owner) for r in refs} == {
        ("Deployment", "t", "dep-uid", "InferenceTier", "t"),
        ("Service", "t", "svc-uid", "InferenceTier", "t"),
        ("ConfigMap", "t-router", "cm-uid", "InferenceTier", "t"),
        ("InferenceTier", "t", "tier-uid", "InferenceTier", "t"),
    }


def test_stale_is_what_the_list_of_its_kind_lacks() -> None:
    refs = _indexes(Tombstones()).refs()
    live = {"Deployment": {"other"}, "Service": {"svc-uid"}, "ConfigMap": {"cm-uid"}, "InferenceTier": {"tier-uid"}}
    assert [(r.kind, r.uid) for r in stale(refs, live)] == [("Deployment", "dep-uid")]
    # a kind that was not listed is never judged
    assert stale(refs, {"Service": {"svc-uid"}}) == []
    assert stale(refs, {kind: set() for kind in live}) == refs


def test_lookups_skip_buried_uids_and_a_recreated_object_is_seen_again() -> None:
    gone = Tombstones()
    idx = _indexes(gone)
    assert idx.child("Deployment", "ns", "InferenceTier", "t", "t") is not None
    gone.bury("dep-uid")
    gone.bury("tier-uid")
    assert idx.child("Deployment", "ns", "InferenceTier", "t", "t") is None
    assert idx.tier_bodies("ns") == {}
    assert idx.child("Service", "ns", "InferenceTier", "t", "t") is not None
    recreated = Indexes(idx.tiers, idx.policies,
                        {**idx.children, "Deployment": {("ns", "InferenceTier", "t"): [_body("t", "new-uid")]}},
                        gone=gone)  # fmt: skip
    assert recreated.child("Deployment", "ns", "InferenceTier", "t", "t") == _body("t", "new-uid")


def test_retain_forgets_uids_no_index_holds() -> None:
    gone = Tombstones()
    gone.bury("a")
    gone.bury("b")
    gone.retain(["b", "c"])
    assert "a" not in gone and "b" in gone and len(gone) == 1


def test_indexed_ref_is_hashable_and_comparable() -> None:
    ref = IndexedRef("Deployment", "ns", "t", "u", "InferenceTier", "t")
    assert {ref, IndexedRef("Deployment", "ns", "t", "u", "InferenceTier", "t")} == {ref}
