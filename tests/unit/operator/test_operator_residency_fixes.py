"""Residency in the operator's own outputs: a dropped cloud tier's key is not mounted, and the ResidencyCompliant
conditions are exactly the residency package's verdicts (the functions the admission webhook uses)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile.deployment import build_deployment
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy, tier_router_config
from tiered_operator.reconcile.status import TierObservation, policy_status, tier_status
from tiered_operator.residency import namespace_policy, policy_verdict, tier_verdict
from tiered_operator.settings import OperatorSettings

NAMESPACES = {
    "default (restricted)": ({}, {}),
    "unrestricted": ({"tiered.dev/residency": "unrestricted"}, {}),
    "local-only": ({"tiered.dev/residency": "local-only"}, {}),
    "invalid label": ({"tiered.dev/residency": "bogus"}, {}),
    "region label, other region": ({"tiered.dev/allowed-regions": "us-east-1"}, {}),
    "region annotation only": ({}, {"tiered.dev/allowed-regions": "us-east-1,eu-central-1"}),
    "region annotation allows": ({}, {"tiered.dev/allowed-regions": "eu-west-1"}),
}


def _tiers(bodies: Any) -> dict[str, InferenceTier]:
    return {
        "slm": InferenceTier.from_k8s(bodies.local_tier("slm")),
        "eu": InferenceTier.from_k8s(bodies.cloud_tier("eu", region="eu-west-1")),
        "us": InferenceTier.from_k8s(bodies.cloud_tier("us", region="us-east-1")),
    }


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}


def test_cloud_tier_dropped_by_residency_gets_no_secret_mount(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = _tiers(bodies)
    policy = make_policy("hybrid", tiers=["slm", "eu", "us"], default="slm")
    ns = NamespacePolicy.from_labels({"tiered.dev/allowed-regions": "eu-west-1"})
    compiled = compile_policy(policy, tiers, ns, settings)
    assert compiled.config is not None and [t.name for t in compiled.config.tiers] == ["slm", "eu"]
    trc = tier_router_config(tiers["slm"], [compiled], [policy], tiers, ns, settings)
    assert [(m.tier, m.secret) for m in trc.sidecar.key_mounts] == [("eu", "eu-key")]
    pod = build_deployment(tiers["slm"], trc.sidecar, settings)["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"eu-key"}  # never us-key: the router may not call "us", so the pod holds no key for it
    mounts = [m["mountPath"] for c in pod["containers"] for m in c.get("volumeMounts", [])]
    assert not any("/us" in m for m in mounts if m.startswith("/var/run/tiered/secrets"))

    # local-only: every cloud tier is dropped, no key at all; unrestricted: both keys
    local_only = NamespacePolicy.from_labels({"tiered.dev/residency": "local-only"})
    compiled = compile_policy(policy, tiers, local_only, settings)
    assert tier_router_config(tiers["slm"], [compiled], [policy], tiers, local_only, settings).sidecar.key_mounts == ()
    open_ns = NamespacePolicy.from_labels({"tiered.dev/residency": "unrestricted"})
    compiled = compile_policy(policy, tiers, open_ns, settings)
    mounts_open = tier_router_config(tiers["slm"], [compiled], [policy], tiers, open_ns, settings).sidecar.key_mounts
    assert [m.tier for m in mounts_open] == ["eu", "us"]


@pytest.mark.parametrize("case", sorted(NAMESPACES))
def test_tier_residency_condition_is_the_webhooks_verdict(
    case: str, bodies: Any, settings: OperatorSettings
) -> None:
    ns_labels, ns_annotations = NAMESPACES[case]
    ns = NamespacePolicy.from_labels(ns_labels, ns_annotations)
    for tier in _tiers(bodies).values():
        got = _conds(tier_status(tier, TierObservation(namespace=ns), None, settings, "T"))["ResidencyCompliant"]
        want = tier_verdict(tier, namespace_policy(ns_labels, ns_annotations)).condition()
        assert got == (want.status, want.reason, want.message), (case, tier.metadata.name)
        if tier.spec.cloud is not None and want.status == "False":  # a forbidden cloud tier is not Ready either
            ready = _conds(tier_status(tier, TierObservation(namespace=ns), None, settings, "T"))["Ready"]
            assert ready[:2] == ("False", want.reason)


@pytest.mark.parametrize("case", sorted(NAMESPACES))
def test_policy_residency_condition_is_the_webhooks_verdict(
    case: str, bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    ns_labels, ns_annotations = NAMESPACES[case]
    ns = NamespacePolicy.from_labels(ns_labels, ns_annotations)
    tiers = _tiers(bodies)
    policy = make_policy("hybrid", tiers=["eu", "slm", "us"], default="eu")
    compiled = compile_policy(policy, tiers, ns, settings)
    got = _conds(policy_status(policy, compiled, tiers, ns, None, None, "T"))["ResidencyCompliant"]
    want = policy_verdict("hybrid", "team-a", ["eu", "slm", "us"], "eu", tiers,
                          namespace_policy(ns_labels, ns_annotations)).condition
    assert got == (want.status, want.reason, want.message), case


def test_allowed_regions_annotation_reaches_the_router_config(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    """The annotation form of allowed-regions (commas allowed) is read by the operator as by the webhook."""
    tiers = _tiers(bodies)
    policy = make_policy("hybrid", tiers=["slm", "eu", "us"], default="slm")
    ns = NamespacePolicy.from_labels({}, {"tiered.dev/allowed-regions": "us-east-1,eu-central-1"})
    compiled = compile_policy(policy, tiers, ns, settings)
    assert compiled.config is not None
    assert [t.name for t in compiled.config.tiers] == ["slm", "us"]
    assert compiled.config.residency.allowed_regions == ["eu-central-1", "us-east-1"]
