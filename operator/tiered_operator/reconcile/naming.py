"""Names, labels, paths and owner references of the objects built for a tier or a policy.

One module so the Deployment, the Service, the router config and the tests agree on every name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tiered_operator import labels

ROUTER_CONFIG_DIR = "/etc/tiered/router"
ROUTER_CONFIG_FILE = "router.json"
"""Key in the tier's router ConfigMap that the sidecar reads."""
POLICY_CONFIG_KEY = "router.json"
SECRETS_DIR = "/var/run/tiered/secrets"
CACHE_DIR = "/cache"
PVC_ROOT = "/models"


def deployment_name(tier: str) -> str:
    return tier


def service_name(tier: str) -> str:
    return tier


def router_configmap_name(tier: str) -> str:
    """The tier's sidecar router config (compiled from every RoutingPolicy that uses the tier)."""
    return f"{tier}-router"


def policy_configmap_name(policy: str) -> str:
    """The policy's own compiled router config (for gateway routers and for inspection)."""
    return f"{policy}-policy"


def dns_label(prefix: str, value: str) -> str:
    """`prefix-value` as a valid 63-character DNS label; long or odd values become a short hash."""
    candidate = f"{prefix}-{value}".lower()
    ok = all(c.isalnum() or c == "-" for c in candidate) and len(candidate) <= 63
    if ok and candidate[-1].isalnum():
        return candidate
    return f"{prefix}-{hashlib.sha256(value.encode()).hexdigest()[:12]}"


def secret_key_path(tier: str, key: str) -> str:
    """Where a cloud tier's API key file appears inside the router container."""
    return f"{SECRETS_DIR}/{tier}/{key}"


def tier_selector(tier: str) -> dict[str, str]:
    """Labels selecting a tier's model-server pods (Deployment selector, Service, scale subresource)."""
    return {labels.LABEL_TIER: tier, labels.LABEL_COMPONENT: labels.COMPONENT_SLM}


def selector_string(selector: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def tier_labels(tier: str) -> dict[str, str]:
    """Labels on every child of a tier: how the operator's watches find them and how users select them."""
    return {
        labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.LABEL_APP_PART_OF: labels.PART_OF_VALUE,
        labels.LABEL_APP_NAME: "tiered-slm",
        labels.LABEL_APP_INSTANCE: tier,
        **tier_selector(tier),
    }


def gateway_name(policy: str) -> str:
    """The gateway router's Deployment, Service and PodDisruptionBudget: `<policy>-gateway`."""
    name = f"{policy}-gateway"
    return name if len(name) <= 63 else dns_label("gateway", policy)


def gateway_selector(policy: str) -> dict[str, str]:
    """Labels selecting a policy's gateway router pods."""
    return {labels.LABEL_POLICY: policy, labels.LABEL_COMPONENT: labels.COMPONENT_ROUTER}


def gateway_labels(policy: str) -> dict[str, str]:
    return {**policy_labels(policy), **gateway_selector(policy)}


def policy_labels(policy: str) -> dict[str, str]:
    return {
        labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE,
        labels.LABEL_APP_PART_OF: labels.PART_OF_VALUE,
        labels.LABEL_APP_NAME: "tiered-router",
        labels.LABEL_APP_INSTANCE: policy,
        labels.LABEL_POLICY: policy,
        labels.LABEL_COMPONENT: labels.COMPONENT_ROUTER,
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller ownerReference to one of our custom resources, so deleting it garbage-collects the child."""
    return {
        "apiVersion": labels.API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_owner(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of the child's controlling owner when it is one of our custom resources."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and str(ref.get("apiVersion", "")).startswith(labels.GROUP + "/"):
            return str(ref.get("kind")), str(ref.get("name"))
    return None
