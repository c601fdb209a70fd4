"""Verdicts and the ResidencyCompliant condition for tiers and RoutingPolicies, per residency class."""

from __future__ import annotations

import pytest
from residency_objects import NS, cloud_tier, local_tier

from tiered_operator.residency import namespace_policy, policy_verdict, tier_verdict

LOCAL_ONLY = {"tiered.dev/residency": "local-only"}
RESTRICTED = {"tiered.dev/residency": "restricted"}
UNRESTRICTED = {"tiered.dev/residency": "unrestricted"}


@pytest.mark.parametrize(
    ("ns_labels", "served", "pii_forbidden", "reason"),
    [
        (LOCAL_ONLY, False, True, "ResidencyForbidden"),
        (RESTRICTED, True, True, "CloudWithoutPII"),
        ({}, True, True, "CloudWithoutPII"),
        (UNRESTRICTED, True, False, "CloudAllowed"),
        ({**UNRESTRICTED, "tiered.dev/allowed-regions": "us-east-1"}, False, True, "RegionNotAllowed"),
        ({"tiered.dev/residency": "nope"}, False, True, "ResidencyLabelInvalid"),
    ],
)
def test_cloud_tier_verdict_per_class(ns_labels: dict[str, str], served: bool, pii_forbidden: bool,
                                      reason: str) -> None:
    verdict = tier_verdict(cloud_tier(region="eu-west-1"), namespace_policy(ns_labels))
    assert (verdict.served, verdict.pii_forbidden, verdict.reason) == (served, pii_forbidden, reason)
    cond = verdict.condition()
    assert cond.type == "ResidencyCompliant"
    assert cond.status == ("True" if served else "False")


def test_forbidden_condition_message_names_the_label_and_namespace() -> None:
    msg = tier_verdict(cloud_tier(), namespace_policy(LOCAL_ONLY)).message
    assert "tiered.dev/residency=local-only" in msg
    assert NS in msg


def test_region_message_names_region_label_and_allowed_list() -> None:
    msg = tier_verdict(cloud_tier(region="us-east-1"),
                       namespace_policy({"tiered.dev/allowed-regions": "eu-west-1_eu-central-1"})).message
    assert "us-east-1" in msg
    assert "tiered.dev/allowed-regions" in msg
    assert "[eu-central-1, eu-west-1]" in msg


def test_cloud_tier_without_region_is_refused_where_regions_are_listed() -> None:
    verdict = tier_verdict(cloud_tier(region=None), namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"}))
    assert not verdict.served
    assert verdict.reason == "RegionNotAllowed"
    assert "spec.cloud.region is not set" in verdict.message


@pytest.mark.parametrize("ns_labels", [LOCAL_ONLY, RESTRICTED, UNRESTRICTED, {}])
def test_local_tier_is_compliant_in_every_class(ns_labels: dict[str, str]) -> None:
    verdict = tier_verdict(local_tier(), namespace_policy(ns_labels))
    assert verdict.served
    assert verdict.reason == "LocalTier"


def _tiers() -> dict:
    return {"slm": local_tier("slm"), "gpt": cloud_tier("gpt"), "us": cloud_tier("us", region="us-east-1")}


def test_local_only_policy_drops_cloud_tiers_and_moves_the_default() -> None:
    verdict = policy_verdict("hybrid", NS, ["gpt", "us", "slm"], "gpt", _tiers(), namespace_policy(LOCAL_ONLY))
    assert verdict.served == ("slm",)
    assert set(verdict.dropped) == {"gpt", "us"}
    assert verdict.default_tier == "slm"
    assert verdict.condition.status == "False"
    assert verdict.condition.reason == "ResidencyForbidden"
    assert "default tier slm instead of gpt" in verdict.condition.message
    assert "tiered.dev/residency=local-only" in verdict.condition.message


def test_region_filter_drops_only_the_tier_outside_the_list() -> None:
    ns = namespace_policy({**UNRESTRICTED, "tiered.dev/allowed-regions": "eu-west-1"})
    verdict = policy_verdict("hybrid", NS, ["gpt", "us", "slm"], "gpt", _tiers(), ns)
    assert verdict.served == ("gpt", "slm")
    assert list(verdict.dropped) == ["us"]
    assert verdict.default_tier == "gpt"
    assert verdict.condition.reason == "RegionNotAllowed"


def test_restricted_policy_is_compliant_and_mentions_pii() -> None:
    verdict = policy_verdict("hybrid", NS, ["gpt", "slm"], "gpt", _tiers(), namespace_policy({}))
    assert verdict.dropped == {}
    assert verdict.condition.status == "True"
    assert verdict.condition.reason == "AllTiersPermitted"
    assert "only requests without PII" in verdict.condition.message


def test_policy_of_only_forbidden_tiers_has_no_permitted_tier() -> None:
    verdict = policy_verdict("cloudy", NS, ["gpt"], "gpt", _tiers(), namespace_policy(LOCAL_ONLY))
    assert verdict.served == ()
    assert verdict.default_tier is None
    assert verdict.condition.reason == "NoPermittedTier"


def test_tiers_that_do_not_exist_yet_are_not_dropped() -> None:
    verdict = policy_verdict("p", NS, ["later", "slm"], "later", {"slm": local_tier()}, namespace_policy(LOCAL_ONLY))
    assert verdict.served == ("later", "slm")
    assert verdict.condition.status == "True"
