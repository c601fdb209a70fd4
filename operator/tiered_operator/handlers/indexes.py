"""kopf indexes: in-memory views of our custom resources and of the children we own, fed by watches."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.state import MANAGED_SELECTOR, ChildKey, slim
from tiered_operator.reconcile.naming import controller_owner


@kopf.index(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS)
def tiered_tiers(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {str(body.meta.namespace): slim(body)}


@kopf.index(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES)
def tiered_policies(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {str(body.meta.namespace): slim(body)}


def _by_owner(body: kopf.Body) -> dict[ChildKey, dict[str, Any]]:
    owner = controller_owner(body)
    if owner is None:
        return {}
    return {(str(body.meta.namespace), owner[0], owner[1]): slim(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED_SELECTOR)
def tiered_deployments(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index("", "v1", "services", labels=MANAGED_SELECTOR)
def tiered_services(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index("", "v1", "configmaps", labels=MANAGED_SELECTOR)
def tiered_configmaps(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)
