"""Deciding whether a child needs server-side apply: the heart of 'zero writes at steady state'."""

from __future__ import annotations

from typing import Any

from tiered_operator.reconcile.compare import APPLIED_HASH, is_subset, needs_apply, with_applied_hash


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "namespace": "n", "labels": {"x": "1"}},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": "img:1",
                            "resources": {"limits": {"memory": "1024Mi", "cpu": "0.5"}},
                        },
                        {"name": "router", "image": "r:1"},
                    ]
                }
            }
        },
    }


def _as_server_returns(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: defaults added, quantities canonicalised, extra metadata."""
    observed = with_applied_hash(desired)
    observed["metadata"].update({"uid": "u", "resourceVersion": "7", "generation": 1})
    model = observed["spec"]["template"]["spec"]["containers"][0]
    model["resources"]["limits"] = {"memory": "1Gi", "cpu": "500m"}
    model["terminationMessagePath"] = "/dev/termination-log"
    observed["spec"]["template"]["spec"]["containers"].append({"name": "injected-by-someone-else", "image": "x"})
    observed["spec"]["replicas"] = 3
    observed["status"] = {"replicas": 3}
    return observed


def test_server_defaults_and_canonical_quantities_do_not_count_as_drift() -> None:
    desired = with_applied_hash(_deployment())
    assert not needs_apply(desired, _as_server_returns(_deployment()))


def test_absent_child_needs_apply() -> None:
    assert needs_apply(with_applied_hash(_deployment()), None)


def test_hand_edited_field_we_manage_needs_apply() -> None:
    observed = _as_server_returns(_deployment())
    observed["spec"]["template"]["spec"]["containers"][1]["image"] = "evil:latest"
    assert needs_apply(with_applied_hash(_deployment()), observed)


def test_removed_label_we_manage_needs_apply() -> None:
    observed = _as_server_returns(_deployment())
    del observed["metadata"]["labels"]["x"]
    assert needs_apply(with_applied_hash(_deployment()), observed)


def test_changed_desired_state_needs_apply_even_when_it_only_drops_a_field() -> None:
    observed = _as_server_returns(_deployment())
    smaller = _deployment()
    del smaller["metadata"]["labels"]["x"]  # a subset of what is there: only the hash notices
    assert is_subset(with_applied_hash(smaller)["spec"], observed["spec"])
    assert needs_apply(with_applied_hash(smaller), observed)


def test_applied_hash_is_stable_and_ignores_a_previous_hash() -> None:
    once = with_applied_hash(_deployment())
    twice = with_applied_hash(once)
    assert once["metadata"]["annotations"][APPLIED_HASH] == twice["metadata"]["annotations"][APPLIED_HASH]


def test_quantities_compare_by_value_only_under_resources() -> None:
    assert is_subset({"limits": {"cpu": "0.5"}}, {"limits": {"cpu": "500m"}})
    assert not is_subset({"limits": {"cpu": "1"}}, {"limits": {"cpu": "500m"}})
    assert not is_subset({"image": "0.5"}, {"image": "500m"})


def test_positional_lists_must_match_in_length() -> None:
    assert not is_subset({"args": ["a"]}, {"args": ["a", "b"]})
    assert is_subset({"args": ["a", "b"]}, {"args": ["a", "b"]})
