"""Compile RoutingPolicies and their InferenceTiers into the router's own config schema.

The schema is the router's (`tiered_router.config`), imported rather than re-declared, so a field the router
does not know fails here, in the operator, with a message, instead of in a pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy, Spillover
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.compare import content_hash
from tiered_operator.reconcile.deployment import CloudKeyMount, RouterSidecar
from tiered_operator.reconcile.service import tier_endpoint
from tiered_operator.residency import NamespacePolicy as ResidencyNamespacePolicy
from tiered_operator.residency import NoPermittedTier, apply_residency, namespace_policy
from tiered_operator.settings import OperatorSettings
from tiered_router.config import SCHEMA_VERSION, ConfigError, RouterConfig, parse_config, render_config

PII_ENTITY_NAMES: dict[str, str] = {
    "EMAIL": "email",
    "PHONE": "phone",
    "CREDIT_CARD": "creditCard",
    "IBAN": "iban",
    "SSN": "usSsn",
    "IP_ADDRESS": "ipAddress",
    "API_KEY": "apiKey",
}
"""CRD entity names (UPPER_SNAKE, the API's convention) → the router's names."""


def _default_policy() -> ResidencyNamespacePolicy:
    return namespace_policy({})


@dataclass(frozen=True)
class NamespacePolicy:
    """The residency policy of the namespace a tier or policy lives in: the residency package's reading of its
    labels and annotations (`residency.namespace_policy`), the one the webhook and the NetworkPolicies use too."""

    policy: ResidencyNamespacePolicy = field(default_factory=_default_policy)

    @classmethod
    def from_labels(
        cls, ns_labels: Mapping[str, str] | None, ns_annotations: Mapping[str, str] | None = None
    ) -> NamespacePolicy:
        return cls(namespace_policy(ns_labels or {}, ns_annotations or {}))

    @property
    def residency(self) -> str:
        """The effective class (`local-only` for an unreadable label: fail closed)."""
        return self.policy.residency.value

    @property
    def allowed_regions(self) -> tuple[str, ...] | None:
        regions = self.policy.allowed_regions
        return None if regions is None else tuple(sorted(regions))


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy's router config, or why there is none."""

    policy: str
    config: RouterConfig | None
    text: str | None
    config_hash: str | None
    missing_tiers: tuple[str, ...] = ()
    error: str | None = None


def _pricing(tier: InferenceTier) -> dict[str, float]:
    p = tier.spec.pricing
    if p is None:
        return {"inputPer1M": 0.0, "outputPer1M": 0.0}
    return {
        "inputPer1M": float(Decimal(p.input_usd_per_million)),
        "outputPer1M": float(Decimal(p.output_usd_per_million)),
    }


def tier_capabilities(tier: InferenceTier) -> dict[str, Any]:
    """What a tier can serve, for the router's capability routing. Local tiers: what the runtime implements (the
    project's llama.cpp server refuses tools and logprobs; vLLM as the operator starts it returns logprobs but has
    no tool parser enabled) and the context the model is served with. Cloud tiers: `cloud.capabilities`."""
    local, cloud = tier.spec.local, tier.spec.cloud
    if local is not None:
        return {"tools": False, "logprobs": local.runtime == "vllm", "contextLength": local.model.context_length}
    caps = cloud.capabilities if cloud is not None else None
    if caps is None:
        return {"tools": True, "logprobs": True}
    out: dict[str, Any] = {"tools": caps.tools, "logprobs": caps.logprobs}
    if caps.context_length is not None:
        out["contextLength"] = caps.context_length
    return out


def tier_config(tier: InferenceTier, settings: OperatorSettings) -> dict[str, Any]:
    """How a router reaches one tier (the router schema's wire form)."""
    name = tier.metadata.name or ""
    namespace = tier.metadata.namespace or "default"
    cloud = tier.spec.cloud
    if cloud is not None:
        out: dict[str, Any] = {
            "name": name,
            "kind": "cloud",
            "baseURL": cloud.effective_base_url,
            "model": cloud.model,
            "apiKeyFile": naming.secret_key_path(name, cloud.api_key_secret_ref.key),
            "pricing": _pricing(tier),
            "piiForbidden": True,
            "capabilities": tier_capabilities(tier),
        }
        if cloud.region is not None:
            out["region"] = cloud.region
        return out
    out = {
        "name": name,
        "kind": "local",
        "baseURL": tier_endpoint(name, namespace, settings),
        "model": name,  # the model server is started with --model-name=<tier>
        "pricing": _pricing(tier),
        "piiForbidden": False,
        "capabilities": tier_capabilities(tier),
    }
    slo = tier.spec.slo
    if slo is not None:  # spillover keeps the tier's predicted latency within it
        out["slo"] = {"latencyP95Ms": slo.latency_p95_ms, "metric": slo.metric}
    return out


def _encoder_path(path: str | None) -> str | None:
    if path is not None and path.startswith("pvc://"):
        return f"{naming.PVC_ROOT}/{path.removeprefix('pvc://')}"
    return path


def budget_exhausted(policy: RoutingPolicy) -> bool:
    """The budget loop reports exhaustion as BudgetOK=False; the router config follows it."""
    cond = policy.status.condition("BudgetOK") if policy.status else None
    return cond is not None and cond.status == "False" and cond.reason == "BudgetExhausted"


def _residency(namespace: NamespacePolicy, policy: RoutingPolicy | None) -> dict[str, Any]:
    out: dict[str, Any] = {"namespaceClass": namespace.residency}
    if namespace.allowed_regions is not None:
        out["allowedRegions"] = list(namespace.allowed_regions)
    if policy is not None and policy.spec.residency is not None:
        pii = policy.spec.residency.pii
        out["pii"] = {"entities": [PII_ENTITY_NAMES[e] for e in pii.entities], "action": pii.action}
        if pii.strict is not None:
            out["pii"]["strict"] = pii.strict
    return out


def _route(route: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": route.name,
        "tier": route.tier,
        "examples": list(route.examples),
        "keywords": list(route.keywords),
    }
    if route.threshold is not None:
        out["threshold"] = float(route.threshold)
    if route.max_input_tokens is not None:
        out["maxInputTokens"] = route.max_input_tokens
    return out


def policy_config_data(
    policy: RoutingPolicy,
    tiers: Mapping[str, InferenceTier],
    namespace: NamespacePolicy,
    settings: OperatorSettings,
) -> dict[str, Any]:
    """The router config of a policy whose tiers all exist, before the router's validation."""
    spec = policy.spec
    data: dict[str, Any] = {
        "schemaVersion": SCHEMA_VERSION,
        "policy": policy.metadata.name or "",
        "namespace": policy.metadata.namespace or "default",
        "tiers": [tier_config(tiers[t], settings) for t in spec.tiers],
        "tierOrder": list(spec.tiers),
        "defaultTier": spec.default_tier,
        "routes": [_route(r) for r in spec.routes],
        "residency": _residency(namespace, policy),
    }
    if spec.classifier is not None:
        encoder: dict[str, Any] = {"kind": spec.classifier.encoder.type}
        path = _encoder_path(spec.classifier.encoder.path)
        if path is not None:
            encoder["path"] = path
        threshold = spec.classifier.threshold
        data["classifier"] = {
            "encoder": encoder,
            "defaultThreshold": threshold if threshold == "auto" else float(threshold),
            "targetOutOfScopeRate": float(spec.classifier.target_out_of_scope_rate),
        }
    if spec.fallback is not None:
        data["fallback"] = {
            "timeoutMs": spec.fallback.timeout_ms,
            "retries": spec.fallback.retries,
            "on": list(spec.fallback.triggers),
        }
    spillover = spec.spillover if spec.spillover is not None else Spillover()
    data["spillover"] = {"enabled": spillover.enabled, "maxLocalWaitMs": spillover.max_local_wait_ms}
    if spec.budget is not None:
        data["budget"] = {
            "monthlyUSD": float(spec.budget.monthly),
            "exhausted": budget_exhausted(policy),
            "whenExhausted": spec.budget.when_exhausted,
        }
    return data


def compile_policy(
    policy: RoutingPolicy,
    tiers: Mapping[str, InferenceTier],
    namespace: NamespacePolicy,
    settings: OperatorSettings,
) -> CompiledPolicy:
    """The router config of `policy`; tiers missing from `tiers` make it uncompilable (TiersResolved=False)."""
    name = policy.metadata.name or ""
    missing = tuple(t for t in policy.spec.tiers if t not in tiers)
    if missing:
        return CompiledPolicy(name, None, None, None, missing_tiers=missing)
    try:
        # the router's own validation, exactly as the router will run it on the mounted file
        config = parse_config(policy_config_data(policy, tiers, namespace, settings))
        config = apply_residency(config, namespace.policy)
    except (ConfigError, NoPermittedTier) as exc:
        return CompiledPolicy(name, None, None, None, error=str(exc))
    text = render_config(config)
    return CompiledPolicy(name, config, text, content_hash(text))


def passthrough_config(tier: InferenceTier, namespace: NamespacePolicy, settings: OperatorSettings) -> RouterConfig:
    """The sidecar config of a tier no policy uses: every request goes to the tier itself."""
    own = tier_config(tier, settings)
    return parse_config(
        {
            "schemaVersion": SCHEMA_VERSION,
            "policy": own["name"],
            "namespace": tier.metadata.namespace or "default",
            "tiers": [own],
            "defaultTier": own["name"],
            "residency": _residency(namespace, None),
        }
    )


def policies_using(tier_name: str, policies: Iterable[RoutingPolicy]) -> list[RoutingPolicy]:
    """Sidecar-mode policies that list the tier, the one whose default tier it is first, then by name."""
    using = [
        p for p in policies if tier_name in p.spec.tiers and (p.spec.router is None or p.spec.router.mode == "sidecar")
    ]
    return sorted(using, key=lambda p: (p.spec.default_tier != tier_name, p.metadata.name or ""))


@dataclass(frozen=True)
class TierRouterConfig:
    """The tier's sidecar ConfigMap data and what the Deployment needs to run it."""

    data: dict[str, str]
    sidecar: RouterSidecar
    primary_policy: str | None


def cloud_key_mounts(compiled: CompiledPolicy, tiers: Mapping[str, InferenceTier]) -> tuple[CloudKeyMount, ...]:
    """The API-key Secrets the sidecar needs: those of the cloud tiers left in the compiled config.

    Residency drops forbidden cloud tiers from the config (`apply_residency`); their keys must not be mounted
    either, so the pod never holds a credential for a tier it may not call.
    """
    if compiled.config is None:
        return ()
    return tuple(
        CloudKeyMount(tier=t.name, secret=cloud.api_key_secret_ref.name, key=cloud.api_key_secret_ref.key)
        for t in compiled.config.tiers  # the policy's order, less what residency dropped
        if t.name in tiers and (cloud := tiers[t.name].spec.cloud) is not None
    )


def router_sidecar(
    policy: RoutingPolicy, compiled: CompiledPolicy, tiers: Mapping[str, InferenceTier]
) -> RouterSidecar:
    """What a router serving `policy` needs in its pod (sidecar or gateway): the API keys of the cloud tiers left
    in the compiled config, the claim of an encoder given as pvc://, the resources the policy asks for."""
    encoder_path = policy.spec.classifier.encoder.path if policy.spec.classifier else None
    claims: tuple[str, ...] = ()
    if encoder_path is not None and encoder_path.startswith("pvc://"):
        claims = (encoder_path.removeprefix("pvc://").split("/", 1)[0],)
    resources = None
    if policy.spec.router is not None and policy.spec.router.resources is not None:
        resources = policy.spec.router.resources.to_k8s() or None
    return RouterSidecar(key_mounts=cloud_key_mounts(compiled, tiers), resources=resources, pvc_claims=claims)


def tier_router_config(
    tier: InferenceTier,
    compiled: Sequence[CompiledPolicy],
    policies: Sequence[RoutingPolicy],
    tiers: Mapping[str, InferenceTier],
    namespace: NamespacePolicy,
    settings: OperatorSettings,
) -> TierRouterConfig:
    """`router.json` is the primary policy's config (or a passthrough); every usable policy is kept too.

    One router process serves one policy; the primary is the policy whose default tier this is, else the
    first by name. Policies that do not compile are left out (their own status says why).
    """
    name = tier.metadata.name or ""
    by_name = {c.policy: c for c in compiled if c.config is not None}
    usable = [p for p in policies_using(name, policies) if (p.metadata.name or "") in by_name]
    data: dict[str, str] = {}
    primary: str | None = None
    sidecar = RouterSidecar()
    if usable:
        first = usable[0]
        primary = first.metadata.name or ""
        main = by_name[primary]
        data[naming.ROUTER_CONFIG_FILE] = main.text or ""
        sidecar = router_sidecar(first, main, tiers)
        for p in usable:
            pname = p.metadata.name or ""
            data[f"policy-{pname}.json"] = by_name[pname].text or ""
    else:
        data[naming.ROUTER_CONFIG_FILE] = render_config(passthrough_config(tier, namespace, settings))
    return TierRouterConfig(data=data, sidecar=sidecar, primary_policy=primary)


def build_configmap(
    name: str,
    namespace: str,
    data: Mapping[str, str],
    child_labels: Mapping[str, str],
    owner: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(child_labels),
            "ownerReferences": [owner],
        },
        "data": dict(data),
    }


def build_router_configmap(tier: InferenceTier, config: TierRouterConfig) -> dict[str, Any]:
    """The tier's sidecar router ConfigMap (`<tier>-router`)."""
    meta = tier.metadata
    if meta.name is None or meta.uid is None:
        raise ValueError("build_router_configmap needs metadata.name and metadata.uid")
    return build_configmap(
        naming.router_configmap_name(meta.name),
        meta.namespace or "default",
        config.data,
        {**naming.tier_labels(meta.name), labels.LABEL_COMPONENT: labels.COMPONENT_ROUTER},
        naming.owner_reference(labels.KIND_INFERENCE_TIER, meta.name, meta.uid),
    )


def build_policy_configmap(policy: RoutingPolicy, compiled: CompiledPolicy) -> dict[str, Any] | None:
    """The policy's own compiled config (`<policy>-policy`), or None when it does not compile."""
    meta = policy.metadata
    if compiled.text is None or meta.name is None or meta.uid is None:
        return None
    return build_configmap(
        naming.policy_configmap_name(meta.name),
        meta.namespace or "default",
        {naming.POLICY_CONFIG_KEY: compiled.text},
        naming.policy_labels(meta.name),
        naming.owner_reference(labels.KIND_ROUTING_POLICY, meta.name, meta.uid),
    )
