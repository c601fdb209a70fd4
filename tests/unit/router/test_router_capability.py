"""Routing by capability as a specification: tools, logprobs and context go to a tier that can serve them, within
residency; otherwise a 400 that says why (tiered_router/capability.py, decision.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tiered_router.capability import Needs, request_needs, upstream_gap
from tiered_router.classify import RouteClassifier
from tiered_router.config import RouterConfig, parse_config
from tiered_router.decision import Decision, Reason, RoutingRequest, decide
from tiered_router.encoders import load_encoder

LOCAL_CAPS = {"tools": False, "logprobs": False, "contextLength": 2048}
SIMPLE = "say hello in french"  # keyword route to the local tier
PII = "say hello to jane.doe@example.com"


def make_config(namespace_class: str = "restricted", cloud_caps: dict[str, Any] | None = None,
                **overrides: Any) -> RouterConfig:
    cloud: dict[str, Any] = {"name": "gpt", "kind": "cloud", "baseURL": "http://127.0.0.1:2/v1", "model": "big",
                             "region": "eu-west-1"}
    if cloud_caps is not None:
        cloud["capabilities"] = cloud_caps
    return parse_config({
        "policy": "p",
        "tiers": [{"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny",
                   "capabilities": LOCAL_CAPS}, cloud],
        "defaultTier": "gpt",
        "routes": [{"name": "simple", "tier": "slm", "keywords": ["hello"], "examples": ["say hi"]}],
        "residency": {"namespaceClass": namespace_class},
        **overrides,
    })


def run(config: RouterConfig, prompt: str = SIMPLE, needs: Needs | None = None, input_tokens: int = 10,
        pinned: str | None = None) -> Decision:
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    return decide(config, clf, RoutingRequest(text=prompt, model="auto", pinned_tier=pinned,
                                              input_tokens=input_tokens, needs=needs or Needs()))


@pytest.mark.parametrize(("needs", "tokens", "reason"), [
    (Needs(tools=True), 10, Reason.TOOLS_UNSUPPORTED),
    (Needs(logprobs=True), 10, Reason.LOGPROBS_UNSUPPORTED),
    (Needs(), 2048, Reason.CONTEXT_TOO_LONG),
    (Needs(max_tokens=2000), 100, Reason.CONTEXT_TOO_LONG),
])
def test_a_request_the_local_tier_cannot_serve_goes_to_a_tier_that_can(needs: Needs, tokens: int,
                                                                       reason: Reason) -> None:
    d = run(make_config(), needs=needs, input_tokens=tokens)
    assert (d.tier, d.route, d.reason) == ("gpt", "simple", reason)
    assert "slm" not in d.chain


def test_what_the_local_tier_can_serve_stays_local() -> None:
    d = run(make_config(), needs=Needs(max_tokens=1000), input_tokens=1000)
    assert (d.tier, d.reason) == ("slm", Reason.KEYWORD_MATCHED)


def test_capability_never_overrides_residency_pii_with_tools_is_a_400_that_says_why() -> None:
    d = run(make_config(), prompt=PII, needs=Needs(tools=True))
    assert d.rejected and d.status == 400 and d.reason is Reason.NO_CAPABLE_TIER
    assert "slm cannot call tools" in d.message and "gpt: PiiKeptLocal" in d.message
    assert d.pii == ("email",)


def test_local_only_namespace_with_a_long_context_is_a_400() -> None:
    d = run(make_config("local-only"), input_tokens=5000)
    assert d.rejected and d.status == 400 and d.reason is Reason.NO_CAPABLE_TIER
    assert "slm has a smaller context window" in d.message and "gpt: ResidencyLocalOnly" in d.message


def test_a_cloud_tier_without_tools_leaves_no_tier_for_a_tool_call() -> None:
    d = run(make_config(cloud_caps={"tools": False}), needs=Needs(tools=True))
    assert d.rejected and d.status == 400 and "gpt cannot call tools" in d.message


def test_a_cloud_context_limit_is_honoured() -> None:
    config = make_config(cloud_caps={"contextLength": 8000})
    assert run(config, input_tokens=7000).tier == "gpt"
    d = run(config, input_tokens=9000)
    assert d.rejected and d.status == 400 and "gpt has a smaller context window" in d.message


def test_pinning_a_tier_that_cannot_serve_the_request_is_a_400() -> None:
    config = make_config(override={"enabled": True})
    d = run(config, needs=Needs(tools=True), pinned="slm")
    assert d.rejected and d.status == 400 and d.reason is Reason.TOOLS_UNSUPPORTED
    assert "'slm' cannot call tools" in d.message


def test_budget_exhausted_leaves_no_capable_tier() -> None:
    config = make_config(budget={"exhausted": True, "whenExhausted": "localOnly"})
    d = run(config, needs=Needs(logprobs=True))
    assert d.rejected and d.status == 400 and "slm does not return logprobs" in d.message


def test_tiers_without_a_capabilities_block_serve_everything() -> None:
    config = parse_config({"policy": "p", "defaultTier": "slm", "tiers": [
        {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny"}]})
    d = run(config, needs=Needs(tools=True, logprobs=True), input_tokens=10**6)
    assert d.tier == "slm"


@pytest.mark.parametrize(("body", "needs"), [
    ({"tools": [{"type": "function"}]}, Needs(tools=True)),
    ({"tools": [{"type": "function"}], "tool_choice": "none"}, Needs()),
    ({"tools": []}, Needs()),
    ({"functions": [{"name": "f"}]}, Needs(tools=True)),
    ({"logprobs": True, "top_logprobs": 3}, Needs(logprobs=True)),
    ({"logprobs": False}, Needs()),
    ({"logprobs": 2}, Needs(logprobs=True)),
    ({"logprobs": 0}, Needs()),
    ({"max_tokens": 50}, Needs(max_tokens=50)),
    ({"max_tokens": 50, "max_completion_tokens": 70}, Needs(max_tokens=70)),
    ({"max_tokens": True}, Needs()),
])
def test_needs_are_read_from_the_body(body: dict[str, Any], needs: Needs) -> None:
    assert request_needs(body) == needs


@pytest.mark.parametrize(("status", "body", "gap"), [
    (400, b'{"error":{"message":"x","code":"context_length_exceeded"}}', Reason.CONTEXT_TOO_LONG.value),
    (400, b'{"error":{"code":"unsupported_schema_keyword"}}', Reason.RESPONSE_FORMAT_UNSUPPORTED.value),
    (400, b'{"error":{"code":"invalid_request"}}', None),
    (400, b"not json", None),
    (500, b'{"error":{"code":"context_length_exceeded"}}', None),
])
def test_upstream_capability_errors_are_recognised(status: int, body: bytes, gap: str | None) -> None:
    assert upstream_gap(status, body) == gap
