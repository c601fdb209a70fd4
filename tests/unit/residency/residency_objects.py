"""Small factories for the residency unit tests: real API models, validated like the operator validates them."""

from __future__ import annotations

from typing import Any

from tiered_operator.api.inferencetier import InferenceTier
from tiered_router.config import RouterConfig

NS = "team-a"


def local_tier(name: str = "slm", namespace: str = NS) -> InferenceTier:
    return InferenceTier.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
            "spec": {"backend": "local", "local": {"model": {"source": "pvc://models/tiny.gguf"}}},
        }
    )


def cloud_tier(
    name: str = "gpt",
    namespace: str = NS,
    region: str | None = "eu-west-1",
    cidrs: list[str] | None = None,
    ports: list[int] | None = None,
    fqdns: list[str] | None = None,
    base_url: str = "https://llm.example.com/v1",
) -> InferenceTier:
    cloud: dict[str, Any] = {
        "provider": "openai-compatible",
        "baseURL": base_url,
        "model": "big",
        "apiKeySecretRef": {"name": "key"},
    }
    if region is not None:
        cloud["region"] = region
    egress: dict[str, Any] = {}
    if cidrs is not None:
        egress["cidrs"] = cidrs
    if ports is not None:
        egress["ports"] = ports
    if fqdns is not None:
        egress["fqdns"] = fqdns
    if egress:
        cloud["egress"] = egress
    return InferenceTier.model_validate(
        {"metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
         "spec": {"backend": "cloud", "cloud": cloud}}
    )


def router_config(**overrides: Any) -> RouterConfig:
    data: dict[str, Any] = {
        "policy": "hybrid",
        "namespace": NS,
        "tiers": [
            {"name": "slm", "kind": "local", "baseURL": "http://slm:8080/v1", "model": "tiny"},
            {"name": "gpt", "kind": "cloud", "baseURL": "https://llm.example.com/v1", "model": "big",
             "region": "eu-west-1", "piiForbidden": False},
            {"name": "us", "kind": "cloud", "baseURL": "https://us.example.com/v1", "model": "big",
             "region": "us-east-1", "piiForbidden": False},
        ],
        "tierOrder": ["gpt", "us", "slm"],
        "defaultTier": "gpt",
        "routes": [
            {"name": "chat", "tier": "slm", "examples": ["hello"]},
            {"name": "reason", "tier": "gpt", "examples": ["prove this theorem"]},
            {"name": "code", "tier": "us", "examples": ["write a function"]},
        ],
        "override": {"enabled": True, "allowedTiers": ["slm", "gpt", "us"]},
    }
    data.update(overrides)
    return RouterConfig.model_validate(data)
