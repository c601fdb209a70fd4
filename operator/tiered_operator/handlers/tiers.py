"""InferenceTier events: every watch event runs the same idempotent reconcile; a new spec recompiles dependents."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import awaiting_finalizer


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS)
def inferencetier_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    rec = reconciler(memo)
    idx = rec.indexes(kwargs)
    namespace, name = str(body.meta.namespace), str(body.meta.name)
    if kwargs.get("type") == "DELETED":
        rec.forget(str(body.meta.uid), labels.PLURAL_INFERENCE_TIERS, namespace, name)
        rec.after_tier_change(idx, namespace, name)
        return
    if awaiting_finalizer(labels.PLURAL_INFERENCE_TIERS, body):
        return  # kopf adds its finalizer now (autoscaled tiers); that patch's event reconciles the tier
    if rec.own_status_echo(labels.PLURAL_INFERENCE_TIERS, body):
        return  # the event of our own status write: nothing new
    rec.reconcile_tier(idx, namespace, name)
    generation = int(body.get("metadata", {}).get("generation") or 0)
    if rec.tier_changed(namespace, name, generation, str(body.get("spec", {}).get("backend"))):
        rec.after_tier_change(idx, namespace, name)
