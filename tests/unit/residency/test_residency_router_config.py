"""`apply_residency`: the router config the operator renders never contains a tier the namespace forbids."""

from __future__ import annotations

import re

import pytest
from residency_objects import router_config

from tiered_operator.residency import NoPermittedTier, apply_residency, namespace_policy
from tiered_router.config import ResidencyClass, TierKind


def test_local_only_namespace_config_has_no_cloud_tier_anywhere() -> None:
    out = apply_residency(router_config(), namespace_policy({"tiered.dev/residency": "local-only"}))
    assert [t.name for t in out.tiers] == ["slm"]
    assert all(t.kind is TierKind.LOCAL for t in out.tiers)
    assert out.tier_order == ["slm"]
    assert out.default_tier == "slm"
    assert {r.name: r.tier for r in out.routes} == {"chat": "slm", "reason": "slm", "code": "slm"}
    assert out.override.allowed_tiers == ["slm"]
    assert out.residency.namespace_class is ResidencyClass.LOCAL_ONLY
    assert [t.name for t in out.chain()] == ["slm"]


def test_restricted_namespace_keeps_cloud_tiers_but_forbids_them_pii() -> None:
    out = apply_residency(router_config(), namespace_policy({}))
    assert [t.name for t in out.tiers] == ["slm", "gpt", "us"]
    assert {t.name: t.pii_forbidden for t in out.tiers} == {"slm": False, "gpt": True, "us": True}
    assert out.residency.namespace_class is ResidencyClass.RESTRICTED
    assert out.residency.allowed_regions is None


def test_unrestricted_namespace_leaves_the_compiled_flags_alone() -> None:
    out = apply_residency(router_config(), namespace_policy({"tiered.dev/residency": "unrestricted"}))
    assert {t.name: t.pii_forbidden for t in out.tiers} == {"slm": False, "gpt": False, "us": False}
    assert out.residency.namespace_class is ResidencyClass.UNRESTRICTED


def test_allowed_regions_drop_other_regions_and_are_written_for_the_router() -> None:
    ns = namespace_policy({"tiered.dev/residency": "unrestricted", "tiered.dev/allowed-regions": "eu-west-1"})
    out = apply_residency(router_config(), ns)
    assert [t.name for t in out.chain()] == ["gpt", "slm"]
    assert out.default_tier == "gpt"
    assert {r.name: r.tier for r in out.routes}["code"] == "gpt"
    assert out.residency.allowed_regions == ["eu-west-1"]
    assert out.override.allowed_tiers == ["slm", "gpt"]


def test_policy_settings_outside_residency_survive() -> None:
    config = router_config(residency={"pii": {"action": "redact", "entities": ["email"]}}, maxBodyBytes=4096)
    out = apply_residency(config, namespace_policy({"tiered.dev/residency": "local-only"}))
    assert out.residency.pii.action.value == "redact"
    assert out.max_body_bytes == 4096
    assert out.policy == "hybrid"


def test_only_cloud_tiers_in_local_only_namespace_raise_with_the_label_named() -> None:
    config = router_config(
        tiers=[{"name": "gpt", "kind": "cloud", "baseURL": "https://x.example/v1", "model": "m"}],
        tierOrder=None, defaultTier="gpt", routes=[], override={},
    )
    with pytest.raises(NoPermittedTier, match=re.escape("tiered.dev/residency=local-only")):
        apply_residency(config, namespace_policy({"tiered.dev/residency": "local-only"}))


def test_result_is_idempotent() -> None:
    ns = namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"})
    once = apply_residency(router_config(), ns)
    assert apply_residency(once, ns) == once
