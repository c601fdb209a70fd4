"""What `tiered status` and `tiered explain` show: pure formatting over objects read elsewhere.

The functions here take plain dicts (as the API server returns them) so they are tested without I/O; the CLI
reads the cluster or a file and hands the objects over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy
from tiered_operator.settings import OperatorSettings
from tiered_router.config import RouterConfig


def _condition(obj: Mapping[str, Any], type_: str) -> str:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            return str(cond.get("status", "Unknown"))
    return "Unknown"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def tier_rows(tiers: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for tier in sorted(tiers, key=lambda t: (t["metadata"]["namespace"], t["metadata"]["name"])):
        spec, status = tier.get("spec", {}), tier.get("status", {}) or {}
        slo = (spec.get("slo") or {}).get("latencyP95Ms")
        p95 = status.get("p95Ms")
        desired = spec.get("replicas", 0) if spec.get("backend") == "local" else "-"
        ready = f"{status.get('readyReplicas', 0)}/{desired}" if spec.get("backend") == "local" else "-"
        rows.append([
            tier["metadata"]["namespace"], tier["metadata"]["name"], spec.get("backend", "?"),
            _condition(tier, "Ready"), ready,
            f"{p95}ms" if p95 is not None else "-", f"{slo}ms" if slo is not None else "-",
            _condition(tier, "SLOMet"), _condition(tier, "ResidencyCompliant"),
        ])
    return rows


def policy_rows(policies: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for pol in sorted(policies, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        spec, status = pol.get("spec", {}), pol.get("status", {}) or {}
        budget = (spec.get("budget") or {}).get("monthlyUSD")
        spend = status.get("monthToDateUSD")
        rows.append([
            pol["metadata"]["namespace"], pol["metadata"]["name"], str(spec.get("defaultTier", "-")),
            _condition(pol, "Ready"), _condition(pol, "BudgetOK"),
            str(status.get("localShare", "-")),
            f"${spend}" + (f" / ${budget}" if budget is not None else "") if spend is not None else "-",
            f"${status['avoidedUSD']}" if status.get("avoidedUSD") is not None else "-",
        ])
    return rows


def _find(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []) or []:
        if cond.get("type") == type_:
            return dict(cond)
    return {}


def not_ready_lines(objects: Iterable[Mapping[str, Any]], kind: str) -> list[str]:
    """Why each object that is not Ready is not: the reason and message of its Ready condition."""
    lines = []
    for obj in sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        ready = _find(obj, "Ready")
        if ready.get("status") == "True":
            continue
        meta = obj["metadata"]
        why = f"{ready.get('reason') or 'Unknown'}: {ready.get('message') or 'no status reported yet'}"
        lines.append(f"  {kind} {meta['namespace']}/{meta['name']}: {why}")
    return lines


def render_status(tiers: Sequence[Mapping[str, Any]], policies: Sequence[Mapping[str, Any]]) -> str:
    """The `tiered status` tables: tiers (P95 vs SLO, replicas) and policies (spend, local share), then why
    anything not ready is not (the Ready condition's reason and message)."""
    tier_header = ["NAMESPACE", "TIER", "BACKEND", "READY", "REPLICAS", "P95", "SLO", "SLO-MET", "RESIDENCY-OK"]
    pol_header = ["NAMESPACE", "POLICY", "DEFAULT", "READY", "BUDGET-OK", "LOCAL-SHARE", "SPEND (MTD)", "AVOIDED"]
    parts = [
        _table(tier_header, tier_rows(tiers)) if tiers else "No InferenceTiers found.",
        "",
        _table(pol_header, policy_rows(policies)) if policies else "No RoutingPolicies found.",
    ]
    why = not_ready_lines(tiers, "InferenceTier") + not_ready_lines(policies, "RoutingPolicy")
    if why:
        parts += ["", "Not ready:", *why]
    return "\n".join(parts)


@dataclass(frozen=True)
class PolicyBundle:
    """A RoutingPolicy with the tiers it names and its namespace's labels: all `explain` needs."""

    policy: dict[str, Any]
    tiers: dict[str, dict[str, Any]]
    namespace_labels: dict[str, str]


def bundle_from_documents(text: str, residency: str | None = None) -> PolicyBundle:
    """Read a multi-document YAML (a RoutingPolicy, its InferenceTiers, optionally its Namespace)."""
    docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    policies = [d for d in docs if d.get("kind") == "RoutingPolicy"]
    if len(policies) != 1:
        raise ValueError(f"the file must hold exactly one RoutingPolicy (found {len(policies)})")
    tiers = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "InferenceTier"}
    ns_docs = [d for d in docs if d.get("kind") == "Namespace"]
    ns_labels = dict((ns_docs[0].get("metadata", {}).get("labels") or {}) if ns_docs else {})
    if residency is not None:
        ns_labels[labels.LABEL_RESIDENCY] = residency
    return PolicyBundle(policies[0], tiers, ns_labels)


def compile_bundle(bundle: PolicyBundle, settings: OperatorSettings | None = None) -> RouterConfig:
    """Compile the bundle exactly as the operator compiles the router ConfigMap."""
    policy = RoutingPolicy.model_validate(bundle.policy)
    tiers = {name: InferenceTier.model_validate(obj) for name, obj in bundle.tiers.items()}
    compiled = compile_policy(policy, tiers, NamespacePolicy.from_labels(bundle.namespace_labels),
                              settings or OperatorSettings())
    if compiled.missing_tiers:
        raise ValueError("the policy names tiers that were not found: " + ", ".join(compiled.missing_tiers)
                         + " (add their InferenceTier documents to the file, or use --policy-ref)")
    if compiled.config is None:
        raise ValueError(f"the policy does not compile into a router config: {compiled.error}")
    return compiled.config


def render_explanation(result: Mapping[str, Any]) -> str:
    """Human-readable form of tiered_router.explain.explain()'s result."""
    lines = [
        f"tier:    {result['tier'] or '-'}" + ("   (REJECTED: " + str(result.get("message")) + ")"
                                                if result.get("rejected") else ""),
        f"route:   {result.get('route') or '-'}",
        f"reason:  {result['reason']}",
        f"chain:   {' -> '.join(result.get('chain') or []) or '-'}",
        f"pii:     {', '.join(result.get('pii') or []) or 'none found'}",
    ]
    for note in result.get("excluded") or []:
        lines.append(f"excluded: {note}")
    lines.append(f"encoder: {result.get('encoder')}  (decision {result.get('decisionMs')} ms)")
    lines.append("scores:")
    for score in result.get("scores") or []:
        mark = "*" if score["route"] == result.get("route") else " "
        source = f" ({score['thresholdSource']})" if score.get("thresholdSource") else ""
        lines.append(f" {mark} {score['route']:<24} -> {score['tier']:<16} score {score['score']:.3f}  "
                     f"threshold {score['threshold']:.3f}{source}")
    cal = result.get("calibration")
    if cal:
        lines.append(
            f"auto threshold: {cal['threshold']} ({cal['basis']}, target out-of-scope->default "
            f"{cal['targetOutOfScopeRate']}"
            + (f"; held-out {cal['heldOutInScope']:.3f} in-scope / {cal['heldOutOutOfScope']:.3f} out-of-scope"
               if "heldOutInScope" in cal else "")
            + ")"
        )
    return "\n".join(lines)
