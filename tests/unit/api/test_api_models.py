"""The pydantic models accept the samples and reject what the API server rejects (the operator relies on it)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from api_invalid_cases import CASES, VALID_CASES, InvalidCase, ValidCase, cloud_tier, local_tier, policy, set_path
from pydantic import BaseModel, ValidationError

from tiered_operator.api import InferenceTier, RoutingPolicy, usd


def _model_for(obj: dict[str, Any]) -> type[BaseModel]:
    models: dict[str, type[BaseModel]] = {"InferenceTier": InferenceTier, "RoutingPolicy": RoutingPolicy}
    return models[obj["kind"]]


@pytest.mark.parametrize("build", [local_tier, cloud_tier, policy], ids=["local", "cloud", "policy"])
def test_samples_validate(build: Any) -> None:
    obj = build()
    _model_for(obj).model_validate(obj)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_spec_rejected_with_message(case: InvalidCase) -> None:
    obj = case.build()
    with pytest.raises(ValidationError) as err:
        _model_for(obj).model_validate(obj)
    assert case.python in str(err.value)


def test_catalogue_has_at_least_15_distinct_cases() -> None:
    assert len({c.id for c in CASES}) == len(CASES) >= 15


def test_local_tier_defaults_match_the_crd_defaults() -> None:
    obj = local_tier()
    for key in ("replicas", "pricing"):
        obj["spec"].pop(key)
    obj["spec"]["autoscaling"] = {"maxReplicas": 2}
    obj["spec"]["slo"] = {"latencyP95Ms": 50}
    del obj["spec"]["local"]["model"]["contextLength"]
    spec = InferenceTier.model_validate(obj).spec
    assert spec.replicas == 1
    assert spec.pricing is None
    assert spec.autoscaling is not None and spec.autoscaling.min_replicas == 1
    assert spec.autoscaling.evaluation_interval_seconds == 30
    assert spec.slo is not None and (spec.slo.metric, spec.slo.window) == ("e2e", "5m")
    assert spec.local is not None and spec.local.model.context_length == 4096


def test_vllm_gptq_with_bits_is_valid() -> None:
    obj = local_tier()
    set_path(obj, "spec.local.runtime", "vllm")
    set_path(
        obj,
        "spec.local.model",
        {"source": "pvc://models/llama-gptq", "format": "safetensors", "quantization": "gptq", "bits": 4},
    )
    obj["spec"]["local"].pop("speculative")
    tier = InferenceTier.model_validate(obj)
    assert tier.spec.local is not None and tier.spec.local.model.bits == 4


def test_bits_without_gptq_or_awq_is_rejected() -> None:
    obj = local_tier()
    set_path(obj, "spec.local.model.bits", 4)
    with pytest.raises(ValidationError, match="bits is only valid with quantization gptq or awq"):
        InferenceTier.model_validate(obj)


def test_quantize_on_load_is_the_effective_quantization() -> None:
    obj = local_tier()
    set_path(obj, "spec.local.model.quantization", "F16")
    set_path(obj, "spec.local.model.quantizeOnLoad", "Q4_K_M")
    tier = InferenceTier.model_validate(obj)
    assert tier.spec.local is not None and tier.spec.local.model.effective_quantization == "Q4_K_M"


def test_quantize_on_load_is_llamacpp_only() -> None:
    obj = local_tier()
    set_path(obj, "spec.local.runtime", "vllm")
    set_path(obj, "spec.local.model.quantizeOnLoad", "Q4_K_M")
    with pytest.raises(ValidationError, match="quantizeOnLoad is only supported by runtime llamacpp"):
        InferenceTier.model_validate(obj)


def test_draft_speculation_with_draft_model_is_valid() -> None:
    obj = local_tier()
    set_path(
        obj, "spec.local.speculative", {"mode": "draft", "draft": {"source": "pvc://models/draft.gguf"}, "tokens": 4}
    )
    tier = InferenceTier.model_validate(obj)
    assert tier.spec.local is not None and tier.spec.local.speculative is not None
    assert tier.spec.local.speculative.draft is not None


def test_prompt_lookup_rejects_a_draft_model() -> None:
    obj = local_tier()
    set_path(obj, "spec.local.speculative.draft", {"source": "pvc://models/draft.gguf"})
    with pytest.raises(ValidationError, match="promptLookup uses no draft model"):
        InferenceTier.model_validate(obj)


def test_azure_api_version_only_with_azure() -> None:
    obj = cloud_tier()
    set_path(obj, "spec.cloud.azureAPIVersion", "2024-10-21")
    with pytest.raises(ValidationError, match="azureAPIVersion is only valid with provider azure-openai"):
        InferenceTier.model_validate(obj)
    set_path(obj, "spec.cloud.provider", "azure-openai")
    assert InferenceTier.model_validate(obj).spec.cloud is not None


def test_openai_without_base_url_uses_the_public_endpoint() -> None:
    obj = cloud_tier()
    del obj["spec"]["cloud"]["baseURL"]
    cloud = InferenceTier.model_validate(obj).spec.cloud
    assert cloud is not None and cloud.effective_base_url == "https://api.openai.com/v1"


def test_secret_key_defaults_to_api_key() -> None:
    obj = cloud_tier()
    del obj["spec"]["cloud"]["apiKeySecretRef"]["key"]
    cloud = InferenceTier.model_validate(obj).spec.cloud
    assert cloud is not None and cloud.api_key_secret_ref.key == "api-key"


def test_prices_are_exact_decimals() -> None:
    pricing = InferenceTier.model_validate(cloud_tier()).spec.pricing
    assert pricing is not None
    assert usd(pricing.input_usd_per_million) == Decimal("2.50")
    assert usd(None) == Decimal(0)


def test_unknown_spec_field_is_rejected() -> None:
    obj = local_tier()
    obj["spec"]["replica"] = 2
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        InferenceTier.model_validate(obj)


def test_wire_form_round_trips() -> None:
    obj = policy()
    parsed = RoutingPolicy.model_validate(obj)
    again = RoutingPolicy.model_validate(parsed.to_k8s())
    assert again == parsed
    wire = parsed.to_k8s()
    assert wire["spec"]["defaultTier"] == "slm-edge"
    assert wire["spec"]["budget"]["monthlyUSD"] == "500"
    assert wire["spec"]["fallback"]["triggers"] == ["5xx", "timeout", "connect"]


def test_server_fields_in_metadata_and_status_are_tolerated() -> None:
    obj = local_tier()
    obj["metadata"].update({"uid": "u1", "generation": 3, "managedFields": [{"manager": "kubectl"}]})
    obj["status"] = {
        "observedGeneration": 3,
        "replicas": 1,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Serving",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            }
        ],
        "kopf": {"progress": {}},
    }
    tier = InferenceTier.model_validate(obj)
    assert tier.metadata.generation == 3
    assert tier.status is not None
    ready = tier.status.condition("Ready")
    assert ready is not None and ready.status == "True"


def test_condition_reason_must_be_camel_case_like() -> None:
    obj = local_tier()
    obj["status"] = {
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "not ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]
    }
    with pytest.raises(ValidationError, match="String should match pattern"):
        InferenceTier.model_validate(obj)


def test_policy_defaults() -> None:
    obj = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "p"},
        "spec": {"tiers": ["a"], "defaultTier": "a"},
    }
    spec = RoutingPolicy.model_validate(obj).spec
    assert spec.routes == []
    assert spec.classifier is None and spec.budget is None


@pytest.mark.parametrize("case", VALID_CASES, ids=[c.id for c in VALID_CASES])
def test_valid_variants_are_accepted(case: ValidCase) -> None:
    obj = case.build()
    _model_for(obj).model_validate(obj)
