"""Explaining a decision without serving traffic (`tiered explain`, `tiered-router explain`).

Runs exactly the pipeline the router runs (decision.decide) and returns a JSON-ready dict with the tier, the
reason, the allowed chain, PII findings, tiers excluded and why, and every route's score against its threshold.
"""

from __future__ import annotations

import time
from typing import Any

from .classify import RouteClassifier
from .config import RouterConfig, render_config
from .decision import RoutingRequest, decide, estimate_tokens
from .encoders import load_encoder

_CLASSIFIERS: dict[str, RouteClassifier] = {}


def classifier_for(config: RouterConfig) -> RouteClassifier:
    """A classifier for `config`, cached by the config's canonical text (building one encodes every example)."""
    key = render_config(config)
    found = _CLASSIFIERS.get(key)
    if found is None:
        if len(_CLASSIFIERS) >= 4:
            _CLASSIFIERS.clear()
        found = _CLASSIFIERS[key] = RouteClassifier(config, load_encoder(config.classifier.encoder))
    return found


def explain(
    prompt: str,
    config: RouterConfig,
    *,
    model: str = "auto",
    pinned_tier: str | None = None,
    classifier: RouteClassifier | None = None,
) -> dict[str, Any]:
    """What the router would do with `prompt` (as the last user message) under `config`, and why."""
    clf = classifier or classifier_for(config)
    req = RoutingRequest(text=prompt, model=model, pinned_tier=pinned_tier, input_tokens=estimate_tokens(prompt))
    t0 = time.perf_counter()
    decision = decide(config, clf, req)
    decision_ms = (time.perf_counter() - t0) * 1000
    scores = clf.scores(prompt)
    routes = [
        {
            "route": r.name,
            "tier": r.tier,
            "score": round(scores.routes.get(r.name, 0.0), 4),
            "threshold": round(th, 4),
            "thresholdSource": src,  # route: its own; policy: classifier.threshold; auto: derived (calibration)
        }
        for r, th, src in zip(clf.routes, clf.thresholds, clf.threshold_sources, strict=True)
    ]
    routes.sort(key=lambda x: -float(str(x["score"])))
    return {
        "tier": decision.tier,
        "route": decision.route,
        "reason": decision.reason.value,
        "rejected": decision.rejected,
        "status": decision.status,
        "message": decision.message,
        "chain": list(decision.chain),
        "pii": list(decision.pii),
        "redacted": decision.redact,
        "excluded": list(decision.notes),
        "scores": routes,
        "outOfScopeScore": round(scores.default, 4),
        "encoder": clf.encoder.name,
        "calibration": clf.calibration.summary() if clf.calibration is not None else None,
        "decisionMs": round(decision_ms, 3),
    }
