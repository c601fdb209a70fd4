"""kopf indexes: in-memory views of our custom resources, the children and pods we own, the Warning events about
those pods, and the namespaces' residency labels, all fed by watches.

Each index keeps only what a reconcile reads (`slim` bodies without managedFields; pod and event summaries), so
1,000 tiers cost little memory. kopf filters by label on its side of the watch: a child or pod without our
`app.kubernetes.io/managed-by` label is never stored.
"""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator import labels
from tiered_operator.handlers.state import INDEX_PODS, MANAGED_SELECTOR, NAMESPACE_OWNER, ChildKey, slim
from tiered_operator.reconcile.naming import controller_owner
from tiered_operator.reconcile.pods import EVENT_REASONS, event_summary, pod_summary
from tiered_operator.residency.cilium import CILIUM_GROUP, CILIUM_PLURAL, CILIUM_VERSION

RESIDENCY_KEYS = (labels.LABEL_RESIDENCY, labels.LABEL_ALLOWED_REGIONS)


@kopf.index(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS)
def tiered_tiers(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """By (namespace, name): a tier's reconcile looks up its own body among thousands without a scan."""
    return {(str(body.meta.namespace), str(body.meta.name)): slim(body)}


@kopf.index(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES)
def tiered_policies(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    return {str(body.meta.namespace): slim(body)}


def owner_key(body: kopf.Body) -> ChildKey | None:
    """(namespace, owner kind, owner) of one of our children; the namespace itself for the base NetworkPolicy."""
    namespace = str(body.meta.namespace)
    owner = controller_owner(body)
    if owner is not None:
        return (namespace, owner[0], owner[1])
    if body.get("kind") == "NetworkPolicy" or body.get("apiVersion") == "networking.k8s.io/v1":
        return (namespace, NAMESPACE_OWNER, namespace)
    return None


def _by_owner(body: kopf.Body) -> dict[ChildKey, dict[str, Any]]:
    key = owner_key(body)
    return {} if key is None else {key: slim(body)}


@kopf.index("apps", "v1", "deployments", labels=MANAGED_SELECTOR)
def tiered_deployments(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index("", "v1", "services", labels=MANAGED_SELECTOR)
def tiered_services(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index("", "v1", "configmaps", labels=MANAGED_SELECTOR)
def tiered_configmaps(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=MANAGED_SELECTOR)
def tiered_network_policies(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


@kopf.index(CILIUM_GROUP, CILIUM_VERSION, CILIUM_PLURAL, labels=MANAGED_SELECTOR)
def tiered_cilium_policies(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    """Watched only where the cluster serves Cilium's API (kopf starts the watch when the CRD appears)."""
    return _by_owner(body)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=MANAGED_SELECTOR)
def tiered_disruption_budgets(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    return _by_owner(body)


def pod_owner(pod_labels: Any) -> tuple[str, str] | None:
    """(kind, name) of the custom resource a pod of ours serves: a tier's model server or a policy's gateway."""
    component = (pod_labels or {}).get(labels.LABEL_COMPONENT)
    if component == labels.COMPONENT_SLM and (pod_labels or {}).get(labels.LABEL_TIER):
        return labels.KIND_INFERENCE_TIER, str(pod_labels[labels.LABEL_TIER])
    if component == labels.COMPONENT_ROUTER and (pod_labels or {}).get(labels.LABEL_POLICY):
        return labels.KIND_ROUTING_POLICY, str(pod_labels[labels.LABEL_POLICY])
    return None


@kopf.index("", "v1", "pods", labels=MANAGED_SELECTOR)
def tiered_pods(body: kopf.Body, **_: Any) -> dict[ChildKey, dict[str, Any]]:
    owner = pod_owner(body.meta.labels)
    return {} if owner is None else {(str(body.meta.namespace), owner[0], owner[1]): pod_summary(body)}


def _about_our_pod(body: kopf.Body, **kwargs: Any) -> bool:
    """A Warning event worth keeping (EVENT_REASONS) about a pod the pod index holds."""
    involved = body.get("involvedObject") or {}
    if body.get("type") != "Warning" or involved.get("kind") != "Pod" or body.get("reason") not in EVENT_REASONS:
        return False
    pods = kwargs.get(INDEX_PODS) or {}
    name, namespace = involved.get("name"), involved.get("namespace")
    return any(
        p["metadata"]["name"] == name for key, store in list(pods.items()) if key[0] == namespace for p in list(store)
    )


@kopf.index("", "v1", "events", when=_about_our_pod)
def tiered_pod_events(body: kopf.Body, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    involved = body.get("involvedObject") or {}
    return {(str(involved.get("namespace")), str(involved.get("name"))): event_summary(body)}


@kopf.index("", "v1", "namespaces")
def tiered_namespaces(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, dict[str, str]]]:
    """Each namespace's residency labels/annotations, for reconciles and the webhook (no API call per request)."""
    meta = body.get("metadata") or {}
    return {
        name: {
            "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k in RESIDENCY_KEYS},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k in RESIDENCY_KEYS},
        }
    }
