"""RoutingPolicies + InferenceTiers → the router's own config schema (validated by the router's parser)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile.router_config import (
    NamespacePolicy,
    build_policy_configmap,
    build_router_configmap,
    compile_policy,
    tier_router_config,
)
from tiered_operator.settings import OperatorSettings
from tiered_router.config import load_config


def _tiers(bodies: Any) -> dict[str, InferenceTier]:
    local = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml")))
    cloud = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-cloud.yaml")))
    return {"slm-edge": local, "gpt-cloud": cloud}


def _sample_policy(bodies: Any, **status: Any) -> RoutingPolicy:
    body = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    if status:
        body["status"] = status
    return RoutingPolicy.from_k8s(body)


def test_sample_policy_compiles_to_a_config_the_router_loads(bodies: Any, settings: OperatorSettings) -> None:
    compiled = compile_policy(_sample_policy(bodies), _tiers(bodies), NamespacePolicy(), settings)
    assert compiled.error is None and compiled.text is not None and compiled.config_hash
    config = load_config(compiled.text)  # exactly what the router does with the mounted file
    assert config.policy == "hybrid" and config.namespace == "team-a"
    assert [t.name for t in config.chain()] == ["slm-edge", "gpt-cloud"]
    local, cloud = config.tiers
    assert local.base_url == "http://slm-edge.team-a.svc:8080/v1" and local.model == "slm-edge"
    assert not local.pii_forbidden
    assert cloud.base_url == "https://api.openai.com/v1" and cloud.model == "gpt-4o-mini"
    assert cloud.api_key_file == "/var/run/tiered/secrets/gpt-cloud/api-key" and cloud.pii_forbidden
    assert cloud.pricing.input_per_1m == 2.5 and cloud.pricing.output_per_1m == 10.0
    assert cloud.region == "us-east-1"
    routes = {r.name: r for r in config.routes}
    assert routes["reasoning"].threshold == 0.6 and routes["smalltalk"].max_input_tokens == 2048
    assert routes["summarize"].keywords == ["tl;dr", "summarize"]
    assert config.classifier.default_threshold == 0.5
    assert [e.value for e in config.residency.pii.entities] == ["email", "phone", "creditCard", "iban"]
    assert config.residency.pii.action.value == "keepLocal"
    assert config.fallback.timeout_ms == 20000 and [t.value for t in config.fallback.on] == [
        "5xx",
        "timeout",
        "connect",
    ]
    assert config.budget.monthly_usd == 500.0 and not config.budget.exhausted
    assert config.residency.namespace_class.value == "restricted"


def test_hash_is_stable_and_changes_with_the_policy(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    a = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    b = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    body = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    body["spec"]["fallback"]["retries"] = 2
    c = compile_policy(RoutingPolicy.from_k8s(body), tiers, NamespacePolicy(), settings)
    assert a.config_hash == b.config_hash != c.config_hash


def test_missing_tier_is_named_and_nothing_is_rendered(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    del tiers["gpt-cloud"]
    compiled = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    assert compiled.missing_tiers == ("gpt-cloud",) and compiled.text is None
    assert build_policy_configmap(_sample_policy(bodies), compiled) is None


def test_budget_exhaustion_reported_by_the_budget_loop_flips_the_config(
    bodies: Any, settings: OperatorSettings
) -> None:
    cond = {
        "type": "BudgetOK",
        "status": "False",
        "reason": "BudgetExhausted",
        "message": "spent",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    compiled = compile_policy(_sample_policy(bodies, conditions=[cond]), _tiers(bodies), NamespacePolicy(), settings)
    assert compiled.config is not None and compiled.config.budget.exhausted


def test_namespace_labels_reach_the_router(bodies: Any, settings: OperatorSettings) -> None:
    ns = NamespacePolicy.from_labels(
        {"tiered.dev/residency": "unrestricted", "tiered.dev/allowed-regions": "us-east-1_eu-west-1"}
    )
    compiled = compile_policy(_sample_policy(bodies), _tiers(bodies), ns, settings)
    assert compiled.config is not None
    assert compiled.config.residency.namespace_class.value == "unrestricted"
    assert compiled.config.residency.allowed_regions == ["eu-west-1", "us-east-1"]
    # an unknown class is read as the strictest one, never as permission
    assert NamespacePolicy.from_labels({"tiered.dev/residency": "bogus"}).residency == "local-only"
    assert NamespacePolicy.from_labels(None) == NamespacePolicy()


def test_local_only_namespace_without_a_local_tier_is_an_invalid_config(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = {"gpt-cloud": _tiers(bodies)["gpt-cloud"]}
    policy = make_policy(tiers=["gpt-cloud"])
    local_only = NamespacePolicy.from_labels({"tiered.dev/residency": "local-only"})
    compiled = compile_policy(policy, tiers, local_only, settings)
    assert compiled.text is None and compiled.error is not None and "local-only" in compiled.error


def test_tier_sidecar_config_uses_the_policy_whose_default_it_is_and_mounts_its_cloud_keys(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = _tiers(bodies)
    hybrid = _sample_policy(bodies)
    other = make_policy("aaa-cloud-first", tiers=["gpt-cloud", "slm-edge"], default="gpt-cloud")
    policies = [other, hybrid]
    compiled = [compile_policy(p, tiers, NamespacePolicy(), settings) for p in policies]
    trc = tier_router_config(tiers["slm-edge"], compiled, policies, tiers, NamespacePolicy(), settings)
    assert trc.primary_policy == "hybrid"  # its default tier is this tier, although "aaa…" sorts first
    assert json.loads(trc.data["router.json"])["policy"] == "hybrid"
    assert set(trc.data) == {"router.json", "policy-hybrid.json", "policy-aaa-cloud-first.json"}
    assert [(m.tier, m.secret, m.key) for m in trc.sidecar.key_mounts] == [("gpt-cloud", "openai-api-key", "api-key")]
    cm = build_router_configmap(tiers["slm-edge"], trc)
    assert cm["metadata"]["name"] == "slm-edge-router" and cm["data"] == trc.data
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "InferenceTier"


def test_tier_without_policy_gets_a_passthrough_config_and_the_sidecar_ignores_its_content(
    bodies: Any, settings: OperatorSettings
) -> None:
    tier = _tiers(bodies)["slm-edge"]
    trc = tier_router_config(tier, [], [], {}, NamespacePolicy(), settings)
    config = load_config(trc.data["router.json"])
    assert [t.name for t in config.tiers] == ["slm-edge"] and config.default_tier == "slm-edge"
    assert trc.primary_policy is None and trc.sidecar.key_mounts == ()
    local_only = NamespacePolicy.from_labels({"tiered.dev/residency": "local-only"})
    other = tier_router_config(tier, [], [], {}, local_only, settings)
    assert other.data != trc.data and other.sidecar == trc.sidecar  # new config, same pod template


def test_gateway_mode_policies_are_not_compiled_into_sidecars(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = _tiers(bodies)
    gw = make_policy("gw", tiers=["slm-edge"], router={"mode": "gateway"})
    compiled = [compile_policy(gw, tiers, NamespacePolicy(), settings)]
    trc = tier_router_config(tiers["slm-edge"], compiled, [gw], tiers, NamespacePolicy(), settings)
    assert trc.primary_policy is None


def test_policy_configmap_is_owned_by_the_policy(bodies: Any, settings: OperatorSettings) -> None:
    policy = _sample_policy(bodies)
    compiled = compile_policy(policy, _tiers(bodies), NamespacePolicy(), settings)
    cm = build_policy_configmap(policy, compiled)
    assert cm is not None and cm["metadata"]["name"] == "hybrid-policy"
    assert cm["data"] == {"router.json": compiled.text}
    assert cm["metadata"]["ownerReferences"][0] == {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "name": "hybrid",
        "uid": "uid-hybrid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert cm["metadata"]["labels"]["tiered.dev/policy"] == "hybrid"


def test_encoder_model_on_a_claim_and_default_openai_base_url(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = _tiers(bodies)
    cloud_body = bodies.cloud_tier("gpt-cloud")  # provider openai without baseURL
    tiers["gpt-cloud"] = InferenceTier.from_k8s(cloud_body)
    policy = make_policy(
        tiers=["slm-edge", "gpt-cloud"],
        classifier={"encoder": {"type": "onnx", "path": "pvc://encoders/minilm"}, "threshold": "0.7"},
    )
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    assert compiled.config is not None, compiled.error
    assert compiled.config.classifier.encoder.path == "/models/encoders/minilm"
    assert compiled.config.classifier.default_threshold == 0.7
    auto = make_policy(tiers=["slm-edge", "gpt-cloud"], classifier={"targetOutOfScopeRate": "0.9"})
    compiled_auto = compile_policy(auto, tiers, NamespacePolicy(), settings)
    assert compiled_auto.config is not None, compiled_auto.error
    assert compiled_auto.config.classifier.default_threshold == "auto"
    assert compiled_auto.config.classifier.target_out_of_scope_rate == 0.9
    assert compiled.config.tiers[1].base_url == "https://api.openai.com/v1"
    assert compiled.config.tiers[1].region == "eu-west-1"
    trc = tier_router_config(tiers["slm-edge"], [compiled], [policy], tiers, NamespacePolicy(), settings)
    assert trc.sidecar.pvc_claims == ("encoders",)  # the Deployment mounts it into the router container


@pytest.mark.parametrize("encoder", ["minilm", "lexical"])
def test_bundled_encoders_render_to_the_router_kind_with_no_claim(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy], encoder: str
) -> None:
    """minilm and lexical ship in the router image: the policy names them, the router config carries the kind, and
    no volume is mounted for them."""
    tiers = _tiers(bodies)
    policy = make_policy(tiers=["slm-edge", "gpt-cloud"], classifier={"encoder": {"type": encoder}, "threshold": "0.4"})
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    assert compiled.config is not None, compiled.error
    assert compiled.config.classifier.encoder.kind.value == encoder
    assert compiled.config.classifier.encoder.path is None
    trc = tier_router_config(tiers["slm-edge"], [compiled], [policy], tiers, NamespacePolicy(), settings)
    assert trc.sidecar.pvc_claims == ()


def test_budget_flip_and_route_edit_change_the_configmap_but_not_the_pod_template(
    bodies: Any, settings: OperatorSettings
) -> None:
    """The router hot-reloads its mounted config: nothing a policy edit changes may reach the pod template, or
    every model pod of the policy would restart (and reload its model) on a budget flip."""
    from tiered_operator.reconcile.deployment import build_deployment

    tiers = _tiers(bodies)
    exhausted = {"type": "BudgetOK", "status": "False", "reason": "BudgetExhausted", "message": "spent",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    edited = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    edited["spec"]["routes"][0]["examples"] = ["a route edited by hand", *edited["spec"]["routes"][0]["examples"]]
    variants = [_sample_policy(bodies), _sample_policy(bodies, conditions=[exhausted]), RoutingPolicy.from_k8s(edited)]
    rendered = []
    for policy in variants:
        compiled = [compile_policy(policy, tiers, NamespacePolicy(), settings)]
        trc = tier_router_config(tiers["slm-edge"], compiled, [policy], tiers, NamespacePolicy(), settings)
        rendered.append((trc.data, build_deployment(tiers["slm-edge"], trc.sidecar, settings)))
    datas, deployments = zip(*rendered, strict=True)
    assert len({json.dumps(d, sort_keys=True) for d in datas}) == 3  # three different router configs
    assert all(d == deployments[0] for d in deployments)  # one Deployment


def test_each_tier_carries_what_it_can_serve(bodies: Any, settings: OperatorSettings) -> None:
    """llama.cpp: no tools, no logprobs, its model.contextLength; vLLM: logprobs too; cloud: its capabilities
    block, everything without one."""
    tiers = _tiers(bodies)
    vllm_body = bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml"))
    vllm_body["metadata"]["name"] = "vllm"
    vllm_body["spec"]["local"].update(runtime="vllm", model={"source": "pvc://models/m", "format": "safetensors",
                                                             "contextLength": 8192})
    capped = bodies.with_meta(bodies.sample("inferencetier-cloud.yaml"))
    capped["metadata"]["name"] = "capped"
    capped["spec"]["cloud"]["capabilities"] = {"contextLength": 16000, "tools": False}
    bare = bodies.with_meta(bodies.sample("inferencetier-cloud.yaml"))
    bare["metadata"]["name"] = "bare"
    del bare["spec"]["cloud"]["capabilities"]
    tiers.update(vllm=InferenceTier.from_k8s(vllm_body), capped=InferenceTier.from_k8s(capped),
                 bare=InferenceTier.from_k8s(bare))
    policy = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    policy["spec"]["tiers"] += ["vllm", "capped", "bare"]
    compiled = compile_policy(RoutingPolicy.from_k8s(policy), tiers, NamespacePolicy(), settings)
    assert compiled.text is not None, compiled.error
    caps = {t.name: t.capabilities for t in load_config(compiled.text).tiers}
    local_ctx = tiers["slm-edge"].spec.local.model.context_length  # type: ignore[union-attr]
    assert (caps["slm-edge"].tools, caps["slm-edge"].logprobs, caps["slm-edge"].context_length) == (
        False, False, local_ctx)
    assert (caps["vllm"].tools, caps["vllm"].logprobs, caps["vllm"].context_length) == (False, True, 8192)
    assert (caps["gpt-cloud"].tools, caps["gpt-cloud"].logprobs, caps["gpt-cloud"].context_length) == (
        True, True, 128000)  # the sample's capabilities block
    assert (caps["capped"].tools, caps["capped"].logprobs, caps["capped"].context_length) == (False, True, 16000)
    assert (caps["bare"].tools, caps["bare"].logprobs, caps["bare"].context_length) == (True, True, None)


def test_spillover_is_on_by_default_and_follows_the_policy(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    default = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    assert default.config is not None
    assert (default.config.spillover.enabled, default.config.spillover.max_local_wait_ms) == (True, 5000)
    body = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    body["spec"]["spillover"] = {"enabled": False, "maxLocalWaitMs": 250}
    off = compile_policy(RoutingPolicy.from_k8s(body), tiers, NamespacePolicy(), settings)
    assert off.config is not None
    assert (off.config.spillover.enabled, off.config.spillover.max_local_wait_ms) == (False, 250)


def test_a_local_tiers_slo_reaches_the_router_for_spillover(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    slo = tiers["slm-edge"].spec.slo
    assert slo is not None
    compiled = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    assert compiled.config is not None
    local = compiled.config.tier("slm-edge")
    assert local is not None and local.slo is not None
    assert (local.slo.latency_p95_ms, local.slo.metric.value) == (slo.latency_p95_ms, slo.metric)
    no_slo = bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml"))
    no_slo["spec"].pop("slo")
    no_slo["spec"].pop("autoscaling", None)
    tiers["slm-edge"] = InferenceTier.from_k8s(no_slo)
    compiled = compile_policy(_sample_policy(bodies), tiers, NamespacePolicy(), settings)
    assert compiled.config is not None and compiled.config.tier("slm-edge").slo is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("strict", "expected"), [(None, True), (False, False), (True, True)])
def test_pii_strict_mode_reaches_the_router(
    bodies: Any, settings: OperatorSettings, strict: bool | None, expected: bool
) -> None:
    body = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    if strict is not None:
        body["spec"]["residency"]["pii"]["strict"] = strict
    compiled = compile_policy(RoutingPolicy.from_k8s(body), _tiers(bodies), NamespacePolicy(), settings)
    assert compiled.text is not None
    config = load_config(compiled.text)
    assert config.residency.pii.strict is strict  # unset stays unset: the namespace class decides
    assert config.residency.pii_strict is expected  # restricted namespace (no label)
