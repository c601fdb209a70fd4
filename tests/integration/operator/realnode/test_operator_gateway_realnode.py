"""Gateway mode on a real node (containerd, kubelet, kube-proxy, CoreDNS, kube-router: `tiered dev up --node
real`): the gateway's router pods and the tier's model server run from the project's images; a client pod in the
namespace sends an OpenAI request to the gateway's Service, the gateway sends it to the tier's Service, a real
model answers through the NetworkPolicies the operator wrote, and the gateway counts it in its metrics.

This directory's conftest gives the module a control plane with a real node."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import Kube, OperatorFactory, wait_for

pytestmark = pytest.mark.integration
ROUTER_IMAGE = "ghcr.io/tiered-dev/tiered-router:0.1.0"

CLIENT = """
import json, time, urllib.error, urllib.request
url = "{url}"
body = json.dumps({{"model": "auto", "max_tokens": 8, "messages": [{{"role": "user", "content": "hello there"}}]}})
req = urllib.request.Request(url + "/v1/chat/completions", data=body.encode(),
                             headers={{"content-type": "application/json"}})
# Ready pods are not yet a programmed Service: the name may not resolve and kube-proxy's rules may lag a few
# seconds under load, so connection-level failures are retried for a bounded time (an HTTP error is not).
deadline = time.monotonic() + 60
while True:
    try:
        rsp = urllib.request.urlopen(req, timeout=120)
        break
    except urllib.error.HTTPError:
        raise
    except OSError as exc:
        if time.monotonic() > deadline:
            raise
        print("retrying after", repr(exc), flush=True)
        time.sleep(1)
with rsp:
    out = {{"status": rsp.status, "tier": rsp.headers.get("x-tiered-tier"), "body": json.loads(rsp.read())}}
out["metrics"] = []
for pod_url in {metrics}:
    with urllib.request.urlopen(pod_url, timeout=30) as rsp:
        lines = rsp.read().decode().splitlines()
    out["metrics"] += [line for line in lines if line.startswith("tiered_router_requests_total{{")]
open("/dev/termination-log", "w").write(json.dumps(out)[:4000])
"""


def _model_volume(kube: Kube, tmp_path: Path) -> None:
    """A tiny real GGUF model on a hostPath PersistentVolume of the real node (the node is this machine)."""
    models = tmp_path / "models"
    models.mkdir()
    subprocess.run([sys.executable, "-m", "tiered_slm", "make-test-model", str(models / "tiny.gguf")],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    for path in (tmp_path, models):
        path.chmod(0o755)
    (models / "tiny.gguf").chmod(0o644)
    pv = f"models-{kube.namespace}"[:63]
    kube.run("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(models), "type": "Directory"},
                 "claimRef": {"namespace": kube.namespace, "name": "models"}},
    }))  # fmt: skip
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
                "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                         "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip


def _client_pod(kube: Kube, url: str, metrics: list[str]) -> dict[str, Any]:
    name = f"client-{uuid.uuid4().hex[:6]}"
    kube.apply({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "containers": [{"name": "client", "image": ROUTER_IMAGE, "imagePullPolicy": "IfNotPresent",
                                 "terminationMessagePolicy": "FallbackToLogsOnError",  # a traceback shows below
                                 "command": ["python", "-c", CLIENT.format(url=url, metrics=metrics)]}]},
    })  # fmt: skip

    def finished() -> dict[str, Any] | None:
        pod = kube.get("pod", name) or {}
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated")
            if terminated:
                return dict(terminated)
        return None

    terminated = wait_for(finished, 240, f"client pod {name} to finish", interval=1)
    assert terminated["exitCode"] == 0, f"client exited {terminated['exitCode']}:\n{terminated.get('message')}"
    return dict(json.loads(terminated["message"]))


def test_a_request_reaches_a_real_model_through_the_gateway_on_a_real_node(
    kube: Kube, operators: OperatorFactory, real_node: str, tmp_path: Path
) -> None:
    _model_volume(kube, tmp_path)
    operators.start()
    tier = {
        "apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier", "metadata": {"name": "edge"},
        "spec": {"backend": "local", "local": {
            "model": {"source": "pvc://models/tiny.gguf", "format": "gguf", "contextLength": 256},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}},
    }  # fmt: skip
    policy = {
        "apiVersion": "tiered.dev/v1alpha1", "kind": "RoutingPolicy", "metadata": {"name": "front"},
        "spec": {"tiers": ["edge"], "defaultTier": "edge",
                 "routes": [{"name": "chat", "tier": "edge", "keywords": ["hello"]}],
                 "router": {"mode": "gateway", "replicas": 2}},
    }  # fmt: skip
    kube.apply([tier, policy])
    kube.wait_condition("inferencetier", "edge", "Ready", "True", timeout=300)
    ready = kube.wait_condition("routingpolicy", "front", "Ready", "True", timeout=300)
    assert ready["reason"] == "GatewayReady", ready
    pods = [p for p in kube.items("pods") if p["metadata"]["labels"].get("tiered.dev/policy") == "front"]
    assert len(pods) == 2 and all(p["spec"]["nodeName"] == real_node for p in pods), pods

    endpoint = (kube.get("routingpolicy", "front") or {})["status"]["endpoint"]
    # every gateway pod's own /metrics (the Service would pick one of the two)
    metrics = [f"http://{p['status']['podIP']}:8000/metrics" for p in pods]
    out = _client_pod(kube, endpoint.removesuffix("/v1"), metrics)
    print(f"\nthrough {endpoint}: HTTP {out['status']}, x-tiered-tier {out['tier']}, "
          f"answer {out['body']['choices'][0]['message']['content']!r}; metrics {out['metrics']}")  # fmt: skip
    assert out["status"] == 200 and out["tier"] == "edge"
    assert out["body"]["choices"][0]["message"]["content"] is not None
    served = sum(float(line.rsplit(" ", 1)[1]) for line in out["metrics"]
                 if 'tier="edge"' in line and 'outcome="success"' in line)  # fmt: skip
    assert served == 1, out["metrics"]  # the gateway pod that served it counted it, the other counted nothing
