"""Helpers of the real-node end-to-end tests: one real node (and `make demo` on it) per test session, probes run
inside the tier pods with `kubectl exec`, listeners in the node's outside namespace, objects for extra tiers.

Everything here acts on real things: the pods are containers on the real node, the packets cross its bridge and
kube-router's iptables rules, the stand-ins listen in a network namespace of their own.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tiered_dev import procs
from tiered_dev.demo import manifests
from tiered_dev.devcluster import Cluster, hoststate, node

REPO = Path(__file__).resolve().parents[2]
DEMO_NS = manifests.NAMESPACE
STANDIN = f"{node.OUTSIDE_ADDRESSES[0]}:18443"
"""The demo's cloud tier: the address and port manifests/demo/inferencetier-cloud.yaml declares."""
SECOND_ADDRESS = node.OUTSIDE_ADDRESSES[1]
MODEL_SOURCE = "pvc://models/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass
class RealNodeSession:
    """The session's real node: where its state lives, the host as it was before, and its cluster once up."""

    state: Path
    before: hoststate.Snapshot
    cluster: Cluster | None = None
    demo_output: str = ""
    demo_seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def kube(self) -> Cluster:
        assert self.cluster is not None, "the real node is not up"
        return self.cluster

    @property
    def model_dir(self) -> Path:
        """The demo's filled model volume (`<state>/demo/pvc/models`): extra tiers mount it too."""
        return self.state / "demo" / "pvc" / "models"


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def get_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def apply(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-e2e", "-f", "-",
                    input=yaml.safe_dump_all(objects))


def ready_pods(cluster: Cluster, namespace: str, tier: str) -> list[dict[str, Any]]:
    """The tier's pods that are Running, Ready in every container and not being deleted, by name."""
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"tiered.dev/tier={tier}").get("items", [])
    out = []
    for pod in pods:
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if (pod["status"].get("phase") == "Running" and statuses and all(s.get("ready") for s in statuses)
                and not pod["metadata"].get("deletionTimestamp")):
            out.append(pod)
    return sorted(out, key=lambda p: p["metadata"]["name"])


def exec_python(cluster: Cluster, namespace: str, pod: str, script: str, *args: str, container: str = "router",
                timeout: float = 60) -> str:
    """Run `script` with the router image's Python inside the pod's container (its network namespace)."""
    result = cluster.kubectl("exec", "-n", namespace, pod, "-c", container, "--", "python", "-c", script, *args,
                             check=False, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"kubectl exec in {namespace}/{pod}: {result.stderr or result.stdout}")
    return result.stdout.strip()


TCP_PROBE = """
import json, socket, sys, time
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(3)
    started = time.monotonic()
    try:
        sock.connect((host, int(port)))
        out[target] = "open"
    except OSError as exc:
        out[target] = type(exc).__name__
    finally:
        sock.close()
print(json.dumps(out))
"""


def tcp_from_pod(cluster: Cluster, namespace: str, pod: str, *targets: str) -> dict[str, str]:
    """`host:port` → "open", or the error a TCP connect from inside the pod got (3 s timeout)."""
    return dict(json.loads(exec_python(cluster, namespace, pod, TCP_PROBE, *targets)))


DNS_PROBE = """
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except OSError as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


def dns_from_pod(cluster: Cluster, namespace: str, pod: str, *names: str) -> dict[str, Any]:
    return dict(json.loads(exec_python(cluster, namespace, pod, DNS_PROBE, *names)))


HTTP_PROBE = """
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as resp:
        print(resp.status)
except Exception as exc:
    print(type(exc).__name__)
"""


def http_from_pod(cluster: Cluster, namespace: str, pod: str, url: str) -> str:
    return exec_python(cluster, namespace, pod, HTTP_PROBE, url)


@contextlib.contextmanager
def outside_listeners(*targets: str) -> Iterator[None]:
    """TCP listeners in the node's outside namespace (address:port each), so a refused packet means a policy and
    not an empty port; checked from the host (no policy there) before use."""
    script = ("import socket, sys, time\nsocks = []\nfor t in sys.argv[1:]:\n    h, p = t.rsplit(':', 1)\n"
              "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
              "    s.bind((h, int(p))); s.listen(64); socks.append(s)\nwhile True:\n    time.sleep(3600)\n")
    proc = subprocess.Popen(node.outside_command([sys.executable, "-c", script, *targets]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def all_open() -> bool:
            for target in targets:
                host, port = target.rsplit(":", 1)
                try:
                    with contextlib.closing(__import__("socket").create_connection((host, int(port)), timeout=1)):
                        pass
                except OSError:
                    return False
            return True

        wait_for(f"listeners {targets} reachable from the host", all_open, 20)
        yield
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if procs.alive(proc.pid):
            proc.kill()


def namespace(name: str, residency: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"tiered.dev/residency": residency}}}


def model_volume(ns: str, host_dir: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume on the demo's filled model directory, bound to claim `models` in `ns`."""
    pv = f"e2e-models-{ns}"
    return [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                  "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                  "claimRef": {"namespace": ns, "name": "models"},
                  "hostPath": {"path": str(host_dir), "type": "Directory"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models", "namespace": ns},
         "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "1Gi"}}}},
    ]


def local_tier(ns: str, name: str, *, source: str = MODEL_SOURCE, slo_ms: int = 60000, min_replicas: int = 1,
               max_replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier", "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backend": "local",
            "local": {"runtime": "llamacpp", "model": {"source": source, "sha256": MODEL_SHA256, "format": "gguf",
                                                        "quantization": "Q4_1", "contextLength": 512}},
            "replicas": min_replicas,
            "autoscaling": {"minReplicas": min_replicas, "maxReplicas": max_replicas,
                            "evaluationIntervalSeconds": 5, "scaleDownStabilizationSeconds": 600, "tolerance": 10},
            "pricing": {"inputUSDPerMillion": "0.02", "outputUSDPerMillion": "0.06"},
            "slo": {"latencyP95Ms": slo_ms, "metric": "e2e", "window": "30s"},
        },
    }


def cloud_tier(ns: str, name: str, address: str) -> list[dict[str, Any]]:
    host, port = address.rsplit(":", 1)
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-key", "namespace": ns},
         "stringData": {"api-key": "demo-standin-key-not-a-real-secret"}},
        {"apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier", "metadata": {"name": name, "namespace": ns},
         "spec": {"backend": "cloud",
                  "cloud": {"provider": "openai-compatible", "baseURL": f"http://{address}/v1",
                            "model": "standin-frontier", "region": "eu-west-1",
                            "apiKeySecretRef": {"name": f"{name}-key", "key": "api-key"},
                            "egress": {"cidrs": [f"{host}/32"], "ports": [int(port)]}},
                  "pricing": {"inputUSDPerMillion": "2.50", "outputUSDPerMillion": "10.00"}}},
    ]


def policy(ns: str, name: str, tiers: list[str], default: str) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1", "kind": "RoutingPolicy", "metadata": {"name": name, "namespace": ns},
        "spec": {"tiers": tiers, "defaultTier": default,
                 "routes": [{"name": "chat", "tier": tiers[0], "examples": ["hello there", "how are you today"]}]},
    }


def service_url(cluster: Cluster, ns: str, tier: str, port: int = 8000) -> str:
    ip = get_json(cluster, "service", tier, "-n", ns).get("spec", {}).get("clusterIP")
    assert ip, f"Service {ns}/{tier} has no cluster IP"
    return f"http://{ip}:{port}"


def chat(url: str, text: str, max_tokens: int = 8, timeout: float = 120) -> tuple[int, str]:
    """One chat completion through a router; (HTTP status or 0 on a connection error, the tier that answered)."""
    body = json.dumps({"model": "auto", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": text}]}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.headers.get("x-tiered-tier", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"


@dataclass
class LoadLoop:
    """Requests one after another (`workers` at a time) until stopped; every outcome kept."""

    url: str
    workers: int = 2
    outcomes: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self, index: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            status, detail = chat(self.url, f"say something short about the number {index * 1000 + n}")
            self.outcomes.append((time.time(), status, detail))

    def __enter__(self) -> LoadLoop:
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(180)

    def failures(self) -> list[tuple[float, int, str]]:
        return [o for o in self.outcomes if o[1] != 200]


def slm_requests_served(pod_ip: str) -> float:
    """Chat requests the SLM server in that pod answered (its own counter, read from the host)."""
    with urllib.request.urlopen(f"http://{pod_ip}:8080/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("tiered_slm_requests_total{") and 'status="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
