"""InferenceTier handlers: every watch event and a periodic resync run the same idempotent reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import Indexes, awaiting_finalizer
from tiered_operator.settings import OperatorSettings

_seen_generation: dict[tuple[str, str], int] = {}


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS)
def inferencetier_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    rec, idx = reconciler(memo), Indexes.from_kwargs(kwargs)
    namespace, name = str(body.meta.namespace), str(body.meta.name)
    key = (namespace, name)
    if kwargs.get("type") == "DELETED":
        _seen_generation.pop(key, None)
        rec.forget(str(body.meta.uid), labels.PLURAL_INFERENCE_TIERS, namespace, name)
        rec.after_tier_change(idx, namespace, name)
        return
    if awaiting_finalizer(body):
        return  # kopf adds its finalizer now; that patch's event reconciles the tier
    rec.reconcile_tier(idx, namespace, name)
    generation = int(body.get("metadata", {}).get("generation") or 0)
    if _seen_generation.get(key) != generation:  # created or spec changed: dependents recompile
        _seen_generation[key] = generation
        rec.after_tier_change(idx, namespace, name)


@kopf.timer(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_INFERENCE_TIERS,
    interval=OperatorSettings.from_env().resync_seconds,
    initial_delay=OperatorSettings.from_env().resync_seconds,
    idle=OperatorSettings.from_env().resync_seconds,  # a safety net: not while events reconcile the object anyway
)
def inferencetier_resync(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    rec, idx = reconciler(memo), Indexes.from_kwargs(kwargs)
    rec.audit_indexes(idx)  # at most once per interval per process: repairs what a watch gap hid from the indexes
    rec.reconcile_tier(idx, str(body.meta.namespace), str(body.meta.name))
