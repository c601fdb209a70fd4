"""The namespace's base NetworkPolicy, each tier's cloud egress allowances, and CiliumNetworkPolicies, field by
field."""

from __future__ import annotations

import json

from residency_objects import NS, cloud_tier, local_tier

from tiered_operator.residency import (
    EgressSubject,
    NetworkOptions,
    build_base_network_policy,
    build_cilium_policies,
    build_network_policies,
    namespace_policy,
)
from tiered_operator.residency.cilium import cilium_served
from tiered_operator.settings import OperatorSettings

SELECTOR = {"tiered.dev/tier": "slm", "tiered.dev/component": "slm"}
CLOUD = cloud_tier("gpt", cidrs=["203.0.113.0/24", "2001:db8::/32"], ports=[443, 8443])
LOCAL_ONLY = namespace_policy({"tiered.dev/residency": "local-only"})
RESTRICTED = namespace_policy({})
SLM = EgressSubject.for_tier(local_tier())


def _by_name(policies: list[dict]) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in policies}


def test_local_only_namespace_never_gets_cloud_egress() -> None:
    assert build_network_policies(SLM, LOCAL_ONLY, [CLOUD]) == []
    base = build_base_network_policy(NS, NetworkOptions())
    for rule in base["spec"]["egress"]:
        assert not any("ipBlock" in peer for peer in rule["to"])


def test_base_policy_selects_every_pod_we_run_in_the_namespace_for_both_directions() -> None:
    base = build_base_network_policy(NS, NetworkOptions())
    assert base["apiVersion"] == "networking.k8s.io/v1" and base["kind"] == "NetworkPolicy"
    assert base["metadata"] == {
        "name": "tiered-base",
        "namespace": NS,
        "labels": {"app.kubernetes.io/managed-by": "tiered-operator", "app.kubernetes.io/part-of": "tiered",
                   "tiered.dev/component": "network"},
    }  # no owner: it serves every tier of the namespace; the reconciler deletes it with the last one
    assert base["spec"]["podSelector"] == {
        "matchLabels": {"app.kubernetes.io/managed-by": "tiered-operator"},
        "matchExpressions": [{"key": "tiered.dev/component", "operator": "In", "values": ["slm", "router"]}],
    }
    assert base["spec"]["policyTypes"] == ["Ingress", "Egress"]


def test_ingress_from_namespace_and_configured_peers_on_serving_ports() -> None:
    extra = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    options = OperatorSettings.from_env({"TIERED_NETPOL_INGRESS_PEERS": json.dumps([extra])}).network
    assert build_base_network_policy(NS, options)["spec"]["ingress"] == [
        {
            "from": [{"podSelector": {}}, extra],
            "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090},
                      {"protocol": "TCP", "port": 8080}],
        }
    ]


def test_egress_allows_dns_and_in_namespace_tiers_only() -> None:
    dns, tiers = build_base_network_policy(NS, NetworkOptions())["spec"]["egress"]
    assert dns == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    assert tiers == {
        "to": [{"podSelector": {"matchExpressions": [{"key": "tiered.dev/tier", "operator": "Exists"}]}}],
        "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8000}],
    }


def test_permitted_cloud_tier_gets_its_cidrs_and_ports_owned_by_the_tier() -> None:
    cloud = _by_name(build_network_policies(SLM, RESTRICTED, [CLOUD]))["slm-allow-cloud-gpt"]
    assert cloud["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "tiered-operator",
        "app.kubernetes.io/part-of": "tiered",
        "tiered.dev/tier": "slm",
        "tiered.dev/component": "network",
        "tiered.dev/cloud-tier": "gpt",
    }
    assert cloud["metadata"]["ownerReferences"] == [{"apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier",
                                                     "name": "slm", "uid": "uid-slm", "controller": True,
                                                     "blockOwnerDeletion": True}]
    assert cloud["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]}],
    }


def test_cloud_tier_in_a_region_not_allowed_gets_no_egress() -> None:
    ns = namespace_policy({"tiered.dev/residency": "unrestricted", "tiered.dev/allowed-regions": "us-east-1"})
    assert build_network_policies(SLM, ns, [CLOUD]) == []


def test_cloud_tier_without_cidrs_gets_no_plain_egress() -> None:
    assert build_network_policies(SLM, RESTRICTED, [cloud_tier("gpt")]) == []


def test_dns_peers_are_configurable() -> None:
    peer = {"podSelector": {"matchLabels": {"app": "dns"}}}
    options = OperatorSettings.from_env({"TIERED_NETPOL_DNS_PEERS": json.dumps([peer])}).network
    assert build_base_network_policy(NS, options)["spec"]["egress"][0]["to"] == [peer]


def test_cilium_policy_allows_dns_proxy_and_provider_hosts() -> None:
    cloud = cloud_tier("gpt", ports=[443], fqdns=["*.blob.example.com"], base_url="https://LLM.example.com/v1")
    (cnp,) = build_cilium_policies(SLM, RESTRICTED, [cloud], NetworkOptions())
    assert cnp["apiVersion"] == "cilium.io/v2"
    assert cnp["kind"] == "CiliumNetworkPolicy"
    assert cnp["metadata"]["name"] == "slm-fqdn-gpt"
    assert cnp["spec"]["endpointSelector"] == {"matchLabels": SELECTOR}
    dns, fqdn = cnp["spec"]["egress"]
    assert dns["toPorts"] == [{"ports": [{"port": "53", "protocol": "ANY"}], "rules": {"dns": [{"matchPattern": "*"}]}}]
    assert fqdn == {
        "toFQDNs": [{"matchPattern": "*.blob.example.com"}, {"matchName": "llm.example.com"}],
        "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
    }


def test_cilium_policies_follow_residency() -> None:
    assert build_cilium_policies(SLM, LOCAL_ONLY, [CLOUD], NetworkOptions()) == []


def test_cilium_discovery() -> None:
    assert cilium_served([{"kind": "CiliumNetworkPolicy", "name": "ciliumnetworkpolicies"}])
    assert not cilium_served([{"kind": "CiliumNetworkPolicy", "name": "ciliumnetworkpolicies/status"}])
    assert not cilium_served([])


def test_egress_condition_of_a_local_tier_lists_what_may_leave_and_what_residency_forbids() -> None:
    from tiered_operator.residency.network import egress_condition

    us = cloud_tier("us", region="us-east-1", cidrs=["198.51.100.0/24"])
    ns = namespace_policy({"tiered.dev/allowed-regions": "eu-west-1"})
    cond = egress_condition(local_tier(), ns, [CLOUD, us], [], cilium=False)
    assert (cond.type, cond.status, cond.reason) == ("EgressRestricted", "True", "NetworkPoliciesApplied")
    assert "gpt (203.0.113.0/24, 2001:db8::/32 ports 443, 8443)" in cond.message
    assert "residency forbids us" in cond.message
    assert "does not serve cilium.io/v2 CiliumNetworkPolicy" in cond.message
    assert egress_condition(local_tier(), ns, [], [], cilium=True).reason == "FQDNPoliciesApplied"


def test_egress_condition_of_a_cloud_tier_says_who_can_reach_it() -> None:
    from tiered_operator.residency.network import egress_condition

    ok = egress_condition(CLOUD, RESTRICTED, [], ["slm"], cilium=False)
    assert (ok.status, ok.reason) == ("True", "EgressAllowed")
    assert "pods of slm" in ok.message
    no_cidrs = egress_condition(cloud_tier("gpt"), RESTRICTED, [], ["slm"], cilium=False)
    assert (no_cidrs.status, no_cidrs.reason) == ("False", "NoEgressDeclared")
    assert egress_condition(cloud_tier("gpt"), RESTRICTED, [], ["slm"], cilium=True).status == "True"
    forbidden = egress_condition(CLOUD, LOCAL_ONLY, [], ["slm"], cilium=False)
    assert forbidden.reason == "ResidencyForbidden"
    assert "no pod may send traffic" in forbidden.message
