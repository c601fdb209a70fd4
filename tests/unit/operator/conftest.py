"""Builders for InferenceTier / RoutingPolicy values used by the operator's unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.settings import OperatorSettings

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def load_sample(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((SAMPLES / name).read_text()))


def with_meta(body: dict[str, Any], namespace: str = "team-a", generation: int = 1) -> dict[str, Any]:
    body = copy.deepcopy(body)
    meta = body.setdefault("metadata", {})
    meta.setdefault("namespace", namespace)
    meta.setdefault("uid", f"uid-{meta['name']}")
    meta.setdefault("generation", generation)
    return body


def local_tier_body(name: str = "slm", **local: Any) -> dict[str, Any]:
    spec_local: dict[str, Any] = {
        "runtime": "llamacpp",
        "model": {"source": "pvc://models/m.gguf", "format": "gguf", "quantization": "Q4_K_M"},
    }
    spec_local.update(local)
    return with_meta(
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "InferenceTier",
            "metadata": {"name": name},
            "spec": {"backend": "local", "local": spec_local},
        }
    )


def cloud_tier_body(name: str = "cloud", region: str | None = "eu-west-1", key: str = "api-key") -> dict[str, Any]:
    cloud: dict[str, Any] = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "apiKeySecretRef": {"name": f"{name}-key", "key": key},
    }
    if region:
        cloud["region"] = region
    return with_meta(
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "InferenceTier",
            "metadata": {"name": name},
            "spec": {"backend": "cloud", "cloud": cloud, "pricing": {"inputUSDPerMillion": "2.50"}},
        }
    )


def policy_body(name: str = "hybrid", tiers: list[str] | None = None, default: str | None = None, **spec: Any) -> dict:
    tiers = tiers or ["slm", "cloud"]
    return with_meta(
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {"name": name},
            "spec": {"tiers": tiers, "defaultTier": default or tiers[0], **spec},
        }
    )


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings()


@pytest.fixture
def make_tier() -> Callable[..., InferenceTier]:
    def make(name: str = "slm", **local: Any) -> InferenceTier:
        return InferenceTier.from_k8s(local_tier_body(name, **local))

    return make


@pytest.fixture
def make_policy() -> Callable[..., RoutingPolicy]:
    def make(
        name: str = "hybrid", tiers: list[str] | None = None, default: str | None = None, **spec: Any
    ) -> RoutingPolicy:
        return RoutingPolicy.from_k8s(policy_body(name, tiers, default, **spec))

    return make


class Bodies:
    """The raw-body builders above, handed to tests as a fixture (test modules cannot import conftest)."""

    local_tier = staticmethod(local_tier_body)
    cloud_tier = staticmethod(cloud_tier_body)
    policy = staticmethod(policy_body)
    sample = staticmethod(load_sample)
    with_meta = staticmethod(with_meta)


@pytest.fixture
def bodies() -> type[Bodies]:
    return Bodies
