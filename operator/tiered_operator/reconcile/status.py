"""Status of InferenceTiers and RoutingPolicies, computed from what was observed (never from what was intended).

Each function returns the status fields this operator owns; the handler compares them with the stored status and
writes only on difference. Fields owned by other loops (p95Ms, lastScale*, SLOMet, BudgetOK values, spend
figures) are left alone; their conditions are only initialised to Unknown on first visit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiered_operator.api.common import SecretKeyRef
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.conditions import FALSE, TRUE, UNKNOWN, Condition, find, merge_conditions
from tiered_operator.reconcile.pods import PodProblem
from tiered_operator.reconcile.router_config import CompiledPolicy, NamespacePolicy
from tiered_operator.reconcile.service import tier_endpoint
from tiered_operator.residency.verdict import policy_verdict, tier_verdict
from tiered_operator.settings import OperatorSettings


def secret_problem(ref: SecretKeyRef, secret: Mapping[str, Any] | None) -> str | None:
    """Why a cloud tier's API key Secret is unusable, naming the Secret and key — never the value."""
    if secret is None:
        return f"Secret {ref.name!r} not found in the tier's namespace"
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if ref.key not in data and ref.key not in string_data:
        keys = sorted(set(data) | set(string_data))
        return f"Secret {ref.name!r} has no key {ref.key!r} (keys present: {', '.join(keys) or 'none'})"
    if not (data.get(ref.key) or string_data.get(ref.key)):
        return f"Secret {ref.name!r} key {ref.key!r} is empty"
    return None


def residency_condition(tier: InferenceTier, ns: NamespacePolicy) -> Condition:
    """ResidencyCompliant of a tier: `residency.tier_verdict`, the decision the webhook and the router config use."""
    return tier_verdict(tier, ns.policy).condition()


@dataclass(frozen=True)
class TierObservation:
    """What the handler saw for one tier."""

    deployment: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    configmap: Mapping[str, Any] | None = None
    secret_problem: str | None = None
    render_error: str | None = None
    namespace: NamespacePolicy = field(default_factory=NamespacePolicy)
    pod_problem: PodProblem | None = None
    """Why the tier's pods are not ready, from the pod and event indexes (None: fine, or just starting)."""
    egress: Condition | None = None
    """EgressRestricted: what the network enforces for the tier (residency/network.py)."""


def _dep_condition(dep: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return find((dep.get("status") or {}).get("conditions"), type_)


def _local_conditions(tier: InferenceTier, obs: TierObservation) -> tuple[list[Condition], dict[str, Any]]:
    dep = obs.deployment
    name = tier.metadata.name or ""
    fields: dict[str, Any] = {}
    if obs.render_error is not None:
        stalled = Condition("Stalled", TRUE, "UnsupportedSpec", obs.render_error)
        return [
            Condition("Ready", FALSE, "UnsupportedSpec", obs.render_error),
            Condition("Available", FALSE, "UnsupportedSpec", obs.render_error),
            Condition("ModelReady", FALSE, "UnsupportedSpec", obs.render_error),
            stalled,
        ], {"replicas": 0, "readyReplicas": 0, "readyDisplay": f"0/{tier.spec.replicas}"}
    if dep is None:
        msg = f"Deployment {naming.deployment_name(name)} does not exist yet"
        return [
            Condition("Ready", FALSE, "DeploymentMissing", msg),
            Condition("Available", FALSE, "DeploymentMissing", msg),
            Condition("ModelReady", UNKNOWN, "Pending", msg),
            Condition("Stalled", FALSE, "Reconciling", "creating the tier's workload"),
        ], {"replicas": 0, "readyReplicas": 0, "readyDisplay": f"0/{tier.spec.replicas}"}
    spec = dep.get("spec") or {}
    st = dep.get("status") or {}
    desired = int(spec.get("replicas", 1))
    replicas = int(st.get("replicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    generation = int((dep.get("metadata") or {}).get("generation") or 0)
    observed_gen = int(st.get("observedGeneration") or 0)
    # `replicas`: the pods the tier runs, or is starting (the Deployment's controller creates them a moment after
    # the Deployment; reporting the target from the start spares a status write per tier).
    fields = {"replicas": max(replicas, desired), "readyReplicas": ready, "readyDisplay": f"{ready}/{desired}"}

    avail = _dep_condition(dep, "Available")
    if avail is not None and avail.get("status") == "True":
        available = Condition("Available", TRUE, "MinimumReplicasAvailable", f"{ready}/{desired} pods ready")
    else:
        # the Deployment's own reason once it reports one; until then the one it will report
        reason = str(avail.get("reason")) if avail and avail.get("reason") else "MinimumReplicasUnavailable"
        available = Condition("Available", FALSE, reason, f"{ready}/{desired} pods ready")

    if desired == 0:
        model = Condition("ModelReady", FALSE, "ScaledToZero", "the tier has 0 replicas")
    elif ready > 0:
        model = Condition("ModelReady", TRUE, "ModelLoaded", f"{ready}/{desired} model servers loaded and ready")
    else:
        model = Condition("ModelReady", FALSE, "ModelLoading", "no model server has passed its readiness probe")

    progressing = _dep_condition(dep, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        stalled = Condition("Stalled", TRUE, "ProgressDeadlineExceeded", str(progressing.get("message", "")))
    else:
        stalled = Condition("Stalled", FALSE, "NotStalled", "")

    # Without a ready pod the tier is loading (a new Deployment, or one whose pods never got ready), not rolling
    # out: one reason from creation to readiness, so one status write fewer per tier.
    rolled_out = ready == 0 or (observed_gen >= generation and updated == desired and replicas == desired)
    missing = [kind for kind, obj in (("Service", obs.service), ("ConfigMap", obs.configmap)) if obj is None]
    failure = _dep_condition(dep, "ReplicaFailure")
    problem = obs.pod_problem
    if failure is not None and failure.get("status") == "True":
        problem = PodProblem(str(failure.get("reason") or "ReplicaFailure"), str(failure.get("message") or ""))
    if problem is not None and problem.stalled and stalled.status != TRUE:
        stalled = Condition("Stalled", TRUE, problem.reason, problem.message)
    if problem is not None and ready < desired:
        model = Condition("ModelReady", FALSE, problem.reason, problem.message) if ready == 0 else model
    if stalled.status == TRUE and (problem is None or stalled.reason != problem.reason):
        ready_c = Condition("Ready", FALSE, stalled.reason, stalled.message)
    elif missing:
        ready_c = Condition("Ready", FALSE, "ChildMissing", f"{', '.join(missing)} not found (being restored)")
    elif desired == 0:
        ready_c = Condition("Ready", FALSE, "ScaledToZero", "the tier has 0 replicas")
    elif problem is not None and ready < desired:
        ready_c = Condition("Ready", FALSE, problem.reason, f"{ready}/{desired} pods ready; {problem.message}")
    elif not rolled_out:
        ready_c = Condition("Ready", FALSE, "RolloutInProgress", f"{updated}/{desired} pods updated")
    elif ready < desired:
        ready_c = Condition("Ready", FALSE, "ModelLoading", f"{ready}/{desired} pods ready")
    else:
        ready_c = Condition("Ready", TRUE, "Ready", f"{ready}/{desired} pods ready and up to date")
    return [ready_c, available, model, stalled], fields


def _cloud_conditions(tier: InferenceTier, obs: TierObservation) -> tuple[list[Condition], dict[str, Any]]:
    residency = residency_condition(tier, obs.namespace)
    if obs.secret_problem is not None:
        available = Condition("Available", FALSE, "SecretInvalid", obs.secret_problem)
        stalled = Condition("Stalled", TRUE, "SecretInvalid", obs.secret_problem)
    else:
        available = Condition("Available", TRUE, "SecretFound", "API key Secret present")
        stalled = Condition("Stalled", FALSE, "NotStalled", "")
    model = Condition("ModelReady", TRUE, "CloudModel", "served by the cloud provider")
    if available.status != TRUE:
        ready = Condition("Ready", FALSE, available.reason, available.message)
    elif residency.status != TRUE:
        ready = Condition("Ready", FALSE, residency.reason, residency.message)
    else:
        ready = Condition("Ready", TRUE, "Ready", "cloud tier validated")
    return [ready, available, model, stalled], {"readyDisplay": "-"}


def tier_status(
    tier: InferenceTier,
    obs: TierObservation,
    existing: Mapping[str, Any] | None,
    settings: OperatorSettings,
    now: str,
) -> dict[str, Any]:
    """The status fields this operator owns for `tier`, ready to compare and merge-patch."""
    existing = existing or {}
    name = tier.metadata.name or ""
    namespace = tier.metadata.namespace or "default"
    generation = int(tier.metadata.generation or 0)
    if tier.spec.cloud is not None:
        conds, fields = _cloud_conditions(tier, obs)
        fields["endpoint"] = tier.spec.cloud.effective_base_url
        fields["model"] = tier.spec.cloud.model
    else:
        conds, fields = _local_conditions(tier, obs)
        local = tier.spec.local
        fields["selector"] = naming.selector_string(naming.tier_selector(name))
        fields["endpoint"] = tier_endpoint(name, namespace, settings)
        if local is not None:
            fields["model"] = local.model.source.rsplit("/", 1)[-1][:256]
            quant = local.model.effective_quantization
            if quant:
                fields["quantization"] = quant
        conds.append(residency_condition(tier, obs.namespace))
    if tier.spec.cloud is not None:
        conds.append(residency_condition(tier, obs.namespace))
    if obs.egress is not None:
        conds.append(obs.egress)
    if tier.spec.autoscaling is None:  # with autoscaling, SLOMet belongs to the autoscaler
        if tier.spec.cloud is not None:
            conds.append(Condition("SLOMet", UNKNOWN, "CloudTier", "cloud latency is reported by the router"))
        else:
            reason = "NotAutoscaled" if tier.spec.slo is not None else "NoSLO"
            conds.append(Condition("SLOMet", UNKNOWN, reason, "latency is evaluated only for autoscaled tiers"))
    merged = merge_conditions(existing.get("conditions"), conds, generation=generation, now=now)
    fields["conditions"] = _own(merged, {c.type for c in conds})
    fields["observedGeneration"] = generation
    return fields


@dataclass(frozen=True)
class GatewayObservation:
    """What the handler saw of a gateway-mode policy's router."""

    endpoint: str
    deployment: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    pod_problem: PodProblem | None = None


def gateway_condition(obs: GatewayObservation, name: str) -> Condition | None:
    """Why the gateway is not serving yet, or None when every router pod is ready and up to date."""
    dep = obs.deployment
    if dep is None or obs.service is None:
        return Condition("Ready", FALSE, "GatewayPending", f"gateway {name} is being created")
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    desired, ready = int(spec.get("replicas", 1)), int(st.get("readyReplicas") or 0)
    rolled_out = int(st.get("observedGeneration") or 0) >= int((dep.get("metadata") or {}).get("generation") or 0)
    rolled_out = rolled_out and int(st.get("updatedReplicas") or 0) == desired
    if ready >= desired and rolled_out:
        return None
    failure = _dep_condition(dep, "ReplicaFailure")
    problem = obs.pod_problem
    if failure is not None and failure.get("status") == "True":
        problem = PodProblem(str(failure.get("reason") or "ReplicaFailure"), str(failure.get("message") or ""))
    detail = f"gateway {name}: {ready}/{desired} router pods ready"
    if problem is not None:
        return Condition("Ready", FALSE, problem.reason, f"{detail}; {problem.message}")
    return Condition("Ready", FALSE, "GatewayStarting", detail)


def policy_status(
    policy: RoutingPolicy,
    compiled: CompiledPolicy,
    tiers: Mapping[str, InferenceTier],
    namespace: NamespacePolicy,
    observed_configmap: Mapping[str, Any] | None,
    existing: Mapping[str, Any] | None,
    now: str,
    gateway: GatewayObservation | None = None,
) -> dict[str, Any]:
    """The status fields this operator owns for `policy`; in gateway mode Ready also needs the gateway serving."""
    existing = existing or {}
    ns_name = policy.metadata.namespace or "default"
    conds: list[Condition] = []
    if compiled.missing_tiers:
        missing = ", ".join(compiled.missing_tiers)
        conds.append(
            Condition("TiersResolved", FALSE, "TierNotFound", f"InferenceTier {missing} not found in {ns_name}")
        )
    else:
        conds.append(Condition("TiersResolved", TRUE, "AllTiersFound", f"{len(policy.spec.tiers)} tiers"))

    verdict = policy_verdict(
        policy.metadata.name or "", ns_name, policy.spec.tiers, policy.spec.default_tier, tiers, namespace.policy
    )
    conds.append(verdict.condition)

    observed_text = ((observed_configmap or {}).get("data") or {}).get(naming.POLICY_CONFIG_KEY)
    fields: dict[str, Any] = {}
    if compiled.missing_tiers:
        waiting = ", ".join(compiled.missing_tiers)
        ready = Condition("Ready", FALSE, "TierNotFound", f"waiting for InferenceTier {waiting}")
    elif compiled.error is not None:
        ready = Condition("Ready", FALSE, "InvalidRouterConfig", compiled.error)
    elif observed_text is None or observed_text != compiled.text:
        ready = Condition("Ready", FALSE, "ConfigPending", "router config is being written")
    else:
        ready = Condition("Ready", TRUE, "ConfigApplied", f"router config {compiled.config_hash} written")
        fields["configHash"] = compiled.config_hash
        if gateway is not None:
            name = naming.gateway_name(policy.metadata.name or "")
            ready = gateway_condition(gateway, name) or Condition(
                "Ready", TRUE, "GatewayReady", f"router config {compiled.config_hash} served by gateway {name} at "
                f"{gateway.endpoint}")  # fmt: skip
    if gateway is not None:
        fields["endpoint"] = gateway.endpoint
    conds.insert(0, ready)
    generation = int(policy.metadata.generation or 0)
    merged = merge_conditions(existing.get("conditions"), conds, generation=generation, now=now)
    fields["conditions"] = _own(merged, {c.type for c in conds})
    fields["observedGeneration"] = generation
    return fields


TIER_STATUS_KEYS = frozenset(
    {
        "observedGeneration",
        "conditions",
        "replicas",
        "readyReplicas",
        "readyDisplay",
        "selector",
        "model",
        "quantization",
        "endpoint",
    }
)
"""Status fields of an InferenceTier this operator owns (the autoscaler owns p95Ms, lastScale*, SLOMet)."""
ROUTE_THRESHOLD_SOURCES = ("route", "policy", "auto")


def route_thresholds_status(samples: Sequence[tuple[Mapping[str, str], float]]) -> list[dict[str, str]] | None:
    """`status.routeThresholds` from the routers' route_threshold series (labels route, source): one entry per
    route, sorted by name, thresholds as decimal strings. None when the routers reported nothing (yet)."""
    by_route: dict[str, dict[str, str]] = {}
    for labels_, value in samples:
        route, source = labels_.get("route"), labels_.get("source")
        if not route or source not in ROUTE_THRESHOLD_SOURCES:
            continue
        by_route[route] = {"route": route, "threshold": f"{value:.4f}".rstrip("0").rstrip("."), "source": source}
    return [by_route[r] for r in sorted(by_route)] or None


POLICY_STATUS_KEYS = frozenset({"observedGeneration", "conditions", "configHash", "endpoint"})
"""Status fields of a RoutingPolicy this operator owns (the budget loop owns BudgetOK and the spend figures)."""


def _own(conditions: list[dict[str, Any]], types: set[str]) -> list[dict[str, Any]]:
    return [c for c in conditions if c["type"] in types]
