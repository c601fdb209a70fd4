"""build_deployment: a local InferenceTier → its Deployment (model server + router sidecar).

The Deployment deliberately has no `spec.replicas`: replicas belong to whoever scales the tier (the
autoscaler, or the replica sync for tiers without autoscaling) through the scale subresource under a separate
field manager, so server-side apply of this manifest never fights a scaling decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier, LocalBackend
from tiered_operator.reconcile import naming
from tiered_operator.settings import OperatorSettings

RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""Pod Security Standard "restricted", per container."""

POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}

DEFAULT_ROUTER_RESOURCES: dict[str, Any] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"memory": "512Mi"},
}

STARTUP_FAILURE_THRESHOLD = 360
"""Times 5 s = 30 min for download, sha256 check, quantize-on-load and warm-up before liveness applies."""
PRE_STOP_SLEEP_SECONDS = 5
"""Both containers keep serving this long after their pod is deleted, before SIGTERM: the time kube-proxy and other
routers' Service connections need to stop sending new requests to it (a rolling update dropped requests that
arrived after SIGTERM and before the endpoint was gone, on the real node)."""
PRE_STOP = {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}}

ROUTER_STARTUP_FAILURE_THRESHOLD = 150
"""Times 2 s = 5 min for the router to load its config and train its classifier before it listens (seconds on an
idle node; on a busy one it outlasted the liveness probe, which then restarted it forever)."""


class UnsupportedSpec(ValueError):
    """The spec is valid for the API but cannot be rendered (e.g. vLLM cannot fetch an https:// file)."""


@dataclass(frozen=True)
class CloudKeyMount:
    """A cloud tier's API key the router sidecar needs (the tier is in a policy this tier serves)."""

    tier: str
    secret: str
    key: str


@dataclass(frozen=True)
class RouterSidecar:
    """What the router sidecar needs from the policies that use the tier: only what must be in the pod template
    (mounts and resources). The router config itself is not here: the router hot-reloads its mounted ConfigMap,
    so a policy edit or a budget flip must not restart the model pods (see docs/operator.md, "Config changes")."""

    key_mounts: tuple[CloudKeyMount, ...] = ()
    resources: dict[str, Any] | None = None
    pvc_claims: tuple[str, ...] = ()
    """Claims the router reads (an ONNX / sentence-transformers encoder given as pvc://claim/dir)."""


@dataclass(frozen=True)
class Volumes:
    volumes: list[dict[str, Any]] = field(default_factory=list)
    slm_mounts: list[dict[str, Any]] = field(default_factory=list)
    router_mounts: list[dict[str, Any]] = field(default_factory=list)


def pvc_claims(local: LocalBackend) -> list[str]:
    """PersistentVolumeClaims the model server reads (model and draft model), in a stable order."""
    sources = [local.model.source]
    if local.speculative is not None and local.speculative.draft is not None:
        sources.append(local.speculative.draft.source)
    claims: list[str] = []
    for source in sources:
        if source.startswith("pvc://"):
            claim = source.removeprefix("pvc://").split("/", 1)[0]
            if claim not in claims:
                claims.append(claim)
    return claims


def _pvc_path(source: str) -> str:
    return f"{naming.PVC_ROOT}/{source.removeprefix('pvc://')}"


def llamacpp_args(tier_name: str, local: LocalBackend, settings: OperatorSettings) -> list[str]:
    """Arguments of `tiered-slm serve` (slm_image/tiered_slm/cli.py): it fetches the model source itself,
    checks the sha256, quantizes on load when asked (cached), and serves the model as `<tier>`."""
    model = local.model
    args = [
        "serve",
        "--host=0.0.0.0",
        f"--port={settings.ports.slm}",
        f"--model={model.source}",
        f"--model-id={tier_name}",
        f"--pvc-root={naming.PVC_ROOT}",
        f"--cache-dir={naming.CACHE_DIR}",
        f"--ctx={model.context_length}",
    ]
    if model.sha256:
        args.append(f"--sha256={model.sha256}")
    if model.quantize_on_load:
        args.append(f"--quantize={model.quantize_on_load}")
    spec = local.speculative
    if spec is not None:
        if spec.mode == "promptLookup":
            args += ["--speculative=prompt-lookup", f"--ngram={spec.max_ngram_size}"]
        else:
            args.append("--speculative=draft")
            if spec.draft is not None:
                if not spec.draft.source.startswith("pvc://"):
                    raise UnsupportedSpec(
                        f"runtime llamacpp reads the draft model from a volume: use a pvc:// source, "
                        f"not {spec.draft.source!r}"
                    )
                args.append(f"--draft-model={_pvc_path(spec.draft.source)}")
        args.append(f"--draft-tokens={spec.tokens}")
    return args


def _vllm_model_ref(source: str) -> str:
    if source.startswith("pvc://"):
        return _pvc_path(source)
    if source.startswith("hf://"):
        org, repo = source.removeprefix("hf://").split("/")[:2]
        return f"{org}/{repo}"
    raise UnsupportedSpec(
        f"runtime vllm cannot load model source {source!r}: use pvc://<claim>/<dir> or hf://<org>/<repo>/..."
    )


def vllm_args(tier_name: str, local: LocalBackend, settings: OperatorSettings) -> list[str]:
    """Arguments of the upstream vLLM OpenAI server (`vllm serve`-compatible flags)."""
    model = local.model
    args = [
        f"--model={_vllm_model_ref(model.source)}",
        f"--served-model-name={tier_name}",
        "--host=0.0.0.0",
        f"--port={settings.ports.slm}",
        f"--max-model-len={model.context_length}",
        f"--download-dir={naming.CACHE_DIR}/hf",
    ]
    if model.quantization in ("gptq", "awq"):
        args.append(f"--quantization={model.quantization}")
    spec = local.speculative
    if spec is not None:
        config: dict[str, Any] = {"num_speculative_tokens": spec.tokens}
        if spec.mode == "promptLookup":
            config.update({"method": "ngram", "prompt_lookup_max": spec.max_ngram_size, "prompt_lookup_min": 1})
        elif spec.draft is not None:
            config["model"] = _vllm_model_ref(spec.draft.source)
        args.append("--speculative-config=" + json.dumps(config, sort_keys=True, separators=(",", ":")))
    return args


def _volumes(tier_name: str, local: LocalBackend, sidecar: RouterSidecar) -> Volumes:
    out = Volumes()
    out.volumes.append({"name": "model-cache", "emptyDir": {}})
    out.slm_mounts.append({"name": "model-cache", "mountPath": naming.CACHE_DIR})
    out.volumes.append({"name": "tmp", "emptyDir": {}})
    out.slm_mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if local.runtime == "vllm":
        out.volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        out.slm_mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    add_claim_volumes(out, pvc_claims(local), sidecar.pvc_claims)
    add_router_volumes(out, naming.router_configmap_name(tier_name), sidecar)
    return out


def add_claim_volumes(out: Volumes, model_claims: Sequence[str], router_claims: Sequence[str]) -> None:
    """PersistentVolumeClaims, read-only, each mounted into the container(s) that read it."""
    for claim in [*model_claims, *(c for c in router_claims if c not in model_claims)]:
        name = naming.dns_label("pvc", claim)
        claim_mount = {"name": name, "mountPath": f"{naming.PVC_ROOT}/{claim}", "readOnly": True}
        out.volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        if claim in model_claims:
            out.slm_mounts.append(claim_mount)
        if claim in router_claims:
            out.router_mounts.append(claim_mount)


def add_router_volumes(out: Volumes, configmap: str, sidecar: RouterSidecar) -> None:
    """The router's config (`configmap`, hot-reloaded), its /tmp (the `tmp` volume), and the API key of each
    cloud tier its config may call."""
    out.volumes.append({"name": "router-config", "configMap": {"name": configmap}})
    out.router_mounts.append({"name": "router-config", "mountPath": naming.ROUTER_CONFIG_DIR, "readOnly": True})
    out.router_mounts.append({"name": "tmp", "mountPath": "/tmp"})
    for mount in sorted(sidecar.key_mounts, key=lambda m: m.tier):
        name = naming.dns_label("key", mount.tier)
        out.volumes.append(
            {
                "name": name,
                # optional: a missing cloud key must not keep the local tier from serving; the cloud tier's
                # status reports the missing Secret and the router falls back.
                "secret": {
                    "secretName": mount.secret,
                    "items": [{"key": mount.key, "path": mount.key}],
                    "optional": True,
                },
            }
        )
        out.router_mounts.append({"name": name, "mountPath": f"{naming.SECRETS_DIR}/{mount.tier}", "readOnly": True})


def http_probe(path: str, port: str, period: int, failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failure_threshold,
    }


def _slm_container(tier_name: str, local: LocalBackend, settings: OperatorSettings, mounts: list[Any]) -> dict:
    if local.runtime == "vllm":
        image = local.image or settings.vllm_image
        args = vllm_args(tier_name, local, settings)
        ready, live = "/health", "/health"
        env = [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": f"{naming.CACHE_DIR}/hf"},
            {"name": "XDG_CACHE_HOME", "value": naming.CACHE_DIR},
        ]
    else:
        image = local.image or settings.slm_image
        args = llamacpp_args(tier_name, local, settings)
        ready, live = "/readyz", "/healthz"
        env = [{"name": "HOME", "value": "/tmp"}]
    container: dict[str, Any] = {
        "name": "model",
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": args,
        "env": env,
        "ports": [{"name": "slm", "containerPort": settings.ports.slm, "protocol": "TCP"}],
        "startupProbe": http_probe(live, "slm", 5, STARTUP_FAILURE_THRESHOLD),
        "readinessProbe": http_probe(ready, "slm", 5, 3),
        "livenessProbe": http_probe(live, "slm", 10, 6),
        "lifecycle": PRE_STOP,
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
    }
    if local.runtime == "llamacpp":
        container["command"] = ["tiered-slm"]
    if local.resources is not None:
        resources = local.resources.to_k8s()
        if resources:
            container["resources"] = resources
    return container


def router_container(settings: OperatorSettings, sidecar: RouterSidecar, mounts: list[Any]) -> dict[str, Any]:
    ports = settings.ports
    return {
        "name": "router",
        "image": settings.router_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "tiered_router"],
        "args": [
            "serve",
            f"--config={naming.ROUTER_CONFIG_DIR}/{naming.ROUTER_CONFIG_FILE}",
            "--host=0.0.0.0",
            f"--port={ports.router}",
        ],
        "env": [{"name": "HOME", "value": "/tmp"}],
        # The router serves /metrics on its API port; the Service's `metrics` port points there.
        "ports": [{"name": "http", "containerPort": ports.router, "protocol": "TCP"}],
        "startupProbe": http_probe("/healthz", "http", 2, ROUTER_STARTUP_FAILURE_THRESHOLD),
        "readinessProbe": http_probe("/readyz", "http", 5, 3),
        "livenessProbe": http_probe("/healthz", "http", 10, 6),
        "lifecycle": PRE_STOP,
        "resources": sidecar.resources or DEFAULT_ROUTER_RESOURCES,
        "volumeMounts": mounts,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
    }


def build_deployment(tier: InferenceTier, sidecar: RouterSidecar, settings: OperatorSettings) -> dict[str, Any]:
    """The Deployment of a local tier. Raises UnsupportedSpec when the spec cannot be rendered."""
    local = tier.spec.local
    meta = tier.metadata
    if local is None or meta.name is None or meta.uid is None:
        raise ValueError("build_deployment needs a local tier with metadata.name and metadata.uid")
    name = meta.name
    vols = _volumes(name, local, sidecar)
    pod_labels = naming.tier_labels(name)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # neither container talks to the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": POD_SECURITY,
        "terminationGracePeriodSeconds": 60,  # the model server drains in-flight requests on SIGTERM
        "containers": [
            _slm_container(name, local, settings, vols.slm_mounts),
            router_container(settings, sidecar, vols.router_mounts),
        ],
        "volumes": vols.volumes,
    }
    if local.node_selector:
        pod_spec["nodeSelector"] = dict(local.node_selector)
    if local.tolerations:
        pod_spec["tolerations"] = [t.to_k8s() for t in local.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": naming.deployment_name(name),
            "namespace": meta.namespace,
            "labels": pod_labels,
            "ownerReferences": [naming.owner_reference(labels.KIND_INFERENCE_TIER, name, meta.uid)],
        },
        "spec": {
            "selector": {"matchLabels": naming.tier_selector(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "progressDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": pod_spec,
            },
        },
    }
