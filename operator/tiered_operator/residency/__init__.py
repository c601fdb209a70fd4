"""Data residency: namespace policy → tier verdicts, router config, NetworkPolicies and admission decisions.

Pure functions only (no I/O); the Reconciler (handlers/reconciler.py) observes the cluster and applies what
these compute.
"""

from tiered_operator.residency.admission import AdmissionDecision, review_policy, review_tier
from tiered_operator.residency.cilium import build_cilium_policies, cilium_served
from tiered_operator.residency.network import (
    EgressSubject,
    NetworkOptions,
    build_base_network_policy,
    build_network_policies,
)
from tiered_operator.residency.policy import NamespacePolicy, namespace_policy
from tiered_operator.residency.router_config import NoPermittedTier, apply_residency, forbidden_tiers
from tiered_operator.residency.verdict import (
    CONDITION_TYPE,
    PolicyVerdict,
    Verdict,
    cloud_verdict,
    policy_verdict,
    tier_verdict,
)

__all__ = [
    "CONDITION_TYPE",
    "AdmissionDecision",
    "EgressSubject",
    "NamespacePolicy",
    "NetworkOptions",
    "NoPermittedTier",
    "PolicyVerdict",
    "Verdict",
    "apply_residency",
    "build_base_network_policy",
    "build_cilium_policies",
    "build_network_policies",
    "cilium_served",
    "cloud_verdict",
    "forbidden_tiers",
    "namespace_policy",
    "policy_verdict",
    "review_policy",
    "review_tier",
    "tier_verdict",
]
