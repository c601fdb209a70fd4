"""Operator settings, read once from the environment and injected into builders and handlers.

Builders never read globals: the handlers pass an `OperatorSettings` value in, so a unit test can build a
Deployment with any image or port without touching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from tiered_operator import labels

DEFAULT_IMAGE_TAG = "0.1.0"


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
class OperatorSettings:
    """Everything the operator needs that is not in a custom resource."""

    slm_image: str = f"ghcr.io/tiered-dev/tiered-slm:{DEFAULT_IMAGE_TAG}"
    router_image: str = f"ghcr.io/tiered-dev/tiered-router:{DEFAULT_IMAGE_TAG}"
    vllm_image: str = "vllm/vllm-openai:v0.11.0"
    image_pull_policy: str = "IfNotPresent"
    field_manager: str = labels.FIELD_MANAGER
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces (cluster-wide)."""
    resync_seconds: float = 30.0
    """Period of the level-triggered resync timer per object (events handle the fast path)."""
    prometheus_url: str | None = None
    prometheus_token_file: str | None = None
    prometheus_basic_auth_file: str | None = None
    cluster_domain_suffix: str = "svc"
    """Suffix of in-cluster Service hostnames (`<svc>.<ns>.<suffix>`); `svc` relies on the pod's DNS search."""
    model_dir: str = "/models"
    ports: Ports = field(default_factory=Ports)

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

        namespaces = tuple(n.strip() for n in env.get("TIERED_WATCH_NAMESPACES", "").split(",") if n.strip())
        tag = opt("TIERED_IMAGE_TAG")
        slm_image = get("TIERED_SLM_IMAGE", _retag(default.slm_image, tag))
        router_image = get("TIERED_ROUTER_IMAGE", _retag(default.router_image, tag))
        return cls(
            slm_image=slm_image,
            router_image=router_image,
            vllm_image=get("TIERED_VLLM_IMAGE", default.vllm_image),
            image_pull_policy=get("TIERED_IMAGE_PULL_POLICY", default.image_pull_policy),
            field_manager=get("TIERED_FIELD_MANAGER", default.field_manager),
            namespaces=namespaces,
            resync_seconds=float(get("TIERED_RESYNC_SECONDS", str(default.resync_seconds))),
            prometheus_url=opt("TIERED_PROMETHEUS_URL"),
            prometheus_token_file=opt("TIERED_PROMETHEUS_TOKEN_FILE"),
            prometheus_basic_auth_file=opt("TIERED_PROMETHEUS_BASIC_AUTH_FILE"),
            cluster_domain_suffix=get("TIERED_CLUSTER_DOMAIN_SUFFIX", default.cluster_domain_suffix),
            model_dir=get("TIERED_MODEL_DIR", default.model_dir),
        )


def _retag(image: str, tag: str | None) -> str:
    """Replace the tag of `image` (`repo:tag`) when `tag` is given."""
    if not tag:
        return image
    repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return f"{repo}:{tag}"
