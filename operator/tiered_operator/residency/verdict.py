"""Whether a tier may serve a namespace, and the ResidencyCompliant condition that says so.

One decision function (`cloud_verdict`) is shared by the tier status, the policy status, the router config and
the admission webhook, so all four layers always agree on what a namespace forbids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.reconcile.conditions import FALSE, TRUE, Condition
from tiered_operator.residency.policy import NamespacePolicy
from tiered_router.config import ResidencyClass

CONDITION_TYPE = "ResidencyCompliant"

# Reasons (CamelCase, per API conventions).
REASON_LOCAL_TIER = "LocalTier"
REASON_CLOUD_ALLOWED = "CloudAllowed"
REASON_CLOUD_WITHOUT_PII = "CloudWithoutPII"
REASON_RESIDENCY_FORBIDDEN = "ResidencyForbidden"
REASON_REGION_NOT_ALLOWED = "RegionNotAllowed"
REASON_LABEL_INVALID = "ResidencyLabelInvalid"
REASON_ALL_TIERS_PERMITTED = "AllTiersPermitted"
REASON_NO_PERMITTED_TIER = "NoPermittedTier"


@dataclass(frozen=True)
class Verdict:
    """Whether one tier may serve a namespace, and if so whether requests with PII may reach it."""

    served: bool
    pii_forbidden: bool
    reason: str
    message: str

    def condition(self) -> Condition:
        return Condition(CONDITION_TYPE, TRUE if self.served else FALSE, self.reason, self.message)


def cloud_verdict(tier: str, region: str | None, ns: NamespacePolicy, namespace: str) -> Verdict:
    """The decision for a cloud tier called `tier` in `region`, serving namespace `namespace`."""
    if ns.residency is ResidencyClass.LOCAL_ONLY:
        reason = REASON_LABEL_INVALID if ns.residency_label_invalid else REASON_RESIDENCY_FORBIDDEN
        return Verdict(
            served=False,
            pii_forbidden=True,
            reason=reason,
            message=f"cloud tier {tier} may not serve namespace {namespace}: it is labelled "
            f"{ns.residency_source}, so no request may leave the cluster"
            + (f" ({'; '.join(ns.problems)})" if reason == REASON_LABEL_INVALID else ""),
        )
    if not ns.region_allowed(region):
        listed = ", ".join(sorted(ns.allowed_regions or ())) or "none"
        got = f"region {region}" if region else "no region (spec.cloud.region is not set)"
        return Verdict(
            served=False,
            pii_forbidden=True,
            reason=REASON_REGION_NOT_ALLOWED,
            message=f"cloud tier {tier} declares {got}, but namespace {namespace} allows only "
            f"[{listed}] ({ns.regions_source})",
        )
    if ns.residency is ResidencyClass.RESTRICTED:
        return Verdict(
            served=True,
            pii_forbidden=True,
            reason=REASON_CLOUD_WITHOUT_PII,
            message=f"cloud tier {tier} serves namespace {namespace} only for requests in which no PII was "
            f"found ({ns.residency_source})",
        )
    return Verdict(
        served=True,
        pii_forbidden=False,
        reason=REASON_CLOUD_ALLOWED,
        message=f"cloud tier {tier} may serve namespace {namespace} ({ns.residency_source}); the "
        "RoutingPolicy's pii.action decides what happens to PII",
    )


def local_verdict(tier: str, ns: NamespacePolicy, namespace: str) -> Verdict:
    """Local tiers always comply: the data stays in the cluster."""
    return Verdict(
        served=True,
        pii_forbidden=False,
        reason=REASON_LOCAL_TIER,
        message=f"local tier {tier}: requests are served inside the cluster ({ns.residency_source})",
    )


def tier_verdict(tier: InferenceTier, ns: NamespacePolicy) -> Verdict:
    """The verdict for an InferenceTier in its own namespace."""
    name = tier.metadata.name or "?"
    namespace = tier.metadata.namespace or "?"
    if tier.spec.backend == "cloud" and tier.spec.cloud is not None:
        return cloud_verdict(name, tier.spec.cloud.region, ns, namespace)
    return local_verdict(name, ns, namespace)


@dataclass(frozen=True)
class PolicyVerdict:
    """What residency leaves of a RoutingPolicy's tier chain."""

    served: tuple[str, ...]
    """Tiers (in the policy's order) that may serve; tiers that do not exist yet are kept (not ours to judge)."""
    dropped: Mapping[str, Verdict]
    """Tiers removed from the chain, with the verdict that removed them."""
    default_tier: str | None
    """The effective default tier: the policy's own, or the first served tier when residency dropped it."""
    condition: Condition


def policy_verdict(
    policy_name: str,
    namespace: str,
    tier_names: Sequence[str],
    default_tier: str,
    tiers: Mapping[str, InferenceTier],
    ns: NamespacePolicy,
) -> PolicyVerdict:
    """Drop the tiers the namespace forbids from a policy's chain and say so in one condition.

    ResidencyCompliant is False whenever the policy *as written* names a tier the namespace forbids, even though
    the router never uses it: compliance reads the condition to find specs that disagree with the label.
    """
    dropped: dict[str, Verdict] = {}
    served: list[str] = []
    for name in tier_names:
        tier = tiers.get(name)
        verdict = tier_verdict(tier, ns) if tier is not None else None
        if verdict is not None and not verdict.served:
            dropped[name] = verdict
        else:
            served.append(name)
    effective_default = default_tier if default_tier in served else (served[0] if served else None)

    if not dropped:
        pii_cloud = [n for n in served if n in tiers and tiers[n].spec.backend == "cloud"]
        msg = f"every tier of RoutingPolicy {policy_name} may serve namespace {namespace} ({ns.residency_source})"
        if pii_cloud and ns.residency is ResidencyClass.RESTRICTED:
            msg += f"; cloud tiers {', '.join(pii_cloud)} receive only requests without PII"
        return PolicyVerdict(tuple(served), {}, effective_default, Condition(CONDITION_TYPE, TRUE,
                                                                             REASON_ALL_TIERS_PERMITTED, msg))

    first = next(iter(dropped.values()))
    details = "; ".join(v.message for v in dropped.values())
    if effective_default is None:
        reason = REASON_NO_PERMITTED_TIER
        outcome = "no tier remains, so the router config is not rendered and requests cannot be served"
    else:
        reason = first.reason
        outcome = f"dropped from the chain: {', '.join(dropped)}; the router serves from {', '.join(served)}"
        if effective_default != default_tier:
            outcome += f" with default tier {effective_default} instead of {default_tier}"
    return PolicyVerdict(
        tuple(served), dropped, effective_default, Condition(CONDITION_TYPE, FALSE, reason, f"{outcome} ({details})")
    )
