"""Operator settings, read once from the environment and injected into builders and handlers.

Builders never read globals: the handlers pass an `OperatorSettings` value in, so a unit test can build a
Deployment with any image or port without touching the environment. Every `TIERED_*` variable the operator
reads is read here, and nowhere else.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiered_operator import labels

DEFAULT_IMAGE_TAG = "0.1.0"
WEBHOOK_CONFIGURATION = "tiered-operator.tiered.dev"

DEFAULT_DNS_PEERS: tuple[dict[str, Any], ...] = (
    {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    },
)
"""CoreDNS/kube-dns as most distributions label it; override with TIERED_NETPOL_DNS_PEERS."""


@dataclass(frozen=True)
class Ports:
    """Container ports of a local tier's pod (the Service exposes the same numbers)."""

    router: int = 8000
    """The router sidecar's OpenAI-compatible API (what applications call)."""
    router_metrics: int = 9090
    """Service port for the router's Prometheus endpoint (the router serves /metrics on its API port)."""
    slm: int = 8080
    """The model server's OpenAI API (and its /metrics); other tiers' routers reach it directly."""


@dataclass(frozen=True)
class NetworkOptions:
    """Cluster-specific parts of the NetworkPolicies (operator configuration, not custom resources)."""

    ports: Ports = field(default_factory=Ports)
    extra_ingress_peers: tuple[dict[str, Any], ...] = ()
    """NetworkPolicyPeers allowed in besides the namespace itself (TIERED_NETPOL_INGRESS_PEERS, JSON list)."""
    dns_peers: tuple[dict[str, Any], ...] = DEFAULT_DNS_PEERS
    dns_port: int = 53


@dataclass(frozen=True)
class WebhookConfig:
    """Where the residency admission webhook listens and how the API server reaches it (TIERED_WEBHOOK_*)."""

    port: int
    addr: str = "127.0.0.1"
    host: str | None = None
    cert_dir: str | None = None
    configuration: str = WEBHOOK_CONFIGURATION


def parse_namespace_patterns(text: str) -> tuple[str, ...]:
    """`TIERED_WATCH_NAMESPACES` (comma-separated names or globs) → patterns; empty means every namespace."""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _peers(env: Mapping[str, str], name: str, default: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    text = env.get(name, "").strip()
    if not text:
        return default
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ValueError(f"{name} must be a JSON list of NetworkPolicyPeer objects, got {text!r}")
    return tuple(value)


@dataclass(frozen=True)
class OperatorSettings:
    """Everything the operator needs that is not in a custom resource."""

    slm_image: str = f"ghcr.io/tiered-dev/tiered-slm:{DEFAULT_IMAGE_TAG}"
    router_image: str = f"ghcr.io/tiered-dev/tiered-router:{DEFAULT_IMAGE_TAG}"
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    image_pull_policy: str = "IfNotPresent"
    field_manager: str = labels.FIELD_MANAGER
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch (names or globs); empty means all namespaces (cluster-wide)."""
    resync_seconds: float = 30.0
    """Period of the level-triggered resync of every object (events handle the fast path)."""
    prometheus_url: str | None = None
    prometheus_token_file: str | None = None
    prometheus_basic_auth_file: str | None = None
    cluster_domain_suffix: str = "svc"
    """Suffix of in-cluster Service hostnames (`<svc>.<ns>.<suffix>`); `svc` relies on the pod's DNS search."""
    model_dir: str = "/models"
    ports: Ports = field(default_factory=Ports)
    network: NetworkOptions = field(default_factory=NetworkOptions)
    discovery_ttl_seconds: float = 60.0
    """How long the answer of API discovery (is cilium.io/v2 served?) is reused."""
    webhook: WebhookConfig | None = None
    """The residency admission webhook; None unless TIERED_WEBHOOK_PORT is set."""
    workers: int = 8
    """kopf's threads for synchronous handlers (TIERED_WORKERS)."""
    peering_lifetime: int = 15
    """Seconds a replica's peering record lives without a keep-alive (TIERED_PEERING_LIFETIME)."""
    stats_seconds: float = 0.0
    """> 0: log the reconcile and write counts this often when they changed (benchmarks)."""

    def in_scope(self, namespace: str | None) -> bool:
        """Whether the operator serves `namespace` (the same patterns kopf watches)."""
        if namespace is None:
            return False
        return not self.namespaces or any(fnmatch.fnmatchcase(namespace, p) for p in self.namespaces)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        """Read `TIERED_*` variables; anything unset keeps the default above."""
        env = os.environ if env is None else env
        default = cls()

        def get(name: str, fallback: str) -> str:
            value = env.get(name, "").strip()
            return value or fallback

        def opt(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        tag = opt("TIERED_IMAGE_TAG")
        slm_image = get("TIERED_SLM_IMAGE", _retag(default.slm_image, tag))
        router_image = get("TIERED_ROUTER_IMAGE", _retag(default.router_image, tag))
        network = NetworkOptions(
            extra_ingress_peers=_peers(env, "TIERED_NETPOL_INGRESS_PEERS", ()),
            dns_peers=_peers(env, "TIERED_NETPOL_DNS_PEERS", DEFAULT_DNS_PEERS),
        )
        port = opt("TIERED_WEBHOOK_PORT")
        webhook = None
        if port is not None:  # 0 = pick a free port
            webhook = WebhookConfig(
                port=int(port),
                addr=get("TIERED_WEBHOOK_ADDR", "127.0.0.1"),
                host=opt("TIERED_WEBHOOK_HOST"),
                cert_dir=opt("TIERED_WEBHOOK_CERT_DIR"),
                configuration=get("TIERED_WEBHOOK_CONFIGURATION", WEBHOOK_CONFIGURATION),
            )
        return cls(
            slm_image=slm_image,
            router_image=router_image,
            vllm_image=get("TIERED_VLLM_IMAGE", default.vllm_image),
            image_pull_policy=get("TIERED_IMAGE_PULL_POLICY", default.image_pull_policy),
            field_manager=get("TIERED_FIELD_MANAGER", default.field_manager),
            namespaces=parse_namespace_patterns(env.get("TIERED_WATCH_NAMESPACES", "")),
            resync_seconds=float(get("TIERED_RESYNC_SECONDS", str(default.resync_seconds))),
            prometheus_url=opt("TIERED_PROMETHEUS_URL"),
            prometheus_token_file=opt("TIERED_PROMETHEUS_TOKEN_FILE"),
            prometheus_basic_auth_file=opt("TIERED_PROMETHEUS_BASIC_AUTH_FILE"),
            cluster_domain_suffix=get("TIERED_CLUSTER_DOMAIN_SUFFIX", default.cluster_domain_suffix),
            model_dir=get("TIERED_MODEL_DIR", default.model_dir),
            network=network,
            discovery_ttl_seconds=float(get("TIERED_DISCOVERY_TTL_SECONDS", str(default.discovery_ttl_seconds))),
            webhook=webhook,
            workers=int(get("TIERED_WORKERS", str(default.workers))),
            peering_lifetime=int(get("TIERED_PEERING_LIFETIME", str(default.peering_lifetime))),
            stats_seconds=float(get("TIERED_STATS_SECONDS", "0")),
        )


def _retag(image: str, tag: str | None) -> str:
    """Replace the tag of `image` (`repo:tag`) when `tag` is given."""
    if not tag:
        return image
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}:{tag}"
