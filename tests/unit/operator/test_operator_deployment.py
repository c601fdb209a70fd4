"""build_deployment / build_service: every spec field that changes the output, and the invariants
(restricted security, no spec.replicas, owner references, no router-config hash on the pod template)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.reconcile.deployment import (
    CloudKeyMount,
    RouterSidecar,
    UnsupportedSpec,
    build_deployment,
)
from tiered_operator.reconcile.service import build_service
from tiered_operator.settings import OperatorSettings, Ports

SIDECAR = RouterSidecar()
MakeTier = Callable[..., InferenceTier]


def _containers(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}


def _args(dep: dict[str, Any]) -> list[str]:
    return list(_containers(dep)["model"]["args"])


def _volumes(dep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_sample_local_tier_renders_a_restricted_two_container_deployment(
    bodies: Any, settings: OperatorSettings
) -> None:
    tier = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml")))
    dep = build_deployment(tier, SIDECAR, settings)
    pod = dep["spec"]["template"]["spec"]
    assert "replicas" not in dep["spec"]  # owned by the scale subresource, never by this manifest
    assert dep["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "InferenceTier",
            "name": "slm-edge",
            "uid": "uid-slm-edge",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert dep["spec"]["selector"]["matchLabels"] == {"tiered.dev/tier": "slm-edge", "tiered.dev/component": "slm"}
    # Nothing of the router config is on the pod template: the router hot-reloads it (no pod restart).
    assert dep["spec"]["template"]["metadata"] == {"labels": dep["metadata"]["labels"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    model = _containers(dep)["model"]
    assert model["startupProbe"]["failureThreshold"] * model["startupProbe"]["periodSeconds"] >= 1800
    # The router trains its classifier before it listens: on a busy node that outlasted the liveness probe's
    # 60 s and the container was restarted forever (seen on the real node); liveness waits for startup.
    router = _containers(dep)["router"]
    assert router["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Deleted pods keep serving a few seconds before SIGTERM, while their endpoint leaves every Service path.
    for c in (model, router):
        assert c["lifecycle"]["preStop"]["sleep"]["seconds"] >= 3
        assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"] + 30
    assert router["startupProbe"]["failureThreshold"] * router["startupProbe"]["periodSeconds"] >= 300
    assert model["resources"] == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "4Gi"}}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == [{"key": "tiered.dev/edge", "operator": "Exists", "effect": "NoSchedule"}]
    assert model["command"] == ["tiered-slm"] and model["args"][0] == "serve"
    assert "--speculative=prompt-lookup" in model["args"] and "--draft-tokens=8" in model["args"]
    assert "--ngram=3" in model["args"] and "--ctx=4096" in model["args"]
    assert "--model=pvc://models/qwen2.5-1.5b-instruct-q4_k_m.gguf" in model["args"]
    assert "--model-id=slm-edge" in model["args"] and "--pvc-root=/models" in model["args"]


def test_images_come_from_settings_and_tier_image_overrides_the_model_server(
    make_tier: MakeTier,
) -> None:
    settings = OperatorSettings(slm_image="reg/slm:9", router_image="reg/router:9")
    dep = build_deployment(make_tier(), SIDECAR, settings)
    assert _containers(dep)["model"]["image"] == "reg/slm:9"
    assert _containers(dep)["router"]["image"] == "reg/router:9"
    dep = build_deployment(make_tier(image="custom/slm:1"), SIDECAR, settings)
    assert _containers(dep)["model"]["image"] == "custom/slm:1"


def test_pvc_source_mounts_the_claim_read_only_under_the_pvc_root(
    make_tier: MakeTier, settings: OperatorSettings
) -> None:
    dep = build_deployment(make_tier(), SIDECAR, settings)
    assert _volumes(dep)["pvc-models"] == {
        "name": "pvc-models",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    }
    mounts = {m["name"]: m for m in _containers(dep)["model"]["volumeMounts"]}
    assert mounts["pvc-models"] == {"name": "pvc-models", "mountPath": "/models/models", "readOnly": True}
    assert "--model=pvc://models/m.gguf" in _args(dep)


def test_https_source_downloads_into_an_emptydir_cache_and_passes_the_sha256(
    make_tier: MakeTier, settings: OperatorSettings
) -> None:
    sha = "a" * 64
    tier = make_tier(model={"source": "https://example.com/m.gguf", "sha256": sha, "format": "gguf"})
    dep = build_deployment(tier, SIDECAR, settings)
    assert not any("persistentVolumeClaim" in v for v in _volumes(dep).values())
    assert _volumes(dep)["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    assert f"--sha256={sha}" in _args(dep) and "--cache-dir=/cache" in _args(dep)


def test_model_fields_become_server_arguments(make_tier: MakeTier, settings: OperatorSettings) -> None:
    tier = make_tier(
        model={
            "source": "pvc://models/m-f16.gguf",
            "format": "gguf",
            "quantization": "F16",
            "quantizeOnLoad": "Q4_K_M",
            "contextLength": 8192,
        }
    )
    args = _args(build_deployment(tier, SIDECAR, settings))
    assert "--quantize=Q4_K_M" in args  # the stored type (F16) is read from the GGUF header by the server
    assert "--ctx=8192" in args and "--model-id=slm" in args and "--speculative=draft" not in args


def test_draft_model_on_another_claim_is_mounted_too(make_tier: MakeTier, settings: OperatorSettings) -> None:
    tier = make_tier(speculative={"mode": "draft", "tokens": 4, "draft": {"source": "pvc://drafts/d.gguf"}})
    dep = build_deployment(tier, SIDECAR, settings)
    assert {"pvc-models", "pvc-drafts"} <= set(_volumes(dep))
    assert "--speculative=draft" in _args(dep) and "--draft-model=/models/drafts/d.gguf" in _args(dep)
    assert "--draft-tokens=4" in _args(dep)


def test_llamacpp_draft_model_must_come_from_a_volume(make_tier: MakeTier, settings: OperatorSettings) -> None:
    tier = make_tier(speculative={"mode": "draft", "draft": {"source": "https://h/d.gguf", "sha256": "d" * 64}})
    with pytest.raises(UnsupportedSpec, match="pvc://"):
        build_deployment(tier, SIDECAR, settings)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_vllm_runtime_renders_upstream_server_with_quantization_and_speculation(
    make_tier: MakeTier, method: str
) -> None:
    settings = OperatorSettings(vllm_image="vllm/vllm-openai:v9")
    tier = make_tier(
        runtime="vllm",
        model={
            "source": "hf://org/model-gptq/model.safetensors",
            "sha256": "b" * 64,
            "format": "safetensors",
            "quantization": method,
            "bits": 4,
            "contextLength": 16384,
        },
        speculative={"mode": "draft", "tokens": 3, "draft": {"source": "pvc://drafts/small"}},
        resources={"limits": {"nvidia.com/gpu": 1}},
    )
    dep = build_deployment(tier, SIDECAR, settings)
    model = _containers(dep)["model"]
    assert model["image"] == "vllm/vllm-openai:v9" and "command" not in model
    assert "--model=org/model-gptq" in model["args"] and f"--quantization={method}" in model["args"]
    assert "--max-model-len=16384" in model["args"] and "--served-model-name=slm" in model["args"]
    spec_arg = next(a for a in model["args"] if a.startswith("--speculative-config="))
    assert json.loads(spec_arg.split("=", 1)[1]) == {"model": "/models/drafts/small", "num_speculative_tokens": 3}
    assert model["readinessProbe"]["httpGet"]["path"] == "/health"
    assert model["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert _volumes(dep)["dshm"]["emptyDir"] == {"medium": "Memory"}


def test_vllm_prompt_lookup_uses_the_ngram_method(make_tier: MakeTier, settings: OperatorSettings) -> None:
    tier = make_tier(
        runtime="vllm",
        model={"source": "pvc://models/ckpt", "format": "safetensors"},
        speculative={"mode": "promptLookup", "tokens": 6, "maxNgramSize": 4},
    )
    args = _args(build_deployment(tier, SIDECAR, settings))
    assert "--model=/models/models/ckpt" in args
    spec_arg = next(a for a in args if a.startswith("--speculative-config="))
    assert json.loads(spec_arg.split("=", 1)[1]) == {
        "method": "ngram",
        "num_speculative_tokens": 6,
        "prompt_lookup_max": 4,
        "prompt_lookup_min": 1,
    }


def test_vllm_cannot_render_an_https_source(make_tier: MakeTier, settings: OperatorSettings) -> None:
    tier = make_tier(runtime="vllm", model={"source": "https://h/x", "sha256": "c" * 64, "format": "safetensors"})
    with pytest.raises(UnsupportedSpec, match="runtime vllm cannot load"):
        build_deployment(tier, SIDECAR, settings)


def test_router_sidecar_mounts_config_and_cloud_keys(make_tier: MakeTier, settings: OperatorSettings) -> None:
    sidecar = RouterSidecar(
        key_mounts=(CloudKeyMount(tier="gpt", secret="openai", key="api-key"),),
        resources={"limits": {"memory": "1Gi"}},
    )
    dep = build_deployment(make_tier(), sidecar, settings)
    router = _containers(dep)["router"]
    assert _volumes(dep)["router-config"] == {"name": "router-config", "configMap": {"name": "slm-router"}}
    assert _volumes(dep)["key-gpt"]["secret"] == {
        "secretName": "openai",
        "items": [{"key": "api-key", "path": "api-key"}],
        "optional": True,
    }
    mounts = {m["name"]: m["mountPath"] for m in router["volumeMounts"]}
    assert mounts == {"router-config": "/etc/tiered/router", "tmp": "/tmp", "key-gpt": "/var/run/tiered/secrets/gpt"}
    assert router["command"] == ["python", "-m", "tiered_router"]
    assert router["args"] == ["serve", "--config=/etc/tiered/router/router.json", "--host=0.0.0.0", "--port=8000"]
    assert router["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert router["resources"] == {"limits": {"memory": "1Gi"}}
    # key mounts never reach the model server container
    assert all(m["name"] != "key-gpt" for m in _containers(dep)["model"]["volumeMounts"])


def test_no_node_selector_or_tolerations_when_unset(make_tier: MakeTier, settings: OperatorSettings) -> None:
    pod = build_deployment(make_tier(), SIDECAR, settings)["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "resources" not in _containers({"spec": {"template": {"spec": pod}}})["model"]


def test_service_exposes_router_metrics_and_model_ports(make_tier: MakeTier) -> None:
    svc = build_service(make_tier(), OperatorSettings(ports=Ports(router=8001, router_metrics=9091, slm=8081)))
    assert svc["spec"]["selector"] == {"tiered.dev/tier": "slm", "tiered.dev/component": "slm"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8001, "http"),
        ("metrics", 9091, "http"),
        ("slm", 8081, "slm"),
    ]
    assert svc["metadata"]["ownerReferences"][0]["uid"] == "uid-slm"


def test_router_reads_an_encoder_from_its_claim_and_shares_the_model_claim_volume(
    make_tier: MakeTier, settings: OperatorSettings
) -> None:
    dep = build_deployment(make_tier(), RouterSidecar(pvc_claims=("encoders", "models")), settings)
    assert [v["name"] for v in dep["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v] == [
        "pvc-models",
        "pvc-encoders",
    ]
    router = {m["name"]: m["mountPath"] for m in _containers(dep)["router"]["volumeMounts"]}
    model = {m["name"]: m["mountPath"] for m in _containers(dep)["model"]["volumeMounts"]}
    assert router["pvc-encoders"] == "/models/encoders" and router["pvc-models"] == "/models/models"
    assert "pvc-encoders" not in model
