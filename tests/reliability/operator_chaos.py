"""Operator chaos: SIGKILL the real operator at random moments while InferenceTiers are created, edited and deleted,
then check the namespace converges to exactly the desired objects.

Shared by tests/reliability/test_operator_chaos.py (small: runs in CI time) and
bench/reliability/operator_sigkill_chaos.py (the issue's 50 tiers x 20 kills). The operator runs with its own
ServiceAccount identity, standalone, so every restart starts from nothing but what the API server holds: a
level-triggered operator must converge anyway.

Restarting the API server and etcd is operator_restart_chaos.py's job, on a control plane of its own (this one
runs on the shared control plane, which must not be killed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from reliability_helpers import REPO, free_port

MANAGED = "app.kubernetes.io/managed-by=tiered-operator"


def tier(name: str, context_length: int) -> dict[str, Any]:
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
class OperatorRunner:
    """Starts `python -m tiered_operator` for one namespace; kill() is SIGKILL (no cleanup, no goodbye)."""

    cluster: Any
    namespace: str
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "TIERED_RESYNC_SECONDS": "5"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        cmd = [sys.executable, "-m", "tiered_operator", "--namespace", self.namespace, "--kubeconfig",
               str(self.cluster.operator_kubeconfig), "--standalone", "--liveness",
               f"http://127.0.0.1:{free_port()}/healthz"]  # fmt: skip
        with (self.log_dir / f"operator-{self.starts}.log").open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class ChaosResult:
    tiers_desired: int
    kills: int
    operations: int
    converged_s: float | None
    problems: list[str] = field(default_factory=list)
    differences_at_last_restart: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"tiers_desired": self.tiers_desired, "kills": self.kills, "operations": self.operations,
                "converged_after_last_restart_s": self.converged_s, "problems": self.problems,
                "differences_at_last_restart": self.differences_at_last_restart}  # fmt: skip


def _kubectl(cluster: Any, namespace: str) -> Callable[..., str]:
    def run(*args: str, input: str | None = None, check: bool = True) -> str:
        return str(cluster.kubectl(*args, "-n", namespace, input=input, check=check).stdout)

    return run


def check_converged(cluster: Any, namespace: str, desired: dict[str, int]) -> list[str]:
    """Everything that differs from the desired state (empty list: converged)."""
    k = _kubectl(cluster, namespace)
    tiers = {t["metadata"]["name"]: t for t in json.loads(k("get", "inferencetiers", "-o", "json"))["items"]}
    problems = []
    if set(tiers) != set(desired):
        problems.append(f"tiers {sorted(set(tiers) ^ set(desired))} differ from desired")
    children = json.loads(k("get", "deployments,services,configmaps", "-l", MANAGED, "-o", "json"))["items"]
    seen: dict[tuple[str, str], int] = {}
    for child in children:
        kind, name = child["kind"], child["metadata"]["name"]
        owners = [o for o in child["metadata"].get("ownerReferences", []) if o.get("controller")]
        owner = owners[0] if owners else None
        if owner is None or owner["name"] not in tiers or owner["uid"] != tiers[owner["name"]]["metadata"]["uid"]:
            if child["metadata"].get("deletionTimestamp") is None:
                problems.append(f"orphan {kind}/{name} (owner {owner and owner['name']})")
            continue
        seen[(kind, owner["name"])] = seen.get((kind, owner["name"]), 0) + 1
    for name, ctx in desired.items():
        for kind in ("Deployment", "Service", "ConfigMap"):
            count = seen.get((kind, name), 0)
            if count != 1:
                problems.append(f"{kind} of {name}: {count} (want exactly 1)")
        t = tiers.get(name)
        if t is None:
            continue
        if t["metadata"].get("deletionTimestamp"):
            problems.append(f"{name} is being deleted")
        spec_ctx = t["spec"]["local"]["model"]["contextLength"]
        if spec_ctx != ctx:
            problems.append(f"{name}: contextLength {spec_ctx}, want {ctx}")
        status = t.get("status") or {}
        if status.get("observedGeneration") != t["metadata"]["generation"]:
            problems.append(f"{name}: observedGeneration {status.get('observedGeneration')} != generation")
        ready: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
        if ready.get("status") != "True":
            problems.append(f"{name}: Ready={ready.get('status')} ({ready.get('reason')})")
    for name, t in tiers.items():
        if name not in desired and not t["metadata"].get("deletionTimestamp"):
            problems.append(f"{name} should have been deleted")
    return problems


def run_chaos(
    cluster: Any, namespace: str, log_dir: Path, n_tiers: int, kills: int, seed: int = 3, converge_timeout: float = 120
) -> ChaosResult:
    rng = random.Random(seed)
    k = _kubectl(cluster, namespace)
    operator = OperatorRunner(cluster, namespace, log_dir)
    desired: dict[str, int] = {}
    ops = 0
    stop = threading.Event()
    lock = threading.Lock()

    def churn() -> None:
        """Create all tiers, then random edits and deletes until told to stop. A deleted name is not reused: a
        re-apply racing the finalizer of a terminating object is a user error, not what this test is about."""
        nonlocal ops
        names = [f"chaos-{i}" for i in range(n_tiers)]
        k("apply", "-f", "-", input=yaml.safe_dump_all([tier(n, 2048) for n in names]))
        with lock:
            desired.update({n: 2048 for n in names})
            ops += n_tiers
        while not stop.is_set():
            with lock:
                present = sorted(desired)
            name = rng.choice(present)
            if rng.random() < 0.15 and len(present) > n_tiers - n_tiers // 3:
                k("delete", "inferencetier", name, "--wait=false", check=False)
                with lock:
                    desired.pop(name, None)
            else:
                ctx = rng.choice([1024, 2048, 4096, 8192])
                k("apply", "-f", "-", input=yaml.safe_dump(tier(name, ctx)))
                with lock:
                    desired[name] = ctx
            with lock:
                ops += 1
            time.sleep(rng.uniform(0.05, 0.3))

    operator.start()
    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 3.0))  # at random points: during start-up, mid-reconcile, idle
            operator.kill()
            operator.start()
        stop.set()
        worker.join(timeout=30)
        # Deleted tiers a re-apply raced with may still be terminating: wait them out as part of convergence.
        started = time.monotonic()
        problems = check_converged(cluster, namespace, desired)
        initial = len(problems)
        while problems and time.monotonic() - started < converge_timeout:
            time.sleep(1.0)
            problems = check_converged(cluster, namespace, desired)
        converged = time.monotonic() - started if not problems else None
        return ChaosResult(len(desired), kills, ops, converged, problems, initial)
    finally:
        k("delete", "inferencetiers", "--all", "--wait=true", "--timeout=30s", check=False)
        operator.stop()
