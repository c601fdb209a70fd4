"""Watches on what we own: a deleted or edited child, or a Deployment whose pods became ready, reconciles its
owner at once (high-level handlers never see children's changes); a pod or a Warning event about one updates
its owner's status (why it is not ready)."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator.handlers.indexes import owner_key, pod_owner
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import MANAGED_SELECTOR
from tiered_operator.reconcile.pods import EVENT_REASONS, pod_summary
from tiered_operator.residency.cilium import CILIUM_GROUP, CILIUM_PLURAL, CILIUM_VERSION


def _reconcile_owner(body: kopf.Body, memo: Any, kwargs: dict[str, Any]) -> None:
    key = owner_key(body)
    if key is None:
        return
    rec = reconciler(memo)
    kind, deleted = str(body.get("kind")), kwargs.get("type") == "DELETED"
    rec.pending.observed((kind, str(body.meta.namespace), str(body.meta.name)), body.meta.get("resourceVersion"),
                         deleted=deleted)  # fmt: skip
    if deleted:
        rec.forget_child(kind, str(body.meta.namespace), str(body.meta.name))
        converge = True
    else:
        converge = rec.child_changed(kind, body)
    rec.reconcile_owner(rec.indexes(kwargs), *key, converge=converge)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED_SELECTOR)
def owned_deployment_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("", "v1", "services", labels=MANAGED_SELECTOR)
def owned_service_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("", "v1", "configmaps", labels=MANAGED_SELECTOR)
def owned_configmap_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED_SELECTOR)
def owned_networkpolicy_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event(CILIUM_GROUP, CILIUM_VERSION, CILIUM_PLURAL, labels=MANAGED_SELECTOR)
def owned_ciliumnetworkpolicy_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED_SELECTOR)
def owned_poddisruptionbudget_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    _reconcile_owner(body, memo, kwargs)


@kopf.on.event("", "v1", "pods", labels=MANAGED_SELECTOR)
def owned_pod_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    owner = pod_owner(body.meta.labels)
    if owner is None:
        return
    rec = reconciler(memo)
    summary = None if kwargs.get("type") == "DELETED" else pod_summary(body)
    rec.pod_changed(rec.indexes(kwargs), str(body.meta.namespace), *owner, str(body.meta.name), summary)


@kopf.on.event(
    "",
    "v1",
    "events",
    when=lambda body, **_: (
        body.get("type") == "Warning"
        and (body.get("involvedObject") or {}).get("kind") == "Pod"
        and body.get("reason") in EVENT_REASONS
    ),
)
def pod_warning_event(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """The kubelet said something about a pod (a failing probe, a volume it cannot mount): if the pod is ours,
    its owner's status says it."""
    involved = body.get("involvedObject") or {}
    namespace, pod = str(involved.get("namespace")), str(involved.get("name"))
    rec = reconciler(memo)
    idx = rec.indexes(kwargs)
    for (ns, owner_kind, owner), store in list(idx.pods.items()):
        if ns == namespace and any(p["metadata"]["name"] == pod for p in list(store)):
            rec.reconcile_owner(idx, namespace, owner_kind, owner, converge=False)
            return
