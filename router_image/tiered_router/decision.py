"""The routing decision: pure functions from (request, config, classifier) to a chosen tier and a reason.

Order matters and is fixed: PII scan -> residency -> capability -> classification -> budget -> choice. Residency
and PII decide which tiers a request *may* reach, capability which of those *can* serve it (tools, logprobs,
context); classification and budget only choose among those. Nothing later in the
pipeline (an override, the budget, a fallback after an outage) can add a tier that residency removed: the allowed
chain computed here is the only list dispatch walks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from . import capability
from .capability import Needs, capable_tiers
from .config import PiiAction, ResidencyClass, RouterConfig, TierConfig, TierKind, WhenExhausted
from .pii import Finding, Segment, redact, scan, scan_segments


class Reason(StrEnum):
    """Machine-readable reasons (header x-tiered-reason, metric label, `tiered explain`)."""

    ROUTE_MATCHED = "RouteMatched"
    KEYWORD_MATCHED = "KeywordMatched"
    NO_ROUTE_MATCHED = "NoRouteMatched"
    ROUTE_FORCED = "RouteRequested"
    TIER_PINNED = "TierPinned"
    PII_KEPT_LOCAL = "PiiKeptLocal"
    RESIDENCY_LOCAL_ONLY = "ResidencyLocalOnly"
    REGION_NOT_ALLOWED = "RegionNotAllowed"
    BUDGET_LOCAL_ONLY = "BudgetExhaustedLocalOnly"
    TOOLS_UNSUPPORTED = capability.TOOLS_UNSUPPORTED
    LOGPROBS_UNSUPPORTED = capability.LOGPROBS_UNSUPPORTED
    CONTEXT_TOO_LONG = capability.CONTEXT_TOO_LONG
    RESPONSE_FORMAT_UNSUPPORTED = capability.RESPONSE_FORMAT_UNSUPPORTED
    # rejections
    PII_REJECTED = "PiiRejected"
    BUDGET_REJECTED = "BudgetExhausted"
    RESIDENCY_FORBIDDEN = "ResidencyForbidden"
    OVERRIDE_NOT_ALLOWED = "OverrideNotAllowed"
    UNKNOWN_MODEL = "UnknownModel"
    NO_ALLOWED_TIER = "NoAllowedTier"
    NO_CAPABLE_TIER = "NoCapableTier"
    # spillover (set by dispatch, which sees the local tier's load)
    SPILLOVER_SATURATED = "SpilloverLocalSaturated"
    SPILLOVER_STARTING = "SpilloverLocalStarting"
    SPILLOVER_OVER_SLO = "SpilloverLocalOverSlo"


CAPABILITY_REASONS = frozenset({Reason.TOOLS_UNSUPPORTED, Reason.LOGPROBS_UNSUPPORTED, Reason.CONTEXT_TOO_LONG,
                                Reason.RESPONSE_FORMAT_UNSUPPORTED})


@dataclass(frozen=True)
class Classification:
    """What the classifier concluded for a prompt (route None = nothing passed its threshold)."""

    route: str | None
    score: float
    best_route: str | None
    best_score: float
    reason: Reason


class Classifier(Protocol):
    """Anything that maps a prompt to a route (see classify.RouteClassifier)."""

    def classify(self, text: str, input_tokens: int) -> Classification: ...


@dataclass(frozen=True)
class RoutingRequest:
    """The parts of an API request the decision needs (built by request.py, no I/O)."""

    text: str  # everything the client sent (scanned for PII)
    model: str
    pinned_tier: str | None = None  # from the override header
    input_tokens: int = 0
    route_text: str | None = None  # what the route is chosen on (last user turn); None = `text`
    needs: Needs = field(default_factory=Needs)  # tools, logprobs, completion tokens (capability routing)
    segments: tuple[Segment, ...] = ()  # the forwarded strings (request.py); scanned instead of `text` when set


@dataclass(frozen=True)
class Decision:
    """Outcome of the pipeline. `chain` is the ordered list of tiers dispatch may try, first = chosen."""

    tier: str | None
    route: str | None
    reason: Reason
    chain: tuple[str, ...] = ()
    status: int = 200  # an HTTP status when rejected
    message: str = ""
    pii: tuple[str, ...] = ()
    redact: bool = False  # dispatch must send the body with PII replaced
    classification: Classification | None = None
    notes: tuple[str, ...] = field(default=())
    spill: tuple[str, ...] = ()
    """Where dispatch may send the request instead when the chosen (local) tier is overloaded or starting: every
    other tier residency, capability and budget allow, in chain order. Empty for pinned requests and for requests
    that may not leave (PII in a restricted namespace): spillover can never widen what residency allows."""

    @property
    def rejected(self) -> bool:
        return self.tier is None


def estimate_tokens(text: str) -> int:
    """Cheap token estimate (≈4 characters per token for English BPE vocabularies)."""
    return max(1, (len(text) + 3) // 4)


def _reject(reason: Reason, status: int, message: str, pii: Sequence[Finding] = ()) -> Decision:
    return Decision(
        tier=None,
        route=None,
        reason=reason,
        status=status,
        message=message,
        pii=tuple(sorted({f.entity.value for f in pii})),
    )


_ALLOWED_CACHE: dict[tuple[int, bool], tuple[RouterConfig, list[TierConfig], dict[str, Reason]]] = {}


def allowed_tiers(config: RouterConfig, pii_present: bool) -> tuple[list[TierConfig], dict[str, Reason]]:
    """Tiers this request may reach under residency, in chain order, plus why each other tier was excluded.

    Budget exclusions are applied separately (`budget_filter`): residency is about where data may go, the
    budget about what may be spent. The answer depends only on the (immutable) config and whether PII is present,
    so it is computed once per config and PII flag; callers get their own copies.
    """
    cached = _ALLOWED_CACHE.get((id(config), pii_present))
    if cached is None or cached[0] is not config:
        if len(_ALLOWED_CACHE) > 16:  # configs are replaced on reload; keep only recent ones
            _ALLOWED_CACHE.clear()
        allowed, excluded = _allowed_tiers(config, pii_present)
        cached = _ALLOWED_CACHE[(id(config), pii_present)] = (config, allowed, excluded)
    return list(cached[1]), dict(cached[2])


def _allowed_tiers(config: RouterConfig, pii_present: bool) -> tuple[list[TierConfig], dict[str, Reason]]:
    residency = config.residency
    allowed: list[TierConfig] = []
    excluded: dict[str, Reason] = {}
    for tier in config.chain():
        if tier.kind is TierKind.CLOUD:
            if residency.namespace_class is ResidencyClass.LOCAL_ONLY:
                excluded[tier.name] = Reason.RESIDENCY_LOCAL_ONLY
                continue
            if residency.allowed_regions is not None and tier.region not in residency.allowed_regions:
                excluded[tier.name] = Reason.REGION_NOT_ALLOWED
                continue
            if pii_present and residency.namespace_class is ResidencyClass.RESTRICTED:
                excluded[tier.name] = Reason.PII_KEPT_LOCAL
                continue
        if pii_present and tier.pii_forbidden:
            excluded[tier.name] = Reason.PII_KEPT_LOCAL
            continue
        allowed.append(tier)
    return allowed, excluded


def budget_filter(config: RouterConfig, tiers: list[TierConfig]) -> list[TierConfig]:
    """When the budget is exhausted, cloud tiers leave the chain (both whenExhausted modes spend nothing more)."""
    if not config.budget.exhausted:
        return tiers
    return [t for t in tiers if t.kind is TierKind.LOCAL]


def _resolve_target(config: RouterConfig, req: RoutingRequest) -> tuple[str | None, str | None, Decision | None]:
    """(pinned tier, forced route, rejection) from the `model` field and the override header."""
    pinned: str | None = None
    forced: str | None = None
    model = req.model
    if model in config.auto_models or model == config.policy or model == "":
        pass
    elif config.tier(model) is not None:
        pinned = model
    elif any(r.name == model for r in config.routes):
        forced = model
    else:
        known = sorted(
            {*config.auto_models, config.policy, *(t.name for t in config.tiers)} | {r.name for r in config.routes}
        )
        return (
            None,
            None,
            _reject(Reason.UNKNOWN_MODEL, 404, f"model {model!r} is not a route or tier; use one of {known}"),
        )
    if req.pinned_tier is not None:
        if config.tier(req.pinned_tier) is None:
            names = [t.name for t in config.tiers]
            return (
                None,
                None,
                _reject(
                    Reason.UNKNOWN_MODEL,
                    404,
                    f"tier {req.pinned_tier!r} (header {config.override.header}) is not one of {names}",
                ),
            )
        pinned = req.pinned_tier
    if pinned is not None:
        ov = config.override
        if not ov.enabled or (ov.allowed_tiers is not None and pinned not in ov.allowed_tiers):
            return (
                None,
                None,
                _reject(
                    Reason.OVERRIDE_NOT_ALLOWED,
                    403,
                    f"this policy does not let clients pin tier {pinned!r} (override.enabled)",
                ),
            )
    return pinned, forced, None


def _no_capable_tier(excluded: dict[str, Reason]) -> str:
    """Why no tier can serve a request: each tier's capability gap or residency/budget exclusion."""
    why = "; ".join(f"{name} {capability.EXPLANATIONS[r]}" if r in CAPABILITY_REASONS else f"{name}: {r.value}"
                    for name, r in excluded.items())
    return f"no tier this request may reach can serve it: {why}"


def decide(config: RouterConfig, classifier: Classifier, req: RoutingRequest) -> Decision:
    """Run the whole pipeline for one request. Pure: same inputs, same decision."""
    pinned, forced, rejection = _resolve_target(config, req)
    if rejection is not None:
        return rejection

    # 1. PII scan
    pii_cfg = config.residency.pii
    strict = config.residency.pii_strict
    # keepLocal and reject: the first finding decides, so the scan stops there (`pii` then names what it found up
    # to that point, not necessarily every entity in the request); redaction needs every finding.
    first = pii_cfg.action is not PiiAction.REDACT
    if not pii_cfg.entities:
        findings: list[Finding] = []
    elif req.segments:
        findings = scan_segments(req.segments, pii_cfg.entities, strict, first)
    else:
        findings = scan(req.text, pii_cfg.entities, strict, first)
    entities = tuple(sorted({f.entity.value for f in findings})) if findings else ()
    if findings and pii_cfg.action is PiiAction.REJECT:
        return _reject(
            Reason.PII_REJECTED, 400, f"request contains PII ({', '.join(entities)}); policy rejects it", findings
        )
    do_redact = bool(findings) and pii_cfg.action is PiiAction.REDACT
    # Redaction lets PII-free tiers be used only where the namespace is unrestricted, and only when every finding
    # can be cut out of a single string (not a value split across messages); restricted data stays local.
    pii_present = bool(findings) and not (
        pii_cfg.action is PiiAction.REDACT
        and config.residency.namespace_class is ResidencyClass.UNRESTRICTED
        and all(f.redactable for f in findings)
    )

    # 2. Residency, then capability (within what residency allows)
    allowed, excluded = allowed_tiers(config, pii_present)
    allowed, gaps = capable_tiers(allowed, req.needs, req.input_tokens)
    for name, gap in gaps.items():
        excluded[name] = Reason(gap)

    # 3. Classification (always computed, so explain and metrics show what the policy wanted)
    classification: Classification | None = None
    route_name: str | None = None
    if pinned is not None:
        wanted, reason = pinned, Reason.TIER_PINNED
    elif forced is not None:
        route_name = forced
        wanted = next(r.tier for r in config.routes if r.name == forced)
        reason = Reason.ROUTE_FORCED
    else:
        text = req.route_text if req.route_text is not None else req.text
        if do_redact:
            text = redact(text, scan(text, pii_cfg.entities, strict))
        classification = classifier.classify(text, req.input_tokens)
        route_name = classification.route
        if route_name is not None:
            wanted = next(r.tier for r in config.routes if r.name == route_name)
        else:
            wanted = config.default_tier
        reason = classification.reason

    # 4. Budget
    chain = budget_filter(config, allowed)
    wanted_tier = config.tier(wanted)
    if config.budget.exhausted and wanted_tier is not None and wanted_tier.kind is TierKind.CLOUD:
        if config.budget.when_exhausted is WhenExhausted.REJECT:
            return _reject(
                Reason.BUDGET_REJECTED, 429, "monthly budget exhausted; policy rejects cloud-bound requests", findings
            )
        excluded.setdefault(wanted, Reason.BUDGET_LOCAL_ONLY)

    names = [t.name for t in chain]
    if not names and gaps:
        return _reject(Reason.NO_CAPABLE_TIER, 400, _no_capable_tier(excluded), findings)
    if not names:
        return _reject(
            Reason.NO_ALLOWED_TIER,
            403,
            "no tier may serve this request under the namespace's residency and the policy's budget",
            findings,
        )
    if wanted in names:
        chosen = wanted
    else:
        if pinned is not None:
            why = excluded.get(wanted, Reason.RESIDENCY_FORBIDDEN)
            if why in CAPABILITY_REASONS:
                return _reject(why, 400, f"tier {wanted!r} {capability.EXPLANATIONS[why]}", findings)
            return _reject(
                Reason.RESIDENCY_FORBIDDEN, 403, f"tier {wanted!r} may not serve this request ({why.value})", findings
            )
        reason = excluded.get(wanted, Reason.NO_ALLOWED_TIER)
        chosen = names[0]
    rest = [n for n in names if n != chosen]
    ordered = (chosen, *rest[: config.fallback.retries]) if pinned is None else (chosen,)
    chosen_tier = config.tier(chosen)
    spill = tuple(rest) if pinned is None and chosen_tier is not None and chosen_tier.kind is TierKind.LOCAL else ()
    return Decision(
        tier=chosen,
        route=route_name,
        reason=reason,
        chain=ordered,
        pii=entities,
        redact=do_redact,
        classification=classification,
        notes=tuple([f"{name}: {why.value}" for name, why in excluded.items()]) if excluded else (),
        spill=spill,
    )
