"""NetworkPolicies and CiliumNetworkPolicies for a local tier, asserted field by field."""

from __future__ import annotations

import json

from residency_objects import NS, cloud_tier, local_tier

from tiered_operator.residency import NetworkOptions, build_cilium_policies, build_network_policies, namespace_policy
from tiered_operator.residency.cilium import cilium_served

SELECTOR = {"tiered.dev/tier": "slm", "tiered.dev/component": "slm"}
CLOUD = cloud_tier("gpt", cidrs=["203.0.113.0/24", "2001:db8::/32"], ports=[443, 8443])
LOCAL_ONLY = namespace_policy({"tiered.dev/residency": "local-only"})
RESTRICTED = namespace_policy({})


def _by_name(policies: list[dict]) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in policies}


def test_local_only_namespace_never_gets_cloud_egress() -> None:
    policies = _by_name(build_network_policies(local_tier(), LOCAL_ONLY, [CLOUD], NetworkOptions()))
    assert set(policies) == {"slm-default-deny", "slm-allow-ingress", "slm-allow-egress"}
    for p in policies.values():
        for rule in p["spec"].get("egress", []):
            assert not any("ipBlock" in peer for peer in rule["to"])


def test_default_deny_selects_the_tier_pods_for_both_directions_with_no_rules() -> None:
    deny = _by_name(build_network_policies(local_tier(), RESTRICTED, [], NetworkOptions()))["slm-default-deny"]
    assert deny["apiVersion"] == "networking.k8s.io/v1"
    assert deny["kind"] == "NetworkPolicy"
    assert deny["spec"] == {"podSelector": {"matchLabels": SELECTOR}, "policyTypes": ["Ingress", "Egress"]}


def test_metadata_labels_and_owner_reference() -> None:
    deny = _by_name(build_network_policies(local_tier(), RESTRICTED, [], NetworkOptions()))["slm-default-deny"]
    meta = deny["metadata"]
    assert meta["namespace"] == NS
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "tiered-operator",
        "app.kubernetes.io/part-of": "tiered",
        "tiered.dev/tier": "slm",
        "tiered.dev/component": "network",
    }
    assert meta["ownerReferences"] == [{"apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier", "name": "slm",
                                        "uid": "uid-slm", "controller": True, "blockOwnerDeletion": True}]


def test_ingress_from_namespace_and_configured_peers_on_serving_ports() -> None:
    extra = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    options = NetworkOptions.from_env({"TIERED_NETPOL_INGRESS_PEERS": json.dumps([extra])})
    ingress = _by_name(build_network_policies(local_tier(), RESTRICTED, [], options))["slm-allow-ingress"]
    assert ingress["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {}}, extra],
                "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090},
                          {"protocol": "TCP", "port": 8080}],
            }
        ],
    }


def test_egress_allows_dns_and_in_namespace_tiers_only() -> None:
    egress = _by_name(build_network_policies(local_tier(), RESTRICTED, [], NetworkOptions()))["slm-allow-egress"]
    assert egress["spec"]["policyTypes"] == ["Egress"]
    dns, tiers = egress["spec"]["egress"]
    assert dns == {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    assert tiers == {
        "to": [{"podSelector": {"matchExpressions": [{"key": "tiered.dev/tier", "operator": "Exists"}]}}],
        "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8000}],
    }


def test_permitted_cloud_tier_gets_its_cidrs_and_ports() -> None:
    policies = _by_name(build_network_policies(local_tier(), RESTRICTED, [CLOUD], NetworkOptions()))
    cloud = policies["slm-allow-cloud-gpt"]
    assert cloud["metadata"]["labels"]["tiered.dev/cloud-tier"] == "gpt"
    assert cloud["spec"] == {
        "podSelector": {"matchLabels": SELECTOR},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}, {"ipBlock": {"cidr": "2001:db8::/32"}}],
                    "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 8443}]}],
    }


def test_cloud_tier_in_a_region_not_allowed_gets_no_egress() -> None:
    ns = namespace_policy({"tiered.dev/residency": "unrestricted", "tiered.dev/allowed-regions": "us-east-1"})
    assert "slm-allow-cloud-gpt" not in _by_name(build_network_policies(local_tier(), ns, [CLOUD], NetworkOptions()))


def test_cloud_tier_without_cidrs_gets_no_plain_egress() -> None:
    names = _by_name(build_network_policies(local_tier(), RESTRICTED, [cloud_tier("gpt")], NetworkOptions()))
    assert "slm-allow-cloud-gpt" not in names


def test_dns_peers_are_configurable() -> None:
    peer = {"podSelector": {"matchLabels": {"app": "dns"}}}
    options = NetworkOptions.from_env({"TIERED_NETPOL_DNS_PEERS": '[{"podSelector": {"matchLabels": {"app": "dns"}}}]'})
    egress = _by_name(build_network_policies(local_tier(), RESTRICTED, [], options))["slm-allow-egress"]
    assert egress["spec"]["egress"][0]["to"] == [peer]


def test_cilium_policy_allows_dns_proxy_and_provider_hosts() -> None:
    cloud = cloud_tier("gpt", ports=[443], fqdns=["*.blob.example.com"], base_url="https://LLM.example.com/v1")
    (cnp,) = build_cilium_policies(local_tier(), RESTRICTED, [cloud], NetworkOptions())
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
    assert build_cilium_policies(local_tier(), LOCAL_ONLY, [CLOUD], NetworkOptions()) == []


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
