"""Admission decisions for the validating webhook: reject, at apply time, what would break residency.

The webhook is the first line of defence and the one a user sees (`kubectl apply` and Argo CD sync show the
message). It is not the only one: the router config, the NetworkPolicies and the status conditions enforce the
same decision when the webhook is down (failurePolicy Ignore; see docs/residency.md).

Decisions work on raw objects (the AdmissionReview's `object`) and read only the fields they need, so a
malformed object is left to the API server's schema validation rather than rejected here with a confusing message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tiered_operator.residency.policy import NamespacePolicy
from tiered_operator.residency.verdict import cloud_verdict


@dataclass(frozen=True)
class AdmissionDecision:
    allowed: bool
    message: str = ""


ALLOW = AdmissionDecision(True)


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def spec_unchanged(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """An UPDATE that leaves `spec` alone (labels, annotations, finalizers) is always allowed.

    Otherwise a relabelled namespace would make its existing cloud tiers impossible to annotate, finalize or
    delete cleanly, by the operator as much as by users.
    """
    return old is not None and _spec(obj) == _spec(old)


def _cloud_region(obj: Mapping[str, Any]) -> tuple[bool, str | None]:
    spec = _spec(obj)
    cloud = spec.get("cloud")
    is_cloud = spec.get("backend") == "cloud"
    region = cloud.get("region") if isinstance(cloud, Mapping) else None
    return is_cloud, (str(region) if region is not None else None)


def review_tier(
    obj: Mapping[str, Any], old: Mapping[str, Any] | None, namespace: str, ns: NamespacePolicy
) -> AdmissionDecision:
    """Reject a cloud InferenceTier its namespace forbids (residency class or region)."""
    if spec_unchanged(obj, old):
        return ALLOW
    is_cloud, region = _cloud_region(obj)
    if not is_cloud:
        return ALLOW
    name = str((obj.get("metadata") or {}).get("name") or "")
    verdict = cloud_verdict(name, region, ns, namespace)
    if verdict.served:
        return ALLOW
    return AdmissionDecision(False, f"InferenceTier {name} rejected: {verdict.message}")


def review_policy(
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    namespace: str,
    ns: NamespacePolicy,
    tiers: Mapping[str, Mapping[str, Any]],
) -> AdmissionDecision:
    """Reject a RoutingPolicy that lists an existing cloud tier its namespace forbids.

    Tiers that do not exist yet are not judged here: they are judged when they are created.
    """
    if spec_unchanged(obj, old):
        return ALLOW
    listed = _spec(obj).get("tiers")
    if not isinstance(listed, list):
        return ALLOW
    messages = []
    for tier_name in listed:
        tier = tiers.get(str(tier_name))
        if tier is None:
            continue
        is_cloud, region = _cloud_region(tier)
        if not is_cloud:
            continue
        verdict = cloud_verdict(str(tier_name), region, ns, namespace)
        if not verdict.served:
            messages.append(verdict.message)
    if not messages:
        return ALLOW
    name = str((obj.get("metadata") or {}).get("name") or "")
    return AdmissionDecision(
        False, f"RoutingPolicy {name} rejected: spec.tiers lists forbidden cloud tiers: {'; '.join(messages)}"
    )
