"""InferenceTier (tiered.dev/v1alpha1): one place a request can be served — a local SLM or a cloud LLM.

This module is the only place the InferenceTier schema is written; crds/inferencetiers.yaml is generated from it.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from tiered_operator import labels
from tiered_operator.api.common import (
    ApiModel,
    CelRule,
    CheckedStr,
    Condition,
    ObjectMeta,
    OneOf,
    ResourceRequirements,
    SecretKeyRef,
    Toleration,
    USDAmount,
    matching,
)
from tiered_slm.quant import FTYPE_BY_NAME, QUANTIZE_TARGETS

# ---------------------------------------------------------------------------------------------------------------
# Enumerations
# ---------------------------------------------------------------------------------------------------------------

GGUF_QUANT_TYPES: tuple[str, ...] = tuple(FTYPE_BY_NAME)
"""GGUF tensor types, from the model server's one table of llama.cpp's file types (`tiered_slm.quant`)."""
QUANTIZE_ON_LOAD_TYPES: tuple[str, ...] = tuple(t for t in GGUF_QUANT_TYPES if t in QUANTIZE_TARGETS)
"""The types the model server's quantize-on-load can produce."""
VLLM_QUANT_METHODS: tuple[str, ...] = ("gptq", "awq")
"""Weight-only quantization methods that need `bits` (vLLM on GPU, safetensors checkpoints)."""
_VLLM_CEL = repr(list(VLLM_QUANT_METHODS))
"""The methods as a CEL list literal (['gptq', 'awq'])."""

GGUFQuantType = Annotated[str, OneOf(QUANTIZE_ON_LOAD_TYPES)]
Quantization = Annotated[str, OneOf(GGUF_QUANT_TYPES + VLLM_QUANT_METHODS)]
Backend = Literal["local", "cloud"]
Runtime = Literal["llamacpp", "vllm"]
ModelFormat = Literal["gguf", "safetensors"]
CloudProvider = Literal["openai", "azure-openai", "openai-compatible"]
SLOMetric = Literal["e2e", "ttft"]
SpeculativeMode = Literal["draft", "promptLookup"]

INFERENCE_TIER_CONDITION_TYPES: tuple[str, ...] = (
    "Ready",
    "Available",
    "ModelReady",
    "SLOMet",
    "ResidencyCompliant",
    "Stalled",
)

# ---------------------------------------------------------------------------------------------------------------
# Checked strings
# ---------------------------------------------------------------------------------------------------------------

MODEL_SOURCE_PATTERN = "^(pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/[^ ]+|https://[^ /]+/[^ ]*|hf://[^ /]+/[^ /]+/[^ ]+)$"
ModelSource = Annotated[
    str,
    matching(
        MODEL_SOURCE_PATTERN,
        "model source must be pvc://<claim>/<path>, https://<host>/<path> or hf://<org>/<repo>/<file>",
        max_length=2048,
    ),
]
SHA256 = Annotated[str, matching("^[a-f0-9]{64}$", "sha256 must be 64 lowercase hexadecimal characters", max_length=64)]
BASE_URL_PATTERN = "^https?://[^ /]+(/[^ ]*)?$"
BaseURL = Annotated[
    str,
    matching(BASE_URL_PATTERN, "baseURL must be an http:// or https:// URL such as https://api.openai.com/v1", 2048),
]
DURATION_PATTERN = "^([0-9]+(ms|s|m|h|d|w))+$"
Duration = Annotated[
    str, matching(DURATION_PATTERN, 'window must be a Prometheus duration such as "5m", "1h" or "1h30m"', max_length=32)
]
REGION_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Region = Annotated[
    str,
    matching(REGION_PATTERN, "region must be a lowercase region name such as eu-west-1 or westeurope", max_length=63),
]
FQDN_PATTERN = "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)+$"
FQDN = Annotated[
    str,
    matching(FQDN_PATTERN, "fqdn must be a lowercase DNS name such as api.openai.com (optionally *.example.com)", 253),
]
AZURE_API_VERSION_PATTERN = "^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$"
AzureAPIVersion = Annotated[
    str, matching(AZURE_API_VERSION_PATTERN, 'azureAPIVersion must look like "2024-10-21" or "2024-10-01-preview"', 32)
]


def _is_cidr(value: str) -> bool:
    """Python twin of CEL's isCIDR (host bits may be set, the prefix length is mandatory)."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return "/" in value


CIDR = Annotated[
    str,
    CheckedStr(
        cel="isCIDR(self)",
        message="must be a CIDR such as 203.0.113.0/24 or 2001:db8::/32",
        max_length=64,
        check=_is_cidr,
    ),
]

# ---------------------------------------------------------------------------------------------------------------
# local:
# ---------------------------------------------------------------------------------------------------------------


class ModelSpec(ApiModel):
    """The weights a local tier serves and how they are quantized."""

    source: ModelSource = Field(
        description="Where the weights come from: pvc://<claim>/<path> (a file on a PersistentVolumeClaim in "
        "this namespace), https://<host>/<path> (downloaded once and cached) or hf://<org>/<repo>/<file> "
        "(a file of a Hugging Face repository)."
    )
    sha256: SHA256 | None = Field(
        default=None,
        description="Expected SHA-256 of the weights file (64 lowercase hex digits); the server refuses to load "
        "a file that does not match. Required for https:// and hf:// sources.",
    )
    format: ModelFormat = Field(default="gguf", description="gguf (llama.cpp) or safetensors (vLLM checkpoints).")
    quantization: Quantization | None = Field(
        default=None,
        description="Quantization of the stored weights: a GGUF tensor type (Q4_K_M, Q8_0, F16, ...) for gguf, "
        "or gptq / awq (with bits) for vLLM safetensors checkpoints.",
    )
    bits: int | None = Field(
        default=None,
        ge=2,
        le=8,
        description="Weight bit width for gptq / awq quantization (e.g. 4). Only valid with gptq or awq.",
    )
    quantize_on_load: GGUFQuantType | None = Field(
        default=None,
        description="Quantize a gguf model to this GGUF type when the server starts (e.g. an F16 file served as "
        "Q4_K_M); the result is cached next to the source. llamacpp only.",
    )
    context_length: int = Field(
        default=4096, ge=128, le=1048576, description="Context window in tokens the server allocates."
    )

    cel_rules = (
        CelRule(
            rule="!(self.source.startsWith('https://') || self.source.startsWith('hf://')) || has(self.sha256)",
            message="sha256 is required when the model is downloaded (https:// or hf:// source)",
            check=lambda m: not (m.source.startswith(("https://", "hf://"))) or m.sha256 is not None,
            field_path=".sha256",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule=f"!has(self.quantization) || (self.quantization in {_VLLM_CEL}) == (self.format == 'safetensors')",
            message="quantization gptq/awq needs format safetensors, and GGUF types (Q4_K_M, Q8_0, ...) need "
            "format gguf",
            check=lambda m: (
                m.quantization is None or (m.quantization in VLLM_QUANT_METHODS) == (m.format == "safetensors")
            ),
            field_path=".quantization",
        ),
        CelRule(
            rule=f"!has(self.quantization) || !(self.quantization in {_VLLM_CEL}) || has(self.bits)",
            message="quantization gptq/awq requires bits (e.g. bits: 4)",
            check=lambda m: m.quantization not in VLLM_QUANT_METHODS or m.bits is not None,
            field_path=".bits",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule=f"!has(self.bits) || (has(self.quantization) && self.quantization in {_VLLM_CEL})",
            message="bits is only valid with quantization gptq or awq",
            check=lambda m: m.bits is None or m.quantization in VLLM_QUANT_METHODS,
            field_path=".bits",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="!has(self.quantizeOnLoad) || self.format == 'gguf'",
            message="quantizeOnLoad requires format gguf",
            check=lambda m: m.quantize_on_load is None or m.format == "gguf",
            field_path=".quantizeOnLoad",
            reason="FieldValueForbidden",
        ),
    )

    @property
    def effective_quantization(self) -> str | None:
        """What the server actually runs: the quantize-on-load target if set, else the stored type."""
        return self.quantize_on_load or self.quantization


class DraftModel(ApiModel):
    """The small model that proposes tokens for the target model to verify."""

    source: ModelSource = Field(description="Where the draft weights come from (same forms as model.source).")
    sha256: SHA256 | None = Field(
        default=None, description="Expected SHA-256 of the draft weights. Required for https:// and hf:// sources."
    )

    cel_rules = (
        CelRule(
            rule="!(self.source.startsWith('https://') || self.source.startsWith('hf://')) || has(self.sha256)",
            message="sha256 is required when the draft model is downloaded (https:// or hf:// source)",
            check=lambda m: not (m.source.startswith(("https://", "hf://"))) or m.sha256 is not None,
            field_path=".sha256",
            reason="FieldValueRequired",
        ),
    )


class Speculative(ApiModel):
    """Speculative decoding: cheap proposals verified by the target model; same output, higher throughput."""

    mode: SpeculativeMode = Field(
        description="draft: a small draft model proposes tokens; promptLookup: n-grams from the prompt propose "
        "tokens (no extra model)."
    )
    draft: DraftModel | None = Field(default=None, description="The draft model. Required when mode is draft.")
    tokens: int = Field(default=5, ge=1, le=32, description="Tokens proposed per verification step.")
    max_ngram_size: int = Field(
        default=3, ge=1, le=10, description="Longest prompt n-gram matched in promptLookup mode."
    )

    cel_rules = (
        CelRule(
            rule="self.mode != 'draft' || has(self.draft)",
            message="speculative mode draft requires draft.source (the draft model)",
            check=lambda s: s.mode != "draft" or s.draft is not None,
            field_path=".draft",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.mode != 'promptLookup' || !has(self.draft)",
            message="speculative mode promptLookup uses no draft model; remove draft",
            check=lambda s: s.mode != "promptLookup" or s.draft is None,
            field_path=".draft",
            reason="FieldValueForbidden",
        ),
    )


class LocalBackend(ApiModel):
    """A tier served by pods in this cluster: llama.cpp on CPU/edge nodes or vLLM on GPU nodes."""

    runtime: Runtime = Field(
        default="llamacpp",
        description="llamacpp: the project's SLM server (GGUF, CPU/edge); vllm: the upstream vLLM image (GPU).",
    )
    model: ModelSpec = Field(description="The weights to serve.")
    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Container image override; defaults to the operator's image for the runtime.",
    )
    speculative: Speculative | None = Field(default=None, description="Speculative decoding; off when absent.")
    resources: ResourceRequirements | None = Field(
        default=None, description="CPU/memory/GPU requests and limits of the model server container."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description='Node labels the pods must match, e.g. {node-role.kubernetes.io/edge: ""}.'
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Taints the pods tolerate (dedicated edge or GPU nodes)."
    )

    cel_rules = (
        CelRule(
            rule="self.runtime != 'llamacpp' || self.model.format == 'gguf'",
            message="runtime llamacpp requires model.format gguf",
            check=lambda b: b.runtime != "llamacpp" or b.model.format == "gguf",
            field_path=".model.format",
        ),
        CelRule(
            rule="self.runtime == 'llamacpp' || !has(self.model.quantizeOnLoad)",
            message="model.quantizeOnLoad is only supported by runtime llamacpp",
            check=lambda b: b.runtime == "llamacpp" or b.model.quantize_on_load is None,
            field_path=".model.quantizeOnLoad",
            reason="FieldValueForbidden",
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# cloud:
# ---------------------------------------------------------------------------------------------------------------


class Egress(ApiModel):
    """Where a cloud tier's traffic may go; the operator turns this into NetworkPolicy egress rules."""

    cidrs: list[CIDR] | None = Field(
        default=None, max_length=64, description="Destination CIDRs of the provider's endpoint."
    )
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default=[443], min_length=1, max_length=16, description="Destination TCP ports."
    )
    fqdns: list[FQDN] | None = Field(
        default=None,
        max_length=64,
        description="Destination DNS names; enforced only where the cluster's network plugin supports FQDN "
        "policies (e.g. Cilium), otherwise informational.",
    )


class CloudCapabilities(ApiModel):
    """What the provider's model can serve. The router sends a request that uses something a tier lacks (tools,
    logprobs, a longer context) to another tier the request may reach, or answers 400 saying why."""

    context_length: int | None = Field(
        default=None,
        ge=128,
        le=10_000_000,
        description="Context window in tokens (prompt + completion); longer requests skip this tier. Unlimited "
        "when absent.",
    )
    tools: bool = Field(default=True, description="Whether the model calls tools (requests with `tools`).")
    logprobs: bool = Field(default=True, description="Whether the model returns token log probabilities.")


class CloudBackend(ApiModel):
    """A tier served by a hosted LLM API; no pods, only egress permission and validation."""

    provider: CloudProvider = Field(description="openai, azure-openai or openai-compatible.")
    base_url: BaseURL | None = Field(
        default=None,
        alias="baseURL",
        description="API base URL, e.g. https://api.openai.com/v1. Required for azure-openai and "
        "openai-compatible; defaults to https://api.openai.com/v1 for openai.",
    )
    model: str = Field(
        min_length=1,
        max_length=256,
        description="Model name sent to the provider (for azure-openai: the deployment name).",
    )
    api_key_secret_ref: SecretKeyRef = Field(
        description="Secret (same namespace) and key holding the provider API key. Required."
    )
    azure_api_version: AzureAPIVersion | None = Field(
        default=None,
        alias="azureAPIVersion",
        description="api-version query parameter for azure-openai, e.g. 2024-10-21.",
    )
    region: Region | None = Field(
        default=None,
        description="Provider region the data is processed in; must be listed in the namespace's "
        f"{labels.LABEL_ALLOWED_REGIONS} label when that label is set.",
    )
    egress: Egress | None = Field(
        default=None, description="Network destinations this tier needs; nothing else leaves the cluster."
    )
    capabilities: CloudCapabilities | None = Field(
        default=None,
        description="What the model can serve (context window, tools, logprobs); everything, with no context "
        "limit, when absent. Local tiers report theirs from the runtime and model.contextLength.",
    )

    cel_rules = (
        CelRule(
            rule="self.provider == 'openai' || has(self.baseURL)",
            message="baseURL is required for providers azure-openai and openai-compatible",
            check=lambda c: c.provider == "openai" or c.base_url is not None,
            field_path=".baseURL",
            reason="FieldValueRequired",
        ),
        CelRule(
            rule="self.provider == 'azure-openai' || !has(self.azureAPIVersion)",
            message="azureAPIVersion is only valid with provider azure-openai",
            check=lambda c: c.provider == "azure-openai" or c.azure_api_version is None,
            field_path=".azureAPIVersion",
            reason="FieldValueForbidden",
        ),
    )

    @property
    def effective_base_url(self) -> str:
        """The URL the router calls."""
        return self.base_url or "https://api.openai.com/v1"


# ---------------------------------------------------------------------------------------------------------------
# pricing, slo, autoscaling
# ---------------------------------------------------------------------------------------------------------------


class Pricing(ApiModel):
    """Price of one million tokens in US dollars, as decimal strings (e.g. "2.50"); used for spend and savings."""

    input_usd_per_million: USDAmount = Field(
        default="0",
        alias="inputUSDPerMillion",
        description='USD per 1M input (prompt) tokens as a decimal string, e.g. "2.50". Cloud: the provider\'s '
        "price; local: an amortised hardware cost.",
    )
    output_usd_per_million: USDAmount = Field(
        default="0",
        alias="outputUSDPerMillion",
        description='USD per 1M output (completion) tokens as a decimal string, e.g. "10.00".',
    )


class SLO(ApiModel):
    """The latency objective the autoscaler keeps a local tier within (and that status reports against)."""

    latency_p95_ms: int = Field(ge=1, le=600000, description="Target 95th-percentile latency in milliseconds.")
    metric: SLOMetric = Field(
        default="e2e", description="e2e: whole request latency; ttft: time to first token (streaming)."
    )
    window: Duration = Field(default="5m", description="Prometheus range over which p95 is computed, e.g. 5m.")


class Autoscaling(ApiModel):
    """SLO-driven horizontal scaling of a local tier (the operator scales the Deployment's scale subresource)."""

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest replicas the autoscaler keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler creates.")
    evaluation_interval_seconds: int = Field(
        default=30, ge=5, le=3600, description="How often p95 and in-flight requests are evaluated."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Scale down only to the highest recommendation seen over this many seconds (no flapping).",
    )
    tolerance: int = Field(
        default=10,
        ge=0,
        le=100,
        description="Dead band in integer percent: no scaling while p95 is within this percentage of the SLO.",
    )
    max_scale_up_step: int = Field(
        default=4, ge=1, le=100, description="At most this many replicas added per evaluation."
    )
    max_scale_down_step: int = Field(
        default=1, ge=1, le=100, description="At most this many replicas removed per evaluation."
    )

    cel_rules = (
        CelRule(
            rule="self.minReplicas <= self.maxReplicas",
            message="minReplicas must be less than or equal to maxReplicas",
            check=lambda a: a.min_replicas <= a.max_replicas,
            field_path=".minReplicas",
        ),
    )


# ---------------------------------------------------------------------------------------------------------------
# spec / status / object
# ---------------------------------------------------------------------------------------------------------------


class InferenceTierSpec(ApiModel):
    """Desired state of an InferenceTier: exactly one of local / cloud, matching backend."""

    backend: Backend = Field(
        description="local: served by pods in this cluster (set local); cloud: a hosted LLM API (set cloud)."
    )
    local: LocalBackend | None = Field(default=None, description="Local model server. Required when backend is local.")
    cloud: CloudBackend | None = Field(default=None, description="Cloud provider. Required when backend is cloud.")
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Desired model server replicas of a local tier (the scale subresource: kubectl scale itier). "
        "With autoscaling the operator keeps it within min/max. Ignored for cloud tiers.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="SLO-driven autoscaling of a local tier; off when absent. Needs slo."
    )
    pricing: Pricing | None = Field(
        default=None, description="USD per 1M tokens used for spend and avoided-cost metrics; absent means 0."
    )
    slo: SLO | None = Field(default=None, description="Latency objective of the tier.")

    cel_rules = (
        CelRule(
            rule="self.backend == 'local' ? (has(self.local) && !has(self.cloud)) "
            ": (has(self.cloud) && !has(self.local))",
            message="exactly one of local or cloud must be set, matching backend "
            "(backend local needs local, backend cloud needs cloud)",
            check=lambda s: (
                (s.local is not None and s.cloud is None)
                if s.backend == "local"
                else (s.cloud is not None and s.local is None)
            ),
        ),
        CelRule(
            rule="!has(self.autoscaling) || self.backend == 'local'",
            message="autoscaling applies only to backend local",
            check=lambda s: s.autoscaling is None or s.backend == "local",
            field_path=".autoscaling",
            reason="FieldValueForbidden",
        ),
        CelRule(
            rule="!has(self.autoscaling) || has(self.slo)",
            message="autoscaling requires slo (the latency objective it scales for)",
            check=lambda s: s.autoscaling is None or s.slo is not None,
            field_path=".slo",
            reason="FieldValueRequired",
        ),
    )


class InferenceTierStatus(ApiModel):
    """Observed state of an InferenceTier, computed by the operator from what it saw."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this status describes."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        max_length=32,
        description="Ready, Available, ModelReady, SLOMet, ResidencyCompliant and Stalled (what will not fix "
        "itself), per Kubernetes API conventions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Model server pods that exist (scale subresource status)."
    )
    ready_replicas: int | None = Field(default=None, ge=0, description="Model server pods that are ready.")
    ready_display: str | None = Field(
        default=None, max_length=32, description='"ready/desired" for kubectl get, e.g. "2/3"; "-" for cloud.'
    )
    selector: str | None = Field(
        default=None,
        max_length=1024,
        description="Label selector of the tier's pods (scale subresource, used by HPA/kubectl).",
    )
    model: str | None = Field(
        default=None, max_length=256, description="Model being served (file name or cloud model), for kubectl get."
    )
    quantization: str | None = Field(
        default=None, max_length=32, description="Effective quantization being served, for kubectl get."
    )
    endpoint: str | None = Field(default=None, max_length=2048, description="URL the router uses to reach this tier.")
    p95_ms: int | None = Field(
        default=None, ge=0, description="Observed p95 latency in ms over the SLO window (per the SLO metric)."
    )
    last_scale_time: datetime | None = Field(default=None, description="When the autoscaler last changed replicas.")
    last_scale_reason: str | None = Field(
        default=None, max_length=1024, description="Why the autoscaler last changed replicas."
    )

    def condition(self, type_: str) -> Condition | None:
        """The condition of this type, if present."""
        return next((c for c in self.conditions or [] if c.type == type_), None)


class InferenceTier(ApiModel):
    """A tier of inference capacity: a quantized model served in the cluster, or a cloud LLM API."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["tiered.dev/v1alpha1"] = Field(
        default="tiered.dev/v1alpha1", description="tiered.dev/v1alpha1"
    )
    kind: Literal["InferenceTier"] = Field(default="InferenceTier", description="InferenceTier")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: InferenceTierSpec = Field(description="Desired state.")
    status: InferenceTierStatus | None = Field(default=None, description="Observed state (written by the operator).")

    @classmethod
    def from_k8s(cls, body: Any) -> InferenceTier:
        """Parse an object as returned by the API server or kopf (a Mapping)."""
        return cls.model_validate(dict(body))
