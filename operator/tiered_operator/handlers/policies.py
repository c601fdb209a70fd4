"""RoutingPolicy events: recompile the policy and the sidecar config of every tier it lists (or listed)."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import awaiting_finalizer


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES)
def routingpolicy_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    spec_tiers = None if kwargs.get("type") == "DELETED" else list(body.get("spec", {}).get("tiers") or [])
    namespace, name = str(body.meta.namespace), str(body.meta.name)
    if spec_tiers is not None and awaiting_finalizer(labels.PLURAL_ROUTING_POLICIES, body):
        return  # kopf adds its finalizer now (the budget daemon); that patch's event reconciles the policy
    rec = reconciler(memo)
    if spec_tiers is not None and rec.own_status_echo(labels.PLURAL_ROUTING_POLICIES, body):
        return  # the event of our own status write: nothing new
    if spec_tiers is None:
        rec.forget(str(body.meta.uid), labels.PLURAL_ROUTING_POLICIES, namespace, name)
    rec.after_policy_change(rec.indexes(kwargs), namespace, name, spec_tiers)
