"""A RoutingPolicy in gateway mode (`spec.router.mode: gateway`) → its router Deployment, Service and
PodDisruptionBudget.

The gateway runs the same router image, config and mounts as a sidecar: it mounts the policy's own compiled
config (`<policy>-policy`, hot-reloaded), the API keys of the cloud tiers left in it after residency, and reaches
local tiers at their Services (`http://<tier>.<ns>.svc:8080/v1`, the model server, not another router). Its
NetworkPolicies are the namespace's base policy plus egress allowances owned by the policy (residency/network.py),
its metrics the router's own (the PodMonitor selects `tiered.dev/component=router` pods).
"""

from __future__ import annotations

from typing import Any

from tiered_operator import labels
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.deployment import (
    POD_SECURITY,
    RouterSidecar,
    Volumes,
    add_claim_volumes,
    add_router_volumes,
    router_container,
)
from tiered_operator.settings import OperatorSettings


def is_gateway(policy: RoutingPolicy) -> bool:
    return policy.spec.router is not None and policy.spec.router.mode == "gateway"


def gateway_replicas(policy: RoutingPolicy) -> int:
    return policy.spec.router.replicas if policy.spec.router is not None else 1


def gateway_endpoint(policy: str, namespace: str, settings: OperatorSettings) -> str:
    """The gateway's OpenAI base URL (what applications point the openai SDK at; the policy's status.endpoint)."""
    host = f"{naming.gateway_name(policy)}.{namespace}.{settings.cluster_domain_suffix}"
    return f"http://{host}:{settings.ports.router}/v1"


def _meta(policy: RoutingPolicy) -> tuple[str, str, str]:
    meta = policy.metadata
    if meta.name is None or meta.uid is None:
        raise ValueError("gateway builders need metadata.name and metadata.uid")
    return meta.name, meta.namespace or "default", meta.uid


def build_gateway_deployment(
    policy: RoutingPolicy, sidecar: RouterSidecar, settings: OperatorSettings
) -> dict[str, Any]:
    """`spec.router.replicas` router pods for the policy, spread over nodes, rolled one at a time."""
    name, namespace, uid = _meta(policy)
    vols = Volumes()
    vols.volumes.append({"name": "tmp", "emptyDir": {}})
    add_claim_volumes(vols, (), sidecar.pvc_claims)
    add_router_volumes(vols, naming.policy_configmap_name(name), sidecar)
    pod_labels = naming.gateway_labels(name)
    selector = naming.gateway_selector(name)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the router never talks to the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": 30,
        "containers": [router_container(settings, sidecar, vols.router_mounts)],
        "volumes": vols.volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.gateway_name(name),
            "namespace": namespace,
            "labels": pod_labels,
            "ownerReferences": [naming.owner_reference(labels.KIND_ROUTING_POLICY, name, uid)],
        },
        "spec": {
            "replicas": gateway_replicas(policy),
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
        },
    }


def build_gateway_service(policy: RoutingPolicy, settings: OperatorSettings) -> dict[str, Any]:
    """`<policy>-gateway`: `http` (the OpenAI API) and `metrics` (the router's /metrics, same port)."""
    name, namespace, uid = _meta(policy)
    ports = settings.ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": naming.gateway_name(name),
            "namespace": namespace,
            "labels": naming.gateway_labels(name),
            "ownerReferences": [naming.owner_reference(labels.KIND_ROUTING_POLICY, name, uid)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": naming.gateway_selector(name),
            "ports": [
                {"name": "http", "port": ports.router, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": ports.router_metrics, "targetPort": "http", "protocol": "TCP"},
            ],
        },
    }


def build_gateway_disruption_budget(policy: RoutingPolicy) -> dict[str, Any]:
    """At most one gateway pod voluntarily down at a time (a node drain keeps the rest serving)."""
    name, namespace, uid = _meta(policy)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": naming.gateway_name(name),
            "namespace": namespace,
            "labels": naming.gateway_labels(name),
            "ownerReferences": [naming.owner_reference(labels.KIND_ROUTING_POLICY, name, uid)],
        },
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": naming.gateway_selector(name)}},
    }
