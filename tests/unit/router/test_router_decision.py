"""The decision pipeline as a specification: residency matrix, PII actions, budget, overrides, fallback chains.

Routes here select by keyword so the expected route is certain; the classifier is the real one.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tiered_router.classify import RouteClassifier
from tiered_router.config import RouterConfig, TierKind, parse_config
from tiered_router.decision import Decision, Reason, RoutingRequest, decide
from tiered_router.encoders import load_encoder

PII_PROMPT = "please summarise the invoice for jane.doe@example.com"
SIMPLE_PROMPT = "say hello in french"
HARD_PROMPT = "write a legal analysis of this contract"


def make_config(**overrides: Any) -> RouterConfig:
    base: dict[str, Any] = {
        "policy": "p",
        "tiers": [
            {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny",
             "pricing": {"inputPer1M": 0.05, "outputPer1M": 0.1}},
            {"name": "gpt", "kind": "cloud", "baseURL": "http://127.0.0.1:2/v1", "model": "big", "region": "eu-west-1",
             "pricing": {"inputPer1M": 2.5, "outputPer1M": 10}},
        ],
        "defaultTier": "gpt",
        "routes": [
            {"name": "simple", "tier": "slm", "keywords": ["hello"], "examples": ["say hi"]},
            {"name": "legal", "tier": "gpt", "keywords": ["legal"], "examples": ["review this contract"]},
        ],
        "residency": {"namespaceClass": "unrestricted"},
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return parse_config(base)


def run(config: RouterConfig, prompt: str, model: str = "auto", pinned: str | None = None) -> Decision:
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    return decide(config, clf, RoutingRequest(text=prompt, model=model, pinned_tier=pinned, input_tokens=10))


def test_keyword_route_picks_its_tier() -> None:
    d = run(make_config(), SIMPLE_PROMPT)
    assert (d.tier, d.route, d.reason) == ("slm", "simple", Reason.KEYWORD_MATCHED)


def test_legal_route_goes_to_cloud_with_local_fallback() -> None:
    d = run(make_config(), HARD_PROMPT)
    assert d.tier == "gpt" and d.chain == ("gpt", "slm")


@pytest.mark.parametrize("namespace_class", ["local-only", "restricted", "unrestricted"])
@pytest.mark.parametrize("action", ["keepLocal", "redact"])
@pytest.mark.parametrize("prompt", [PII_PROMPT, HARD_PROMPT, PII_PROMPT + " legal"])
def test_residency_matrix_never_lets_restricted_data_reach_the_cloud(
    namespace_class: str, action: str, prompt: str
) -> None:
    config = make_config(residency={"namespaceClass": namespace_class, "pii": {"action": action}})
    d = run(config, prompt)
    has_pii = "@" in prompt
    cloud_in_chain = any(config.tier(n).kind is TierKind.CLOUD for n in d.chain)  # type: ignore[union-attr]
    if namespace_class == "local-only":
        assert not cloud_in_chain
    elif has_pii and (namespace_class == "restricted" or action == "keepLocal"):
        assert not cloud_in_chain and d.tier == "slm"
        assert d.reason in (Reason.PII_KEPT_LOCAL, Reason.KEYWORD_MATCHED, Reason.NO_ROUTE_MATCHED)
    else:
        assert d.tier == "gpt"
    assert d.redact == (has_pii and action == "redact")


def test_pii_kept_local_reason_when_policy_wanted_the_cloud() -> None:
    d = run(make_config(residency={"namespaceClass": "restricted"}), PII_PROMPT + " legal")
    assert (d.tier, d.reason, d.pii) == ("slm", Reason.PII_KEPT_LOCAL, ("email",))


def test_pii_reject_action_rejects_with_400() -> None:
    d = run(make_config(residency={"pii": {"action": "reject"}}), PII_PROMPT)
    assert d.rejected and d.status == 400 and d.reason is Reason.PII_REJECTED


def test_region_outside_allowed_regions_is_never_used() -> None:
    d = run(make_config(residency={"allowedRegions": ["us-east-1"]}), HARD_PROMPT)
    assert d.chain == ("slm",) and d.reason is Reason.REGION_NOT_ALLOWED


def test_budget_exhausted_local_only_keeps_cloud_out_of_the_chain() -> None:
    d = run(make_config(budget={"exhausted": True, "whenExhausted": "localOnly"}), HARD_PROMPT)
    assert d.chain == ("slm",) and d.reason is Reason.BUDGET_LOCAL_ONLY


def test_budget_exhausted_reject_rejects_cloud_bound_requests_only() -> None:
    config = make_config(budget={"exhausted": True, "whenExhausted": "reject"})
    cloud = run(config, HARD_PROMPT)
    assert cloud.rejected and cloud.status == 429 and cloud.reason is Reason.BUDGET_REJECTED
    local = run(config, SIMPLE_PROMPT)
    assert local.tier == "slm" and local.chain == ("slm",)


def test_budget_not_exhausted_changes_nothing() -> None:
    assert run(make_config(budget={"monthlyUSD": 10.0}), HARD_PROMPT).tier == "gpt"


def test_unknown_model_is_404() -> None:
    d = run(make_config(), SIMPLE_PROMPT, model="gpt-4o")
    assert d.rejected and d.status == 404 and d.reason is Reason.UNKNOWN_MODEL


def test_route_name_as_model_forces_the_route() -> None:
    d = run(make_config(), HARD_PROMPT, model="simple")
    assert (d.tier, d.route, d.reason) == ("slm", "simple", Reason.ROUTE_FORCED)


def test_pinning_a_tier_needs_the_override_policy() -> None:
    assert run(make_config(), SIMPLE_PROMPT, pinned="gpt").status == 403
    d = run(make_config(override={"enabled": True}), SIMPLE_PROMPT, pinned="gpt")
    assert (d.tier, d.chain, d.reason) == ("gpt", ("gpt",), Reason.TIER_PINNED)


def test_override_never_relaxes_residency() -> None:
    config = make_config(override={"enabled": True}, residency={"namespaceClass": "restricted"})
    d = run(config, PII_PROMPT, pinned="gpt")
    assert d.rejected and d.status == 403 and d.reason is Reason.RESIDENCY_FORBIDDEN
    d2 = run(config, PII_PROMPT, model="gpt")
    assert d2.rejected and d2.status == 403


def test_unknown_pinned_tier_is_404() -> None:
    d = run(make_config(override={"enabled": True}), SIMPLE_PROMPT, pinned="nope")
    assert d.status == 404


def test_override_allowed_tiers_limit() -> None:
    config = make_config(override={"enabled": True, "allowedTiers": ["slm"]})
    assert run(config, SIMPLE_PROMPT, pinned="gpt").status == 403
    assert run(config, SIMPLE_PROMPT, pinned="slm").tier == "slm"


def test_no_route_goes_to_default_tier() -> None:
    d = run(make_config(), "zzzz qqqq")
    assert d.tier == "gpt" and d.route is None and d.reason is Reason.NO_ROUTE_MATCHED


def test_retries_bound_the_chain_length() -> None:
    config = make_config(
        tiers=[
            {"name": f"t{i}", "kind": "local", "baseURL": f"http://127.0.0.1:{i + 1}/v1", "model": "m"}
            for i in range(4)
        ],
        defaultTier="t0",
        routes=[],
        fallback={"retries": 2},
    )
    assert run(config, "anything").chain == ("t0", "t1", "t2")


def test_tier_order_sets_the_fallback_order() -> None:
    config = make_config(tierOrder=["gpt", "slm"], residency={"namespaceClass": "unrestricted"})
    assert run(config, SIMPLE_PROMPT).chain == ("slm", "gpt")
    config2 = make_config(tierOrder=["gpt", "slm"], defaultTier="slm", routes=[])
    assert run(config2, "x").chain == ("slm", "gpt")


def _random_configs() -> list[tuple[str, str, bool, bool, str]]:
    classes = ["local-only", "restricted", "unrestricted"]
    actions = ["keepLocal", "redact"]
    return list(itertools.product(classes, actions, [True, False], [True, False], ["slm", "gpt"]))


@pytest.mark.parametrize(("ns", "action", "exhausted", "forbid_flag", "default"), _random_configs())
def test_fallback_chain_never_includes_a_forbidden_tier(
    ns: str, action: str, exhausted: bool, forbid_flag: bool, default: str
) -> None:
    tiers = [
        {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "a"},
        {"name": "gpt", "kind": "cloud", "baseURL": "http://127.0.0.1:2/v1", "model": "b", "piiForbidden": forbid_flag},
        {"name": "edge", "kind": "local", "baseURL": "http://127.0.0.1:3/v1", "model": "c", "piiForbidden": True},
    ]
    config = make_config(
        tiers=tiers,
        defaultTier=default,
        routes=[],
        fallback={"retries": 5},
        residency={"namespaceClass": ns, "pii": {"action": action}},
        budget={"exhausted": exhausted},
    )
    d = run(config, PII_PROMPT)
    pii_sensitive = not (action == "redact" and ns == "unrestricted")
    for name in d.chain:
        tier = config.tier(name)
        assert tier is not None
        if tier.kind is TierKind.CLOUD:
            assert ns != "local-only" and not exhausted
            assert not (pii_sensitive and (ns == "restricted" or tier.pii_forbidden))
        if pii_sensitive:
            assert not tier.pii_forbidden
