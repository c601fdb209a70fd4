"""RoutingPolicy handlers: recompile on every event and on a periodic resync."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import Indexes, awaiting_finalizer
from tiered_operator.settings import OperatorSettings


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES)
def routingpolicy_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    spec_tiers = None if kwargs.get("type") == "DELETED" else list(body.get("spec", {}).get("tiers") or [])
    namespace, name = str(body.meta.namespace), str(body.meta.name)
    if spec_tiers is not None and awaiting_finalizer(body):
        return  # kopf adds its finalizer now; that patch's event reconciles the policy
    rec = reconciler(memo)
    if spec_tiers is None:
        rec.forget(str(body.meta.uid), labels.PLURAL_ROUTING_POLICIES, namespace, name)
    rec.after_policy_change(Indexes.from_kwargs(kwargs), namespace, name, spec_tiers)


@kopf.timer(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_ROUTING_POLICIES,
    interval=OperatorSettings.from_env().resync_seconds,
    initial_delay=OperatorSettings.from_env().resync_seconds,
    idle=OperatorSettings.from_env().resync_seconds,  # a safety net: not while events reconcile the object anyway
)
def routingpolicy_resync(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    rec, idx = reconciler(memo), Indexes.from_kwargs(kwargs)
    rec.audit_indexes(idx)  # see inferencetier_resync
    rec.reconcile_policy(idx, str(body.meta.namespace), str(body.meta.name))
