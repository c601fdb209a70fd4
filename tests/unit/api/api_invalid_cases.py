"""Invalid InferenceTier / RoutingPolicy objects and what a user must be told about each.

Shared by the unit tests (pydantic rejects them) and the integration tests (the real API server rejects them), so
both sides are held to the same catalogue. Each case starts from a sample in manifests/samples/ and breaks one
thing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "manifests" / "samples"

Obj = dict[str, Any]


def load_sample(file_name: str) -> Obj:
    """The first document of a sample file."""
    docs = list(yaml.safe_load_all((SAMPLES / file_name).read_text(encoding="utf-8")))
    return copy.deepcopy(docs[0])


def local_tier() -> Obj:
    return load_sample("inferencetier-local-gguf.yaml")


def cloud_tier() -> Obj:
    return load_sample("inferencetier-cloud.yaml")


def policy() -> Obj:
    return load_sample("routingpolicy-hybrid.yaml")


def set_path(obj: Obj, path: str, value: Any) -> Obj:
    """Set a dotted path (creating objects on the way); list indices are plain integers."""
    keys = path.split(".")
    node: Any = obj
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return obj


def del_path(obj: Obj, path: str) -> Obj:
    keys = path.split(".")
    node: Any = obj
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    del node[keys[-1]]
    return obj


@dataclass(frozen=True)
class InvalidCase:
    """One broken object: `server` and `python` are substrings the respective error must contain."""

    id: str
    build: Callable[[], Obj]
    server: str
    python: str
    field: str
    """The field path the API server names in its error."""


def _local(*edits: Callable[[Obj], Obj]) -> Callable[[], Obj]:
    return _from(local_tier, *edits)


def _cloud(*edits: Callable[[Obj], Obj]) -> Callable[[], Obj]:
    return _from(cloud_tier, *edits)


def _policy(*edits: Callable[[Obj], Obj]) -> Callable[[], Obj]:
    return _from(policy, *edits)


def _from(base: Callable[[], Obj], *edits: Callable[[Obj], Obj]) -> Callable[[], Obj]:
    def build() -> Obj:
        obj = base()
        for edit in edits:
            obj = edit(obj)
        return obj

    return build


def s(path: str, value: Any) -> Callable[[Obj], Obj]:
    return lambda o: set_path(o, path, value)


def d(path: str) -> Callable[[Obj], Obj]:
    return lambda o: del_path(o, path)


def _add_cloud_section(o: Obj) -> Obj:
    o["spec"]["cloud"] = cloud_tier()["spec"]["cloud"]
    return o


EXACTLY_ONE = "exactly one of local or cloud must be set, matching backend"
MONEY = "must be a non-negative amount of US dollars written as a decimal string"

CASES: tuple[InvalidCase, ...] = (
    InvalidCase(
        "backend-not-in-enum",
        _local(s("spec.backend", "gpu")),
        'Unsupported value: "gpu"',
        "Input should be 'local' or 'cloud'",
        "spec.backend",
    ),
    InvalidCase("both-local-and-cloud", _local(_add_cloud_section), EXACTLY_ONE, EXACTLY_ONE, "spec"),
    InvalidCase(
        "neither-local-nor-cloud", _local(d("spec.local"), d("spec.autoscaling")), EXACTLY_ONE, EXACTLY_ONE, "spec"
    ),
    InvalidCase(
        "backend-cloud-with-local-section",
        _local(s("spec.backend", "cloud"), d("spec.autoscaling")),
        EXACTLY_ONE,
        EXACTLY_ONE,
        "spec",
    ),
    InvalidCase(
        "min-replicas-above-max",
        _local(s("spec.autoscaling.minReplicas", 5)),
        "minReplicas must be less than or equal to maxReplicas",
        "minReplicas must be less than or equal to maxReplicas",
        "spec.autoscaling.minReplicas",
    ),
    InvalidCase(
        "negative-price",
        _local(s("spec.pricing.inputUSDPerMillion", "-0.02")),
        MONEY,
        MONEY,
        "spec.pricing.inputUSDPerMillion",
    ),
    InvalidCase(
        "price-as-float-number",
        _cloud(s("spec.pricing.outputUSDPerMillion", 10.5)),
        "must be of type string",
        "Input should be a valid string",
        "spec.pricing.outputUSDPerMillion",
    ),
    InvalidCase(
        "malformed-model-source",
        _local(s("spec.local.model.source", "ftp://models/x.gguf")),
        "model source must be pvc://<claim>/<path>",
        "model source must be pvc://<claim>/<path>",
        "spec.local.model.source",
    ),
    InvalidCase(
        "cloud-context-length-too-small",
        _cloud(s("spec.cloud.capabilities", {"contextLength": 16})),
        "should be greater than or equal to 128",
        "greater than or equal to 128",
        "spec.cloud.capabilities.contextLength",
    ),
    InvalidCase(
        "cloud-without-api-key-secret-ref",
        _cloud(d("spec.cloud.apiKeySecretRef")),
        "Required value",
        "Field required",
        "spec.cloud.apiKeySecretRef",
    ),
    InvalidCase(
        "bad-sha256",
        _local(s("spec.local.model.sha256", "ABC123")),
        "sha256 must be 64 lowercase hexadecimal characters",
        "sha256 must be 64 lowercase hexadecimal characters",
        "spec.local.model.sha256",
    ),
    InvalidCase(
        "https-source-without-sha256",
        _local(s("spec.local.model.source", "https://models.example.com/slm-q4_k_m.gguf")),
        "sha256 is required when the model is downloaded",
        "sha256 is required when the model is downloaded",
        "spec.local.model.sha256",
    ),
    InvalidCase(
        "unknown-quantization",
        _local(s("spec.local.model.quantization", "Q4_K_X")),
        'Unsupported value: "Q4_K_X"',
        "'Q4_K_X' is not one of F32, F16",
        "spec.local.model.quantization",
    ),
    InvalidCase(
        "llamacpp-with-safetensors",
        _local(s("spec.local.model.format", "safetensors"), d("spec.local.model.quantization")),
        "runtime llamacpp requires model.format gguf",
        "runtime llamacpp requires model.format gguf",
        "spec.local.model.format",
    ),
    InvalidCase(
        "gptq-without-bits",
        _local(
            s("spec.local.runtime", "vllm"),
            s("spec.local.model.format", "safetensors"),
            s("spec.local.model.quantization", "gptq"),
        ),
        "quantization gptq/awq requires bits",
        "quantization gptq/awq requires bits",
        "spec.local.model.bits",
    ),
    InvalidCase(
        "speculative-draft-without-draft-model",
        _local(s("spec.local.speculative.mode", "draft")),
        "speculative mode draft requires draft.source",
        "speculative mode draft requires draft.source",
        "spec.local.speculative.draft",
    ),
    InvalidCase(
        "slo-window-not-a-duration",
        _local(s("spec.slo.window", "5 minutes")),
        "window must be a Prometheus duration",
        "window must be a Prometheus duration",
        "spec.slo.window",
    ),
    InvalidCase(
        "slo-latency-zero",
        _local(s("spec.slo.latencyP95Ms", 0)),
        "should be greater than or equal to 1",
        "greater than or equal to 1",
        "spec.slo.latencyP95Ms",
    ),
    InvalidCase(
        "autoscaling-without-slo",
        _local(d("spec.slo")),
        "autoscaling requires slo",
        "autoscaling requires slo",
        "spec.slo",
    ),
    InvalidCase(
        "autoscaling-on-cloud-tier",
        _cloud(s("spec.autoscaling", {"maxReplicas": 3})),
        "autoscaling applies only to backend local",
        "autoscaling applies only to backend local",
        "spec.autoscaling",
    ),
    InvalidCase(
        "openai-compatible-without-base-url",
        _cloud(s("spec.cloud.provider", "openai-compatible"), d("spec.cloud.baseURL")),
        "baseURL is required for providers azure-openai and openai-compatible",
        "baseURL is required for providers azure-openai and openai-compatible",
        "spec.cloud.baseURL",
    ),
    InvalidCase(
        "egress-cidr-malformed",
        _cloud(s("spec.cloud.egress.cidrs", ["10.0.0.0/33"])),
        "must be a CIDR such as",
        "must be a CIDR such as",
        "spec.cloud.egress.cidrs[0]",
    ),
    InvalidCase(
        "default-tier-not-in-tiers",
        _policy(s("spec.defaultTier", "other")),
        "defaultTier must be one of the names listed in tiers",
        "defaultTier must be one of the names listed in tiers",
        "spec.defaultTier",
    ),
    InvalidCase(
        "route-tier-not-in-tiers",
        _policy(s("spec.routes.0.tier", "missing-tier")),
        "every route's tier must be one of the names listed in tiers",
        "every route's tier must be one of the names listed in tiers",
        "spec.routes",
    ),
    InvalidCase(
        "duplicate-route-names",
        _policy(s("spec.routes.1.name", "smalltalk")),
        "route names must be unique",
        "route names must be unique",
        "spec.routes[1]",
    ),
    InvalidCase(
        "duplicate-tiers",
        _policy(s("spec.tiers", ["slm-edge", "gpt-cloud", "slm-edge"])),
        "Duplicate value",
        "duplicate entry 'slm-edge'",
        "spec.tiers[2]",
    ),
    InvalidCase(
        "threshold-above-one",
        _policy(s("spec.routes.2.threshold", "1.5")),
        'threshold must be a decimal string between "0" and "1"',
        'threshold must be a decimal string between "0" and "1"',
        "spec.routes[2].threshold",
    ),
    InvalidCase(
        "pii-action-not-in-enum",
        _policy(s("spec.residency.pii.action", "drop")),
        'Unsupported value: "drop"',
        "Input should be 'keepLocal', 'redact' or 'reject'",
        "spec.residency.pii.action",
    ),
    InvalidCase("negative-budget", _policy(s("spec.budget.monthlyUSD", "-5")), MONEY, MONEY, "spec.budget.monthlyUSD"),
    InvalidCase(
        "classifier-threshold-neither-auto-nor-decimal",
        _policy(s("spec.classifier.threshold", "high")),
        'threshold must be "auto" or a decimal string',
        'threshold must be "auto" or a decimal string',
        "spec.classifier.threshold",
    ),
    InvalidCase(
        "target-out-of-scope-rate-of-one",
        _policy(s("spec.classifier.targetOutOfScopeRate", "1")),
        'must be a decimal string strictly between "0" and "1"',
        'must be a decimal string strictly between "0" and "1"',
        "spec.classifier.targetOutOfScopeRate",
    ),
    InvalidCase(
        "route-threshold-auto",  # auto is policy-wide: a route's own threshold is a number
        _policy(s("spec.routes.2.threshold", "auto")),
        'threshold must be a decimal string between "0" and "1"',
        'threshold must be a decimal string between "0" and "1"',
        "spec.routes[2].threshold",
    ),
    InvalidCase(
        "onnx-encoder-without-path",
        _policy(s("spec.classifier.encoder.type", "onnx")),
        "encoder path is required for onnx and sentence-transformers",
        "encoder path is required for onnx and sentence-transformers",
        "spec.classifier.encoder.path",
    ),
    InvalidCase(
        "bundled-minilm-encoder-with-path",
        _policy(s("spec.classifier.encoder", {"type": "minilm", "path": "/models/minilm"})),
        "not allowed for builtin, minilm or lexical",
        "not allowed for builtin, minilm or lexical",
        "spec.classifier.encoder.path",
    ),
    InvalidCase(
        "route-without-examples-or-keywords",
        _policy(d("spec.routes.0.examples")),
        "a route needs at least one example or keyword",
        "a route needs at least one example or keyword",
        "spec.routes[0].examples",
    ),
    InvalidCase(
        "fallback-trigger-not-in-enum",
        _policy(s("spec.fallback.triggers", ["5xx", "always"])),
        'Unsupported value: "always"',
        "Input should be",
        "spec.fallback.triggers[1]",
    ),
)


@dataclass(frozen=True)
class ValidCase:
    """A valid variant the rules must NOT reject (guards against over-eager CEL)."""

    id: str
    build: Callable[[], Obj]


VALID_CASES: tuple[ValidCase, ...] = (
    ValidCase(
        "vllm-gptq-4bit",
        _local(
            s("spec.local.runtime", "vllm"),
            s(
                "spec.local.model",
                {"source": "pvc://models/llama-3-8b-gptq", "format": "safetensors", "quantization": "gptq", "bits": 4},
            ),
            s("spec.local.resources", {"limits": {"nvidia.com/gpu": 1}}),
            d("spec.local.speculative"),
        ),
    ),
    ValidCase(
        "gguf-f16-quantized-on-load",
        _local(s("spec.local.model.quantization", "F16"), s("spec.local.model.quantizeOnLoad", "Q4_K_M")),
    ),
    ValidCase(
        "draft-speculation-from-huggingface",
        _local(
            s(
                "spec.local.speculative",
                {
                    "mode": "draft",
                    "tokens": 4,
                    "draft": {"source": "hf://org/tiny-draft/draft-q8_0.gguf", "sha256": "a" * 64},
                },
            )
        ),
    ),
    ValidCase(
        "azure-openai",
        _cloud(
            s("spec.cloud.provider", "azure-openai"),
            s("spec.cloud.baseURL", "https://example.openai.azure.com/openai"),
            s("spec.cloud.azureAPIVersion", "2024-10-21"),
            s("spec.cloud.region", "westeurope"),
        ),
    ),
    ValidCase(
        "minimal-local",
        lambda: {**local_tier(), "spec": {"backend": "local", "local": {"model": {"source": "pvc://m/a.gguf"}}}},
    ),
    ValidCase(
        "minimal-cloud",
        lambda: {
            **cloud_tier(),
            "spec": {
                "backend": "cloud",
                "cloud": {"provider": "openai", "model": "gpt-4o", "apiKeySecretRef": {"name": "k"}},
            },
        },
    ),
    ValidCase("minimal-policy", lambda: {**policy(), "spec": {"tiers": ["a", "b"], "defaultTier": "b"}}),
    ValidCase("policy-with-bundled-minilm-encoder", _policy(s("spec.classifier.encoder", {"type": "minilm"}))),
    ValidCase("policy-with-lexical-encoder", _policy(s("spec.classifier.encoder", {"type": "lexical"}))),
    ValidCase(
        "policy-with-auto-threshold",
        _policy(s("spec.classifier.threshold", "auto"), s("spec.classifier.targetOutOfScopeRate", "0.9")),
    ),
    ValidCase(
        "gateway-policy-with-onnx-encoder",
        _policy(
            s("spec.classifier.encoder", {"type": "onnx", "path": "pvc://encoders/minilm"}),
            s("spec.router", {"mode": "gateway", "replicas": 3, "resources": {"requests": {"cpu": "500m"}}}),
            s("spec.residency.pii.action", "redact"),
            s("spec.budget.whenExhausted", "reject"),
        ),
    ),
)
