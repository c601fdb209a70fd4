"""Gateway mode on the real API server (controller-manager, scheduler, KWOK): a policy's own router Deployment,
Service, PodDisruptionBudget and NetworkPolicies; Ready only once its pods are; residency as for a sidecar; and the
rendered router serving real requests to a real model server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Kube, OperatorFactory, free_port, https_tier, wait_for

pytestmark = pytest.mark.integration
CIDR = "203.0.113.0/24"


def _cloud_tier() -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": "gpt"},
        "spec": {
            "backend": "cloud",
            "cloud": {"provider": "openai-compatible", "baseURL": "https://llm.example.com/v1", "model": "big",
                      "apiKeySecretRef": {"name": "gpt-key"}, "region": "eu-west-1",
                      "egress": {"cidrs": [CIDR], "ports": [443]}},
        },
    }  # fmt: skip


def _gateway_policy(mode: str = "gateway", **router: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "front"},
        "spec": {
            "tiers": ["edge", "gpt"],
            "defaultTier": "edge",
            "routes": [{"name": "chat", "tier": "edge", "keywords": ["hello"]},
                       {"name": "legal", "tier": "gpt", "keywords": ["contract"]}],
            "router": {"mode": mode, "replicas": 2, **router},
        },
    }  # fmt: skip


def _netpols(kube: Kube) -> set[str]:
    return {n["metadata"]["name"] for n in kube.items("networkpolicies")}


def _config(kube: Kube, configmap: str) -> dict[str, Any]:
    return dict(json.loads((kube.get("configmap", configmap) or {})["data"]["router.json"]))


def test_gateway_router_is_built_ready_only_when_serving_follows_residency_and_goes_back_to_sidecars(
    kube: Kube, operators: OperatorFactory
) -> None:
    operators.start()
    kube.run("create", "secret", "generic", "gpt-key", "--from-literal=api-key=sk-test", "-n", kube.namespace)
    kube.apply([https_tier("edge"), _cloud_tier(), _gateway_policy()])

    ready = kube.wait_condition("routingpolicy", "front", "Ready", "True", timeout=90)
    assert ready["reason"] == "GatewayReady", ready
    endpoint = f"http://front-gateway.{kube.namespace}.svc:8000/v1"
    assert (kube.get("routingpolicy", "front") or {})["status"]["endpoint"] == endpoint

    dep = kube.get("deployment", "front-gateway")
    assert dep is not None and dep["spec"]["replicas"] == 2 and dep["status"]["readyReplicas"] == 2
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["router"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["router-config"]["configMap"]["name"] == "front-policy"
    assert volumes["key-gpt"]["secret"]["secretName"] == "gpt-key"
    svc = kube.get("service", "front-gateway")
    assert svc is not None and {p["name"] for p in svc["spec"]["ports"]} == {"http", "metrics"}
    pdb = kube.get("poddisruptionbudget", "front-gateway")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    wait_for(lambda: _netpols(kube) == {"tiered-base", "front-gateway-allow-cloud-gpt"}, 20, "gateway egress")
    allowance = kube.get("networkpolicy", "front-gateway-allow-cloud-gpt") or {}
    assert allowance["spec"]["podSelector"]["matchLabels"] == {"tiered.dev/policy": "front",
                                                               "tiered.dev/component": "router"}  # fmt: skip
    config = _config(kube, "front-policy")
    assert {t["name"]: t["baseURL"] for t in config["tiers"]}["edge"] == \
        f"http://edge.{kube.namespace}.svc:8080/v1"  # fmt: skip  # the model server, through its Service
    assert _config(kube, "edge-router")["policy"] == "edge"  # the sidecar passes through: the gateway routes

    # Ready only when it is: a rollout whose new pod cannot be scheduled says why (the old pods keep serving).
    kube.apply(_gateway_policy(resources={"requests": {"cpu": "5000"}}))
    kube.wait_condition("routingpolicy", "front", "Ready", "False", timeout=60)
    wait_for(lambda: (kube.condition("routingpolicy", "front", "Ready") or {}).get("reason") == "Unschedulable",
             60, "Ready=False Unschedulable")  # fmt: skip
    stuck = kube.condition("routingpolicy", "front", "Ready") or {}
    assert "Insufficient cpu" in stuck["message"], stuck
    kube.apply(_gateway_policy())
    kube.wait_condition("routingpolicy", "front", "Ready", "True", timeout=90)

    # Residency holds for the gateway as for a sidecar: local-only takes the cloud tier's egress, key and config.
    kube.run("label", "namespace", kube.namespace, "tiered.dev/residency=local-only")
    wait_for(lambda: _netpols(kube) == {"tiered-base"}, 15, "gateway cloud egress revoked")
    wait_for(lambda: [t["name"] for t in _config(kube, "front-policy")["tiers"]] == ["edge"], 15, "gpt dropped")
    wait_for(lambda: "key-gpt" not in {v["name"] for v in (kube.get("deployment", "front-gateway") or {})["spec"][
        "template"]["spec"]["volumes"]}, 15, "the key unmounted")  # fmt: skip
    kube.run("label", "namespace", kube.namespace, "tiered.dev/residency-")

    # Back to sidecars: the gateway goes, the tier's sidecar serves the policy again.
    kube.apply(_gateway_policy(mode="sidecar"))
    wait_for(lambda: all(kube.get(k, "front-gateway") is None for k in ("deployment", "service",
                                                                        "poddisruptionbudget")),
             30, "gateway objects deleted")  # fmt: skip
    wait_for(lambda: _config(kube, "edge-router")["policy"] == "front", 15, "the sidecar serves the policy")
    kube.wait_condition("routingpolicy", "front", "Ready", "True", timeout=30)
    assert "endpoint" not in ((kube.get("routingpolicy", "front") or {}).get("status") or {})


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as rsp:
                if rsp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not ready after {timeout}s:\n{log.read_text()[-2000:]}")


def test_the_gateway_the_operator_renders_serves_requests_from_a_real_model_server(
    kube: Kube, operators: OperatorFactory, tmp_path: Path
) -> None:
    """The gateway's command line and the config the operator wrote, run as processes: the router (as the gateway
    pod runs it) sends a request to the model server (as the tier's pod runs it, with a tiny real GGUF model), and
    counts it in the metrics Prometheus scrapes. Only the Service's DNS name is replaced by the loopback address."""
    operators.start()
    kube.apply([https_tier("edge"), _gateway_policy(), _cloud_tier()])
    kube.wait_condition("routingpolicy", "front", "TiersResolved", "True", timeout=60)
    wait_for(lambda: kube.get("deployment", "front-gateway"), 60, "the gateway Deployment")
    dep = kube.get("deployment", "front-gateway") or {}
    (router,) = dep["spec"]["template"]["spec"]["containers"]
    config = _config(kube, "front-policy")

    model = tmp_path / "tiny.gguf"
    subprocess.run([sys.executable, "-m", "tiered_slm", "make-test-model", str(model)], check=True,
                   capture_output=True, timeout=180)  # fmt: skip
    slm_port, router_port = free_port(), free_port()
    for tier in config["tiers"]:
        if tier["name"] == "edge":
            tier["baseURL"] = f"http://127.0.0.1:{slm_port}/v1"
    (tmp_path / "router.json").write_text(json.dumps(config))
    args = [a.replace("/etc/tiered/router/router.json", str(tmp_path / "router.json"))
            .replace("--host=0.0.0.0", "--host=127.0.0.1").replace("--port=8000", f"--port={router_port}")
            for a in router["args"]]  # fmt: skip
    slm_log, router_log = tmp_path / "slm.log", tmp_path / "router.log"
    with slm_log.open("wb") as out:
        slm = subprocess.Popen([sys.executable, "-m", "tiered_slm", "serve", f"--model={model}", "--model-id=edge",
                                "--host=127.0.0.1", f"--port={slm_port}", "--ctx=256"],
                               stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    with router_log.open("wb") as out:
        gateway = subprocess.Popen([sys.executable, *router["command"][1:], *args], stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_ready(slm_port, slm, slm_log, timeout=180)
        _wait_ready(router_port, gateway, router_log, timeout=60)
        body = {"model": "auto", "max_tokens": 8, "messages": [{"role": "user", "content": "hello there"}]}
        request = urllib.request.Request(f"http://127.0.0.1:{router_port}/v1/chat/completions",
                                         data=json.dumps(body).encode(), headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as rsp:
            assert rsp.status == 200 and rsp.headers["x-tiered-tier"] == "edge"
            answer = json.loads(rsp.read())
        assert answer["choices"][0]["message"]["content"] is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{router_port}/metrics", timeout=5) as rsp:
            metrics = rsp.read().decode()
        assert any(line.startswith("tiered_router_requests_total{") and 'tier="edge"' in line
                   for line in metrics.splitlines()), metrics[:2000]  # fmt: skip
    finally:
        for process in (gateway, slm):
            process.terminate()
            process.wait(timeout=40)
