"""Residency applied to a compiled router config: the router never even learns of a tier it may not use.

The operator compiles a RoutingPolicy into a `RouterConfig` and passes it through `apply_residency` before
rendering the ConfigMap. Forbidden cloud tiers are removed from `tiers`, `tierOrder`, routes and overrides (so
fallback can never reach them); in restricted namespaces every remaining cloud tier is PII-forbidden; the
namespace's class and allowed regions are written into `residency` so the router enforces them per request too.
"""

from __future__ import annotations

from tiered_operator.residency.policy import NamespacePolicy
from tiered_operator.residency.verdict import Verdict, cloud_verdict
from tiered_router.config import ResidencyClass, RouterConfig, TierKind


class NoPermittedTier(ValueError):
    """Residency leaves no tier for this policy; the message names the label and the dropped tiers."""


def forbidden_tiers(config: RouterConfig, ns: NamespacePolicy) -> dict[str, Verdict]:
    """Cloud tiers of `config` that may not serve its namespace, with the verdict saying why."""
    out: dict[str, Verdict] = {}
    for tier in config.tiers:
        if tier.kind is TierKind.CLOUD:
            verdict = cloud_verdict(tier.name, tier.region, ns, config.namespace)
            if not verdict.served:
                out[tier.name] = verdict
    return out


def apply_residency(config: RouterConfig, ns: NamespacePolicy) -> RouterConfig:
    """`config` with the namespace policy enforced (see module docstring).

    Routes that pointed at a dropped tier are kept but sent to the effective default tier: their examples still
    describe real traffic, and leaving them out would let that traffic match some unrelated route instead.
    Raises NoPermittedTier when no tier remains.
    """
    dropped = forbidden_tiers(config, ns)
    chain = [t.name for t in config.chain() if t.name not in dropped]
    if not chain:
        reasons = "; ".join(v.message for v in dropped.values())
        raise NoPermittedTier(f"RoutingPolicy {config.policy} has no tier that may serve namespace "
                              f"{config.namespace}: {reasons}")
    default = config.default_tier if config.default_tier not in dropped else chain[0]

    tiers = []
    for tier in config.tiers:
        if tier.name in dropped:
            continue
        if tier.kind is TierKind.CLOUD and ns.residency is not ResidencyClass.UNRESTRICTED:
            tier = tier.model_copy(update={"pii_forbidden": True})
        tiers.append(tier)

    routes = [
        r if r.tier not in dropped else r.model_copy(update={"tier": default}) for r in config.routes
    ]
    tier_order = [n for n in config.tier_order if n not in dropped] if config.tier_order is not None else None
    override = config.override
    if override.allowed_tiers is not None:
        override = override.model_copy(update={"allowed_tiers": [n for n in override.allowed_tiers
                                                                 if n not in dropped]})
    residency = config.residency.model_copy(
        update={
            "namespace_class": ns.residency,
            "allowed_regions": sorted(ns.allowed_regions) if ns.allowed_regions is not None else None,
        }
    )
    updated = config.model_copy(
        update={
            "tiers": tiers,
            "tier_order": tier_order,
            "default_tier": default,
            "routes": routes,
            "override": override,
            "residency": residency,
        }
    )
    # model_copy skips validation; re-validate so the result obeys every rule of the router's schema.
    return RouterConfig.model_validate(updated.model_dump(by_alias=True))
