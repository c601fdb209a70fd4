"""Harness that runs the real operator (`python -m tiered_operator`) against the local control plane, with the
ServiceAccount identity from manifests/rbac (operator.kubeconfig), so every test also proves the RBAC suffices.

Kube: admin-side kubectl helpers for assertions; OperatorFactory: starts operator processes for one namespace,
each logging to a file in which its write requests (one log line each) can be counted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
WRITE_LINE = re.compile(r"tiered_operator\.kube: write (\S+) (\S+) (\S+)")
RESYNC_SECONDS = "5"
PEERING_LIFETIME = "8"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll `check` until it returns a truthy value; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except subprocess.CalledProcessError as exc:
            last = exc.stderr
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def https_tier(name: str, context_length: int = 2048) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": name},
        "spec": {
            "backend": "local",
            "local": {
                "runtime": "llamacpp",
                "model": {
                    "source": "https://models.example.com/tiny-q8_0.gguf",
                    "sha256": "0" * 64,
                    "format": "gguf",
                    "quantization": "Q8_0",
                    "contextLength": context_length,
                },
            },
        },
    }


@dataclass
class Kube:
    """Admin-side helpers for assertions (the operator itself never uses these)."""

    cluster: Any
    namespace: str

    def run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def apply(self, docs: Any) -> None:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs if isinstance(docs, list) else [docs])
        self.run("apply", "-n", self.namespace, "-f", "-", input=text)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-n", self.namespace, "-o", "json", "--ignore-not-found", check=True)
        return json.loads(result.stdout) if result.stdout.strip() else None

    def items(self, kind: str) -> list[dict[str, Any]]:
        result = self.run("get", kind, "-n", self.namespace, "-o", "json")
        return list(json.loads(result.stdout)["items"])

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any] | None:
        obj = self.get(kind, name) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return None

    def wait_condition(self, kind: str, name: str, type_: str, status: str, timeout: float = 30) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            cond = self.condition(kind, name, type_)
            return cond if cond and cond.get("status") == status else None

        return dict(wait_for(check, timeout, f"{kind}/{name} {type_}={status}"))

    def resource_versions(self, kinds: str) -> dict[str, str]:
        """kind/name → resourceVersion for every object of `kinds` (comma-separated) in the namespace."""
        result = self.run("get", kinds, "-n", self.namespace, "-o", "json")
        return {
            f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
            for o in json.loads(result.stdout)["items"]
        }


@dataclass
class OperatorProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    priority: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def writes(self) -> list[tuple[str, str, str]]:
        return [m.groups() for m in WRITE_LINE.finditer(self.log())]  # type: ignore[misc]

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as rsp:
                return bool(rsp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to the peers, so the follower must notice the expired keep-alive."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class OperatorFactory:
    cluster: Any
    namespace: str
    tmp_path: Path
    started: list[OperatorProcess] = field(default_factory=list)

    def start(self, priority: int = 100, wait: bool = True, extra_env: dict[str, str] | None = None) -> OperatorProcess:
        port = free_port()
        log_path = self.tmp_path / f"operator-{len(self.started)}-p{priority}.log"
        env = {
            **os.environ,
            "TIERED_RESYNC_SECONDS": RESYNC_SECONDS,
            "TIERED_PEERING_LIFETIME": PEERING_LIFETIME,
            "POD_ID": f"test-operator-{priority}",
            **(extra_env or {}),
        }
        env.pop("KUBERNETES_SERVICE_HOST", None)
        cmd = [
            sys.executable,
            "-m",
            "tiered_operator",
            "--namespace",
            self.namespace,
            "--kubeconfig",
            str(self.cluster.operator_kubeconfig),
            "--peering",
            "tiered-operator",
            "--priority",
            str(priority),
            "--liveness",
            f"http://127.0.0.1:{port}/healthz",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        op = OperatorProcess(process, log_path, port, priority)
        self.started.append(op)
        if wait:
            wait_for(lambda: op.healthy() or process.poll() is not None, 60, "operator health endpoint")
            assert process.poll() is None, f"operator exited:\n{op.log()[-3000:]}"
        return op


def install_crds(cluster: Any) -> Any:
    """Our CRDs (the kustomization in crds/) and kopf's peering CRDs, applied and Established."""
    crds = REPO / "crds"
    peering = REPO / "manifests" / "operator" / "peering-crds.yaml"
    apply = ("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests")
    cluster.kubectl(*apply, "-k", str(crds))
    cluster.kubectl(*apply, "-f", str(peering))
    names = [p for p in sorted(crds.glob("*.yaml")) if p.name != "kustomization.yaml"]
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(peering), *(f"-f={p}" for p in names)
    )
    return cluster
