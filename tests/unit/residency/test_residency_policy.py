"""Reading a Namespace's residency labels: defaults, region lists, and failing closed on bad values."""

from __future__ import annotations

import pytest

from tiered_operator.residency import namespace_policy
from tiered_router.config import ResidencyClass


def test_absent_label_means_restricted_and_any_region() -> None:
    policy = namespace_policy({})
    assert policy.residency is ResidencyClass.RESTRICTED
    assert policy.allowed_regions is None
    assert policy.region_allowed("us-east-1")
    assert policy.region_allowed(None)
    assert "absent" in policy.residency_source


@pytest.mark.parametrize("value", ["local-only", "restricted", "unrestricted"])
def test_each_class_is_read_verbatim(value: str) -> None:
    assert namespace_policy({"tiered.dev/residency": value}).residency.value == value


def test_unknown_class_fails_closed_to_local_only_and_is_reported() -> None:
    policy = namespace_policy({"tiered.dev/residency": "strict"})
    assert policy.residency is ResidencyClass.LOCAL_ONLY
    assert policy.residency_label_invalid
    assert "tiered.dev/residency='strict'" in policy.problems[0]


def test_label_regions_use_underscore_or_dot_because_labels_forbid_commas() -> None:
    assert namespace_policy({"tiered.dev/allowed-regions": "eu-west-1_eu-central-1"}).allowed_regions == {
        "eu-west-1", "eu-central-1"}
    assert namespace_policy({"tiered.dev/allowed-regions": "eu-west-1.westeurope"}).allowed_regions == {
        "eu-west-1", "westeurope"}


def test_annotation_regions_may_use_commas() -> None:
    policy = namespace_policy({}, {"tiered.dev/allowed-regions": "eu-west-1, eu-central-1"})
    assert policy.allowed_regions == {"eu-west-1", "eu-central-1"}


def test_label_and_annotation_together_allow_only_their_intersection() -> None:
    policy = namespace_policy(
        {"tiered.dev/allowed-regions": "eu-west-1_us-east-1"}, {"tiered.dev/allowed-regions": "eu-west-1"}
    )
    assert policy.allowed_regions == {"eu-west-1"}
    assert not policy.region_allowed("us-east-1")


def test_empty_region_list_allows_no_region_and_unset_region_is_not_allowed() -> None:
    policy = namespace_policy({"tiered.dev/allowed-regions": ""})
    assert policy.allowed_regions == frozenset()
    assert not policy.region_allowed("eu-west-1")
    assert not namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"}).region_allowed(None)


def test_non_region_tokens_allow_nothing_and_are_reported() -> None:
    policy = namespace_policy({}, {"tiered.dev/allowed-regions": "eu-west-1,mars/olympus"})
    assert policy.allowed_regions == {"eu-west-1"}
    assert any("mars/olympus" in p for p in policy.problems)


def test_fingerprint_changes_with_the_effective_policy_only() -> None:
    a = namespace_policy({"tiered.dev/residency": "restricted"})
    b = namespace_policy({})
    c = namespace_policy({"tiered.dev/residency": "local-only"})
    d = namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"})
    assert a.fingerprint() == b.fingerprint()
    assert len({a.fingerprint(), c.fingerprint(), d.fingerprint()}) == 3
