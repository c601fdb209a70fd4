"""The residency admission webhook: `@kopf.on.validate` handlers reject tiers and policies that break their
namespace's residency; kopf serves them over TLS with a CA we generate, and manages the
ValidatingWebhookConfiguration (caBundle + URL). failurePolicy is Ignore: see docs/residency.md for why the
webhook is the first line of defence, not the only one (the reconciler enforces the same decisions). The
server itself is configured in startup.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.residency import review_policy, review_tier


def _old(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object before an UPDATE (kopf passes it as `old`), or None on CREATE."""
    old = kwargs.get("old")
    return dict(old) if old else None


def _reject(message: str) -> None:
    raise kopf.AdmissionError(message, code=403)


@kopf.on.validate(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_INFERENCE_TIERS,
    id="residency-inferencetier",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
def residency_validate_tier(body: kopf.Body, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    rec = reconciler(memo)
    if namespace is None or not rec.settings.in_scope(namespace):
        return
    policy = rec.namespace_policy(namespace, rec.indexes(kwargs)).policy
    decision = review_tier(dict(body), _old(kwargs), namespace, policy)
    if not decision.allowed:
        _reject(decision.message)


@kopf.on.validate(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_ROUTING_POLICIES,
    id="residency-routingpolicy",
    operations=["CREATE", "UPDATE"],
    ignore_failures=True,
)
def residency_validate_policy(body: kopf.Body, namespace: str | None, memo: Any, **kwargs: Any) -> None:
    rec = reconciler(memo)
    if namespace is None or not rec.settings.in_scope(namespace):
        return
    idx = rec.indexes(kwargs)
    policy = rec.namespace_policy(namespace, idx).policy
    decision = review_policy(dict(body), _old(kwargs), namespace, policy, idx.tier_bodies(namespace))
    if not decision.allowed:
        _reject(decision.message)
