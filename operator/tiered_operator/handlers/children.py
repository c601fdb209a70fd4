"""Watches on the children we own: a deleted or edited child, or a Deployment whose pods became ready,
reconciles its owner at once (high-level handlers never see children's changes)."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import MANAGED_SELECTOR, Indexes
from tiered_operator.reconcile.naming import controller_owner


def _reconcile_owner(body: kopf.Body, memo: Any, kwargs: dict[str, Any]) -> None:
    owner = controller_owner(body)
    namespace = str(body.meta.namespace)
    if owner is None:
        return
    rec, idx = reconciler(memo), Indexes.from_kwargs(kwargs)
    rec.pending.observed((str(body.get("kind")), namespace, str(body.meta.name)))
    kind, name = owner
    if kind == labels.KIND_INFERENCE_TIER:
        rec.reconcile_tier(idx, namespace, name)
    elif kind == labels.KIND_ROUTING_POLICY:
        rec.reconcile_policy(idx, namespace, name)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED_SELECTOR)
def owned_deployment_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("", "v1", "services", labels=MANAGED_SELECTOR)
def owned_service_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("", "v1", "configmaps", labels=MANAGED_SELECTOR)
def owned_configmap_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)
