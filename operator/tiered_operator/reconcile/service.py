"""build_service: the Service in front of a local tier's pods.

Ports: `http` (the router sidecar: what applications call), `metrics` (the router's Prometheus endpoint, served
on the router's own port) and `slm` (the model server itself, so routers of other tiers reach this tier's model
without routing twice; it serves the model server's /metrics too).
"""

from __future__ import annotations

from typing import Any

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.reconcile import naming
from tiered_operator.settings import OperatorSettings


def build_service(tier: InferenceTier, settings: OperatorSettings) -> dict[str, Any]:
    meta = tier.metadata
    if meta.name is None or meta.uid is None:
        raise ValueError("build_service needs metadata.name and metadata.uid")
    ports = settings.ports
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": naming.service_name(meta.name),
            "namespace": meta.namespace,
            "labels": naming.tier_labels(meta.name),
            "ownerReferences": [naming.owner_reference(labels.KIND_INFERENCE_TIER, meta.name, meta.uid)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": naming.tier_selector(meta.name),
            "ports": [
                {"name": "http", "port": ports.router, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": ports.router_metrics, "targetPort": "http", "protocol": "TCP"},
                {"name": "slm", "port": ports.slm, "targetPort": "slm", "protocol": "TCP"},
            ],
        },
    }


def tier_endpoint(tier_name: str, namespace: str, settings: OperatorSettings) -> str:
    """The model server's OpenAI base URL as routers reach it (status.endpoint, router config baseURL)."""
    return (
        f"http://{naming.service_name(tier_name)}.{namespace}.{settings.cluster_domain_suffix}:{settings.ports.slm}/v1"
    )
