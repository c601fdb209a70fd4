"""Routing by capability: what a request uses that some tiers cannot serve (pure functions, no I/O).

A request that calls tools, asks for log probabilities, or needs more context than a tier's window may only go to
tiers that can serve it. This runs after residency (which decides where the data may go) and before the route's
choice: it removes tiers from the chain, never adds one. The tiers' capabilities come from the router config
(`TierConfig.capabilities`, rendered by the operator from each InferenceTier).

The context check uses the router's token estimate; a tier that still answers 400 ``context_length_exceeded`` (or
``unsupported_schema_keyword`` for a response_format it cannot enforce) is passed over by dispatch like a failed
attempt (`proxy.py`), within the same chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .config import TierConfig

TOOLS_UNSUPPORTED = "ToolsUnsupported"
LOGPROBS_UNSUPPORTED = "LogprobsUnsupported"
CONTEXT_TOO_LONG = "ContextTooLong"
RESPONSE_FORMAT_UNSUPPORTED = "ResponseFormatUnsupported"

UPSTREAM_CAPABILITY_CODES: dict[str, str] = {
    "context_length_exceeded": CONTEXT_TOO_LONG,
    "unsupported_schema_keyword": RESPONSE_FORMAT_UNSUPPORTED,
}
"""OpenAI error codes (in a 400) with which a tier says it cannot serve this request, though another tier may."""

EXPLANATIONS: dict[str, str] = {
    TOOLS_UNSUPPORTED: "cannot call tools",
    LOGPROBS_UNSUPPORTED: "does not return logprobs",
    CONTEXT_TOO_LONG: "has a smaller context window than the request needs",
    RESPONSE_FORMAT_UNSUPPORTED: "cannot enforce the response_format schema",
}


@dataclass(frozen=True)
class Needs:
    """What a request uses that not every tier serves."""

    tools: bool = False
    logprobs: bool = False
    max_tokens: int | None = None
    """Completion tokens asked for (max_completion_tokens / max_tokens); None: not set."""


def request_needs(body: Mapping[str, Any]) -> Needs:
    """The needs of an OpenAI chat or completion body (fields already type-checked loosely by request.py)."""
    tools = bool(body.get("tools") or body.get("functions")) and body.get("tool_choice") != "none"
    logprobs = body.get("logprobs")
    wants_logprobs = logprobs is not None and logprobs is not False and logprobs != 0
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else None
    return Needs(tools=tools, logprobs=wants_logprobs, max_tokens=max_tokens)


def capability_gap(tier: TierConfig, needs: Needs, input_tokens: int) -> str | None:
    """Why `tier` cannot serve the request (a reason value), or None when it can."""
    caps = tier.capabilities
    if needs.tools and not caps.tools:
        return TOOLS_UNSUPPORTED
    if needs.logprobs and not caps.logprobs:
        return LOGPROBS_UNSUPPORTED
    if caps.context_length is not None and input_tokens + max(1, needs.max_tokens or 0) > caps.context_length:
        return CONTEXT_TOO_LONG
    return None


def capable_tiers(tiers: Sequence[TierConfig], needs: Needs,
                  input_tokens: int) -> tuple[list[TierConfig], dict[str, str]]:
    """The tiers that can serve the request (order kept) and, for the others, why not."""
    if not needs.tools and not needs.logprobs and not any(t.capabilities.context_length for t in tiers):
        return list(tiers), {}
    kept: list[TierConfig] = []
    gaps: dict[str, str] = {}
    for tier in tiers:
        gap = capability_gap(tier, needs, input_tokens)
        if gap is None:
            kept.append(tier)
        else:
            gaps[tier.name] = gap
    return kept, gaps


def upstream_gap(status: int, body: bytes) -> str | None:
    """The capability reason when an upstream's 400 says it cannot serve this request (else None)."""
    if status != 400 or not body or b'"code"' not in body:
        return None
    import json

    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    code = error.get("code") if isinstance(error, dict) else None
    return UPSTREAM_CAPABILITY_CODES.get(code) if isinstance(code, str) else None
