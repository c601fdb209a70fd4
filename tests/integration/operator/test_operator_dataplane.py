"""The command lines and config the operator renders start the real data plane: the router sidecar with the
compiled RoutingPolicy, and the SLM server with a pvc:// model (the claim directory stands in for the volume)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import REPO, free_port

from tiered_operator.api import InferenceTier, RoutingPolicy
from tiered_operator.reconcile.deployment import RouterSidecar, build_deployment
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy
from tiered_operator.settings import OperatorSettings, Ports

pytestmark = pytest.mark.integration
SAMPLES = REPO / "manifests" / "samples"


def _sample(name: str) -> dict[str, Any]:
    body = yaml.safe_load((SAMPLES / name).read_text())
    body["metadata"].update(namespace="team-a", uid=f"uid-{body['metadata']['name']}", generation=1)
    return dict(body)


def _container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def _local(args: list[str], replacements: dict[str, str]) -> list[str]:
    out = []
    for arg in args:
        for old, new in replacements.items():
            arg = arg.replace(old, new)
        out.append(arg)
    return out


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


def test_router_sidecar_starts_with_the_rendered_command_and_compiled_policy(tmp_path: Path) -> None:
    tiers = {
        n: InferenceTier.from_k8s(_sample(f))
        for n, f in (("slm-edge", "inferencetier-local-gguf.yaml"), ("gpt-cloud", "inferencetier-cloud.yaml"))
    }
    compiled = compile_policy(
        RoutingPolicy.from_k8s(_sample("routingpolicy-hybrid.yaml")), tiers, NamespacePolicy(), OperatorSettings()
    )
    assert compiled.text is not None
    (tmp_path / "router.json").write_text(compiled.text)
    port = free_port()
    dep = build_deployment(
        tiers["slm-edge"], RouterSidecar(), OperatorSettings(ports=Ports(router=port))
    )
    router = _container(dep, "router")
    assert router["command"][1:] == ["-m", "tiered_router"]
    args = _local(
        router["args"],
        {"/etc/tiered/router/router.json": str(tmp_path / "router.json"), "--host=0.0.0.0": "--host=127.0.0.1"},
    )
    log = tmp_path / "router.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, *router["command"][1:], *args], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_ready(port, process, log, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as rsp:
            ids = {m["id"] for m in json.loads(rsp.read())["data"]}
        assert {"hybrid", "slm-edge", "gpt-cloud"} <= ids
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as rsp:
            assert rsp.status == 200  # what the Service's `metrics` port targets
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_slm_server_starts_with_the_rendered_arguments_and_a_pvc_model(tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "models"
    claim.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "tiered_slm", "make-test-model", str(claim / "tiny.gguf")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    body = _sample("inferencetier-local-gguf.yaml")
    body["spec"]["local"]["model"] = {"source": "pvc://models/tiny.gguf", "format": "gguf", "contextLength": 256}
    body["spec"]["local"]["speculative"] = {"mode": "promptLookup", "tokens": 4, "maxNgramSize": 2}
    port = free_port()
    dep = build_deployment(
        InferenceTier.from_k8s(body), RouterSidecar(), OperatorSettings(ports=Ports(slm=port))
    )
    model = _container(dep, "model")
    args = _local(
        model["args"],
        {
            "--pvc-root=/models": f"--pvc-root={tmp_path / 'pvc'}",
            "--cache-dir=/cache": f"--cache-dir={tmp_path / 'cache'}",
            "--host=0.0.0.0": "--host=127.0.0.1",
        },
    )
    log = tmp_path / "slm.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "tiered_slm", *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, process, log, timeout=120)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as rsp:
            ids = {m["id"] for m in json.loads(rsp.read())["data"]}
        assert "slm-edge" in ids  # --model-id=<tier>: the name the router config sends upstream
    finally:
        process.terminate()
        process.wait(timeout=40)
