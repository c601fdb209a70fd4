"""NetworkPolicies for a local tier's pods: default deny, then only what the namespace's residency permits.

Four kinds of objects, each with one purpose so `kubectl get netpol` reads like the policy itself:

- `<tier>-default-deny`: selects the tier's pods for Ingress and Egress with no rules (deny all).
- `<tier>-allow-ingress`: from any pod of the namespace, plus the operator's configured extra peers
  (e.g. a monitoring or ingress-controller namespace), to the router, router-metrics and model-server ports.
- `<tier>-allow-egress`: DNS, and the other tiers' pods in the same namespace (router → model server).
- `<tier>-allow-cloud-<cloud tier>`: the cloud tier's declared CIDRs and ports, built ONLY when residency
  permits that cloud tier to serve the namespace. In a local-only namespace no such object exists, so nothing
  the tier's pods send can leave the cluster.

NetworkPolicies are additive (a connection is allowed if any policy allows it), which is why the allowances are
separate objects that can be removed one by one when a namespace is relabelled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.conditions import FALSE, TRUE, Condition
from tiered_operator.residency.policy import NamespacePolicy
from tiered_operator.residency.verdict import tier_verdict
from tiered_operator.settings import Ports

LABEL_CLOUD_TIER = f"{labels.GROUP}/cloud-tier"
"""On `-allow-cloud-` objects: the cloud tier whose egress they allow (so a relabel can find and drop them)."""

DEFAULT_DNS_PEERS: tuple[dict[str, Any], ...] = (
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
)
"""CoreDNS/kube-dns as most distributions label it; override with TIERED_NETPOL_DNS_PEERS."""


@dataclass(frozen=True)
class NetworkOptions:
    """Cluster-specific parts of the policies (operator configuration, not custom resources)."""

    ports: Ports = field(default_factory=Ports)
    extra_ingress_peers: tuple[dict[str, Any], ...] = ()
    """NetworkPolicyPeers allowed in besides the namespace itself (TIERED_NETPOL_INGRESS_PEERS, JSON list)."""
    dns_peers: tuple[dict[str, Any], ...] = DEFAULT_DNS_PEERS
    dns_port: int = 53

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NetworkOptions:
        """Read the JSON lists of NetworkPolicyPeers from TIERED_NETPOL_INGRESS_PEERS / TIERED_NETPOL_DNS_PEERS."""
        return cls(
            extra_ingress_peers=_peers(env, "TIERED_NETPOL_INGRESS_PEERS", ()),
            dns_peers=_peers(env, "TIERED_NETPOL_DNS_PEERS", DEFAULT_DNS_PEERS),
        )


def _peers(env: Mapping[str, str], name: str, default: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    text = env.get(name, "").strip()
    if not text:
        return default
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ValueError(f"{name} must be a JSON list of NetworkPolicyPeer objects, got {text!r}")
    return tuple(value)


def policy_name(tier: str, purpose: str) -> str:
    """`<tier>-<purpose>`, shortened with a hash if it would not be a valid object name."""
    return naming.dns_label(tier, purpose) if len(tier) + len(purpose) < 63 else naming.dns_label("netpol",
                                                                                                 f"{tier}-{purpose}")


def child_metadata(tier: InferenceTier, name: str, extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    tier_name = tier.metadata.name or ""
    return {
        "name": name,
        "namespace": tier.metadata.namespace,
        "labels": {
            labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE,
            labels.LABEL_APP_PART_OF: labels.PART_OF_VALUE,
            labels.LABEL_TIER: tier_name,
            labels.LABEL_COMPONENT: labels.COMPONENT_NETWORK,
            **(extra_labels or {}),
        },
        "ownerReferences": [naming.owner_reference(labels.KIND_INFERENCE_TIER, tier_name, tier.metadata.uid or "")],
    }


def _netpol(metadata: dict[str, Any], selector: dict[str, str], types: list[str], **rules: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": types}
    spec.update(rules)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def permitted_cloud_tiers(cloud_tiers: Sequence[InferenceTier], ns: NamespacePolicy) -> list[InferenceTier]:
    """The cloud tiers residency lets serve the namespace, in name order (stable output)."""
    return sorted(
        (t for t in cloud_tiers if t.spec.backend == "cloud" and tier_verdict(t, ns).served),
        key=lambda t: t.metadata.name or "",
    )


def build_network_policies(
    tier: InferenceTier,
    ns: NamespacePolicy,
    cloud_tiers: Sequence[InferenceTier],
    options: NetworkOptions,
) -> list[dict[str, Any]]:
    """The NetworkPolicies for a local tier's pods.

    `cloud_tiers` are the cloud tiers this tier's router may dispatch to (those of the RoutingPolicies that list
    the tier); each gets an egress allowance only if residency permits it and it declares CIDRs. A cloud tier
    without `egress.cidrs` gets no plain-NetworkPolicy allowance (fail closed): its traffic passes only where an
    FQDN policy (Cilium) allows its host.
    """
    tier_name = tier.metadata.name or ""
    selector = naming.tier_selector(tier_name)
    ports = options.ports
    serving_ports = [{"protocol": "TCP", "port": p} for p in (ports.router, ports.router_metrics, ports.slm)]
    policies = [
        _netpol(child_metadata(tier, policy_name(tier_name, "default-deny")), selector, ["Ingress", "Egress"]),
        _netpol(
            child_metadata(tier, policy_name(tier_name, "allow-ingress")),
            selector,
            ["Ingress"],
            ingress=[{"from": [{"podSelector": {}}, *options.extra_ingress_peers], "ports": serving_ports}],
        ),
        _netpol(
            child_metadata(tier, policy_name(tier_name, "allow-egress")),
            selector,
            ["Egress"],
            egress=[
                {
                    "to": list(options.dns_peers),
                    "ports": [
                        {"protocol": "UDP", "port": options.dns_port},
                        {"protocol": "TCP", "port": options.dns_port},
                    ],
                },
                {
                    "to": [{"podSelector": {"matchExpressions": [{"key": labels.LABEL_TIER, "operator": "Exists"}]}}],
                    "ports": [{"protocol": "TCP", "port": ports.slm}, {"protocol": "TCP", "port": ports.router}],
                },
            ],
        ),
    ]
    for cloud in permitted_cloud_tiers(cloud_tiers, ns):
        egress = cloud.spec.cloud.egress if cloud.spec.cloud is not None else None
        if egress is None or not egress.cidrs:
            continue
        cloud_name = cloud.metadata.name or ""
        policies.append(
            _netpol(
                child_metadata(
                    tier, policy_name(tier_name, f"allow-cloud-{cloud_name}"), {LABEL_CLOUD_TIER: cloud_name}
                ),
                selector,
                ["Egress"],
                egress=[
                    {
                        "to": [{"ipBlock": {"cidr": c}} for c in egress.cidrs],
                        "ports": [{"protocol": "TCP", "port": p} for p in egress.ports],
                    }
                ],
            )
        )
    return policies


EGRESS_CONDITION = "EgressRestricted"
"""Condition type the residency handler owns on InferenceTiers (its own status field manager)."""


def egress_condition(
    tier: InferenceTier,
    ns: NamespacePolicy,
    cloud_tiers: Sequence[InferenceTier],
    callers: Sequence[str],
    cilium: bool,
) -> Condition:
    """What the network enforces for this tier, as a condition (computed after the policies were applied).

    Local tier: what its pods may reach. Cloud tier: whether the local tiers that call it (`callers`) can reach
    it, and how (CIDRs, or FQDN rules where the cluster serves CiliumNetworkPolicy; said when it does not).
    """
    fqdn_note = (
        "FQDN rules applied as CiliumNetworkPolicy"
        if cilium
        else "FQDN rules not applied: the cluster does not serve cilium.io/v2 CiliumNetworkPolicy, so only "
        "declared CIDRs are allowed"
    )
    name = tier.metadata.name or ""
    if tier.spec.backend != "cloud" or tier.spec.cloud is None:
        allowed = []
        for cloud in permitted_cloud_tiers(cloud_tiers, ns):
            egress = cloud.spec.cloud.egress if cloud.spec.cloud is not None else None
            cidrs = list(egress.cidrs or []) if egress is not None else []
            if cidrs and egress is not None:
                allowed.append(f"{cloud.metadata.name} ({', '.join(cidrs)} ports {', '.join(map(str, egress.ports))})")
        forbidden = sorted({c.metadata.name or "" for c in cloud_tiers} - {c.metadata.name for c in
                                                                        permitted_cloud_tiers(cloud_tiers, ns)})
        msg = "default deny; ingress from the namespace; egress to DNS and in-namespace tiers"
        msg += f"; cloud egress: {'; '.join(allowed)}" if allowed else "; no cloud egress"
        if forbidden:
            msg += f"; residency forbids {', '.join(forbidden)} ({ns.residency_source})"
        reason = "FQDNPoliciesApplied" if cilium else "NetworkPoliciesApplied"
        return Condition(EGRESS_CONDITION, TRUE, reason, f"{msg}; {fqdn_note}")

    verdict = tier_verdict(tier, ns)
    if not verdict.served:
        return Condition(EGRESS_CONDITION, TRUE, verdict.reason,
                         f"no pod may send traffic to cloud tier {name}: {verdict.message}")
    egress = tier.spec.cloud.egress
    reachable = bool(egress is not None and egress.cidrs) or cilium
    who = ", ".join(callers) if callers else "no local tier (no RoutingPolicy pairs it with one)"
    if not reachable:
        return Condition(
            EGRESS_CONDITION, FALSE, "NoEgressDeclared",
            f"spec.cloud.egress.cidrs is empty and {fqdn_note[0].lower() + fqdn_note[1:]}: the pods of {who} "
            f"cannot reach {name}",
        )
    how = "CIDRs and FQDN rules" if cilium and egress is not None and egress.cidrs else (
        "FQDN rules" if cilium else "CIDRs")
    return Condition(EGRESS_CONDITION, TRUE, "EgressAllowed",
                     f"pods of {who} may reach cloud tier {name} by its declared {how}; {fqdn_note}")
