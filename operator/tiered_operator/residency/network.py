"""NetworkPolicies for the pods the operator runs: default deny, then only what the namespace's residency permits.

Two kinds of objects, each with one purpose so `kubectl get netpol` reads like the policy itself:

- `tiered-base`, one per namespace that holds local tiers (or gateway routers): selects every pod the operator
  runs there, for Ingress and Egress (default deny), and allows ingress from any pod of the namespace plus the
  operator's configured extra peers to the serving ports, egress to DNS and to the other tiers' pods. It is the
  same for every tier of a namespace, so it is one object, not one per tier: a namespace of 1,000 tiers costs
  one write instead of 3,000 (bench/operator). The operator deletes it when the namespace no longer holds pods
  of ours.
- `<tier>-allow-cloud-<cloud tier>` (or `<policy>-gateway-allow-cloud-<cloud tier>`): the cloud tier's declared
  CIDRs and ports, built ONLY when residency permits that cloud tier to serve the namespace, owned by the tier
  (or the policy). In a local-only namespace no such object exists, so nothing the pods send can leave the
  cluster.

NetworkPolicies are additive (a connection is allowed if any policy allows it), which is why the allowances are
separate objects that can be removed one by one when a namespace is relabelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.conditions import FALSE, TRUE, Condition
from tiered_operator.residency.policy import NamespacePolicy
from tiered_operator.residency.verdict import tier_verdict
from tiered_operator.settings import NetworkOptions

__all__ = ["NetworkOptions"]

LABEL_CLOUD_TIER = f"{labels.GROUP}/cloud-tier"
"""On `-allow-cloud-` objects: the cloud tier whose egress they allow (so a relabel can find and drop them)."""
BASE_POLICY_NAME = "tiered-base"
"""The namespace's default-deny-plus-baseline NetworkPolicy."""
SERVED_COMPONENTS = (labels.COMPONENT_SLM, labels.COMPONENT_ROUTER)
"""Pods the base policy selects: model-server pods of local tiers and gateway router pods."""


@dataclass(frozen=True)
class EgressSubject:
    """The pods a set of egress allowances is for, and the object that owns the allowances."""

    kind: str
    name: str
    uid: str
    namespace: str
    selector: dict[str, str]
    prefix: str
    """Object names start with it: the tier's name, or `<policy>-gateway`."""

    @classmethod
    def for_tier(cls, tier: InferenceTier) -> EgressSubject:
        name = tier.metadata.name or ""
        return cls(
            labels.KIND_INFERENCE_TIER,
            name,
            tier.metadata.uid or "",
            tier.metadata.namespace or "",
            naming.tier_selector(name),
            name,
        )

    @classmethod
    def for_gateway(cls, policy: RoutingPolicy) -> EgressSubject:
        name = policy.metadata.name or ""
        return cls(labels.KIND_ROUTING_POLICY, name, policy.metadata.uid or "", policy.metadata.namespace or "",
                   naming.gateway_selector(name), naming.gateway_name(name))  # fmt: skip

    def metadata(self, name: str, extra_labels: dict[str, str]) -> dict[str, Any]:
        tier_label = (
            {labels.LABEL_TIER: self.name}
            if self.kind == labels.KIND_INFERENCE_TIER
            else {labels.LABEL_POLICY: self.name}
        )
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {
                labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE,
                labels.LABEL_APP_PART_OF: labels.PART_OF_VALUE,
                **tier_label,
                labels.LABEL_COMPONENT: labels.COMPONENT_NETWORK,
                **extra_labels,
            },
            "ownerReferences": [naming.owner_reference(self.kind, self.name, self.uid)],
        }


def policy_name(prefix: str, purpose: str) -> str:
    """`<prefix>-<purpose>`, shortened with a hash if it would not be a valid object name."""
    return (
        naming.dns_label(prefix, purpose)
        if len(prefix) + len(purpose) < 63
        else naming.dns_label("netpol", f"{prefix}-{purpose}")
    )


def _netpol(metadata: dict[str, Any], selector: dict[str, Any], types: list[str], **rules: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector, "policyTypes": types}
    spec.update(rules)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def permitted_cloud_tiers(cloud_tiers: Sequence[InferenceTier], ns: NamespacePolicy) -> list[InferenceTier]:
    """The cloud tiers residency lets serve the namespace, in name order (stable output)."""
    return sorted(
        (t for t in cloud_tiers if t.spec.backend == "cloud" and tier_verdict(t, ns).served),
        key=lambda t: t.metadata.name or "",
    )


def build_base_network_policy(namespace: str, options: NetworkOptions) -> dict[str, Any]:
    """The namespace's `tiered-base` policy: default deny for every pod we run there, plus the baseline.

    No owner: it serves every tier of the namespace, and the reconciler deletes it with the last of them.
    """
    ports = options.ports
    serving_ports = [{"protocol": "TCP", "port": p} for p in (ports.router, ports.router_metrics, ports.slm)]
    selector = {
        "matchLabels": {labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE},
        "matchExpressions": [{"key": labels.LABEL_COMPONENT, "operator": "In", "values": list(SERVED_COMPONENTS)}],
    }
    metadata = {
        "name": BASE_POLICY_NAME,
        "namespace": namespace,
        "labels": {
            labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE,
            labels.LABEL_APP_PART_OF: labels.PART_OF_VALUE,
            labels.LABEL_COMPONENT: labels.COMPONENT_NETWORK,
        },
    }
    return _netpol(
        metadata,
        selector,
        ["Ingress", "Egress"],
        ingress=[{"from": [{"podSelector": {}}, *options.extra_ingress_peers], "ports": serving_ports}],
        egress=[
            {
                "to": list(options.dns_peers),
                "ports": [{"protocol": "UDP", "port": options.dns_port}, {"protocol": "TCP", "port": options.dns_port}],
            },
            {
                "to": [{"podSelector": {"matchExpressions": [{"key": labels.LABEL_TIER, "operator": "Exists"}]}}],
                "ports": [{"protocol": "TCP", "port": ports.slm}, {"protocol": "TCP", "port": ports.router}],
            },
        ],
    )


def build_network_policies(
    subject: EgressSubject,
    ns: NamespacePolicy,
    cloud_tiers: Sequence[InferenceTier],
) -> list[dict[str, Any]]:
    """The cloud egress allowances of `subject`'s pods (the base policy covers everything else).

    `cloud_tiers` are the cloud tiers the pods' router may dispatch to (those of the RoutingPolicies it serves);
    each gets an allowance only if residency permits it and it declares CIDRs. A cloud tier without
    `egress.cidrs` gets no plain-NetworkPolicy allowance (fail closed): its traffic passes only where an FQDN
    policy (Cilium) allows its host.
    """
    policies = []
    for cloud in permitted_cloud_tiers(cloud_tiers, ns):
        egress = cloud.spec.cloud.egress if cloud.spec.cloud is not None else None
        if egress is None or not egress.cidrs:
            continue
        cloud_name = cloud.metadata.name or ""
        policies.append(
            _netpol(
                subject.metadata(
                    policy_name(subject.prefix, f"allow-cloud-{cloud_name}"), {LABEL_CLOUD_TIER: cloud_name}
                ),
                {"matchLabels": dict(subject.selector)},
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
        forbidden = sorted(
            {c.metadata.name or "" for c in cloud_tiers}
            - {c.metadata.name for c in permitted_cloud_tiers(cloud_tiers, ns)}
        )
        msg = "default deny; ingress from the namespace; egress to DNS and in-namespace tiers"
        msg += f"; cloud egress: {'; '.join(allowed)}" if allowed else "; no cloud egress"
        if forbidden:
            msg += f"; residency forbids {', '.join(forbidden)} ({ns.residency_source})"
        reason = "FQDNPoliciesApplied" if cilium else "NetworkPoliciesApplied"
        return Condition(EGRESS_CONDITION, TRUE, reason, f"{msg}; {fqdn_note}")

    verdict = tier_verdict(tier, ns)
    if not verdict.served:
        return Condition(
            EGRESS_CONDITION, TRUE, verdict.reason, f"no pod may send traffic to cloud tier {name}: {verdict.message}"
        )
    egress = tier.spec.cloud.egress
    reachable = bool(egress is not None and egress.cidrs) or cilium
    who = ", ".join(callers) if callers else "no local tier (no RoutingPolicy pairs it with one)"
    if not reachable:
        return Condition(
            EGRESS_CONDITION,
            FALSE,
            "NoEgressDeclared",
            f"spec.cloud.egress.cidrs is empty and {fqdn_note[0].lower() + fqdn_note[1:]}: the pods of {who} "
            f"cannot reach {name}",
        )
    how = (
        "CIDRs and FQDN rules"
        if cilium and egress is not None and egress.cidrs
        else ("FQDN rules" if cilium else "CIDRs")
    )
    return Condition(
        EGRESS_CONDITION,
        TRUE,
        "EgressAllowed",
        f"pods of {who} may reach cloud tier {name} by its declared {how}; {fqdn_note}",
    )
