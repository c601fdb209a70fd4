"""Every `tiered.dev/...` key, the API group/version and the operator's identities, in one place.

The operator, the router config renderer, the tests and the manifests refer to these names; a typo in a
label key silently breaks selectors, so nobody spells them out by hand.
"""

from __future__ import annotations

from typing import Final

# API group and versions.
GROUP: Final = "tiered.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

KIND_INFERENCE_TIER: Final = "InferenceTier"
KIND_ROUTING_POLICY: Final = "RoutingPolicy"
PLURAL_INFERENCE_TIERS: Final = "inferencetiers"
PLURAL_ROUTING_POLICIES: Final = "routingpolicies"
SHORT_NAME_INFERENCE_TIER: Final = "itier"
SHORT_NAME_ROUTING_POLICY: Final = "rpol"
CATEGORY: Final = "tiered"

# Identities the operator writes under.
FIELD_MANAGER: Final = "tiered-operator"
"""Server-side apply field manager for everything the reconcilers build."""
AUTOSCALER_FIELD_MANAGER: Final = "tiered-autoscaler"
"""Separate manager for the scale subresource, so the builder and the autoscaler never fight over replicas."""
FINALIZER: Final = "tiered.dev/finalizer"
KOPF_ANNOTATION_PREFIX: Final = "kopf.tiered.dev"
"""kopf progress/diff-base annotations go under this prefix instead of kopf's default."""

# Labels the operator puts on the objects it owns (also used as selectors).
LABEL_TIER: Final = f"{GROUP}/tier"
"""Value: the InferenceTier name. Pods of a local tier carry it; `.status.selector` selects on it."""
LABEL_POLICY: Final = f"{GROUP}/policy"
"""Value: the RoutingPolicy name (gateway routers, router ConfigMaps)."""
LABEL_COMPONENT: Final = f"{GROUP}/component"
"""Value: one of the COMPONENT_* constants below."""
COMPONENT_SLM: Final = "slm"
COMPONENT_ROUTER: Final = "router"
"""Router ConfigMaps, and the pods and Service of a RoutingPolicy's gateway router (`spec.router.mode: gateway`)."""
COMPONENT_NETWORK: Final = "network"

LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "tiered-operator"
LABEL_APP_NAME: Final = "app.kubernetes.io/name"
LABEL_APP_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_APP_PART_OF: Final = "app.kubernetes.io/part-of"
PART_OF_VALUE: Final = "tiered"

# Namespace policy labels (set by users / compliance on the Namespace).
LABEL_RESIDENCY: Final = f"{GROUP}/residency"
RESIDENCY_LOCAL_ONLY: Final = "local-only"
RESIDENCY_RESTRICTED: Final = "restricted"
RESIDENCY_UNRESTRICTED: Final = "unrestricted"
RESIDENCY_CLASSES: Final = (RESIDENCY_LOCAL_ONLY, RESIDENCY_RESTRICTED, RESIDENCY_UNRESTRICTED)
RESIDENCY_DEFAULT: Final = RESIDENCY_RESTRICTED
"""Applies when the Namespace has no residency label."""
LABEL_ALLOWED_REGIONS: Final = f"{GROUP}/allowed-regions"
"""Comma-separated list of cloud regions; a cloud tier's `spec.cloud.region` must be listed."""
