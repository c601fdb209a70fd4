"""A cloud tier's API key never shows up in logs, status, events or any object but its own Secret.

The real operator (with its own ServiceAccount identity, verbose logging) reconciles a namespace whose cloud tier's
Secret holds a unique canary; the real router runs from the ConfigMap the operator wrote, with the key file holding
that canary (as the Secret volume would). Then we drive what usually makes a secret leak: successful and failing
cloud calls, a rotated key, a broken Secret (key missing), spec edits that cause reconciles and events. The canary
(raw and base64) must appear in none of: the operator log, the router log, the router's /metrics, any answer the
client got, any object's status, any Event, any other object in the namespace. Control: the cloud stand-in did
receive `Authorization: Bearer <canary>`, so the key was really in use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from reliability_helpers import (
    ERROR,
    OK,
    REPO,
    RESET,
    RouterProcess,
    Upstream,
    free_port,
    metric_value,
    write_config,
)

from tiered_dev.demo.dataplane import local_router_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def spellings(canary: str) -> list[str]:
    """The canary as it could appear: raw, base64 (Secret data), and base64 of 'Bearer canary'."""
    return [canary, base64.b64encode(canary.encode()).decode(), base64.b64encode(f"Bearer {canary}".encode()).decode()]


def manifests(cloud_url: str) -> list[dict[str, Any]]:
    local = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": "slm"},
        "spec": {
            "backend": "local",
            "local": {
                "runtime": "llamacpp",
                "model": {
                    "source": "https://models.example.com/tiny-q8_0.gguf",
                    "sha256": "0" * 64,
                    "format": "gguf",
                    "quantization": "Q8_0",
                    "contextLength": 2048,
                },
            },
        },
    }
    cloud = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": "gpt"},
        "spec": {
            "backend": "cloud",
            "cloud": {
                "provider": "openai-compatible",
                "baseURL": cloud_url,
                "model": "frontier-1",
                "apiKeySecretRef": {"name": "cloud-key", "key": "api-key"},
            },
        },
    }
    policy = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "hybrid"},
        "spec": {
            "tiers": ["slm", "gpt"],
            "defaultTier": "gpt",
            "routes": [{"name": "smalltalk", "tier": "slm", "keywords": ["hello"], "examples": ["hi there"]}],
            "fallback": {"retries": 1},
        },
    }
    return [local, cloud, policy]  # fmt: skip


class Namespace:
    def __init__(self, cluster: Any, name: str) -> None:
        self.cluster, self.name = cluster, name

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return str(self.cluster.kubectl(*args, "-n", self.name, input=input, check=check).stdout)

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else {}

    def condition(self, kind: str, name: str, type_: str) -> dict[str, Any]:
        for cond in (self.get(kind, name).get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return {}

    def secret(self, data: dict[str, str]) -> None:
        doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud-key"}, "type": "Opaque",
               "stringData": data}  # fmt: skip
        self.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-",
                     input=json.dumps(doc))  # fmt: skip

    def everything_but_secrets(self) -> str:
        kinds = "inferencetiers,routingpolicies,configmaps,deployments,services,networkpolicies,events"
        return self.kubectl("get", kinds, "-o", "json") + self.kubectl("get", "events.events.k8s.io", "-o", "json")


async def drive_router(router: RouterProcess, cloud: Upstream, loop_modes: list[str]) -> list[str]:
    """Requests through the router while the cloud stand-in answers, fails and resets; returns what clients saw."""
    seen: list[str] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for i, mode in enumerate(loop_modes):
            cloud.mode = mode
            for content in ("explain the contract", "hello", f"please review clause {i}"):
                body = {"model": "auto", "messages": [{"role": "user", "content": content}], "stream": i % 2 == 1}
                async with session.post(router.url + "/v1/chat/completions", json=body) as rsp:
                    seen.append(f"{rsp.status} {dict(rsp.headers)} {await rsp.text()}")
        async with session.get(router.url + "/v1/models") as rsp:
            seen.append(await rsp.text())
    cloud.mode = OK
    return seen


async def test_api_key_canary_never_appears_in_logs_status_or_events(
    crds_installed: Any, namespace: str, tmp_path: Path
) -> None:
    cluster = crds_installed
    ns = Namespace(cluster, namespace)
    canary, rotated = f"sk-canary-{uuid.uuid4().hex}", f"sk-rotated-{uuid.uuid4().hex}"
    slm, cloud = Upstream("slm"), Upstream("cloud")
    await slm.start()
    await cloud.start()
    ns.secret({"api-key": canary})

    health = free_port()
    op_log = tmp_path / "operator.log"
    env = {**os.environ, "TIERED_RESYNC_SECONDS": "3"}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    cmd = [sys.executable, "-m", "tiered_operator", "--namespace", namespace, "--kubeconfig",
           str(cluster.operator_kubeconfig), "--standalone", "--verbose", "--liveness",
           f"http://127.0.0.1:{health}/healthz"]  # fmt: skip
    with op_log.open("wb") as log:
        operator = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    router: RouterProcess | None = None
    try:
        await asyncio.to_thread(ns.apply, manifests(cloud.base_url))
        await asyncio.to_thread(wait_for, lambda: ns.condition("inferencetier", "gpt", "Ready").get("status") == "True",
                                60, "cloud tier Ready")  # fmt: skip
        cm = await asyncio.to_thread(
            wait_for, lambda: ns.get("configmap", "slm-router").get("data"), 60, "slm router ConfigMap"
        )

        # The data plane, from what the operator wrote: the key file holds the Secret's value, as a volume would.
        key_file = tmp_path / "api-key"
        key_file.write_text(canary)
        text = local_router_config(cm["router.json"], {"slm": slm.base_url, "gpt": cloud.base_url},
                                   {"gpt": str(key_file)}).value  # fmt: skip
        write_config(tmp_path / "router.json", text)
        router = RouterProcess(tmp_path / "router.json", tmp_path / "router.log", log_level="DEBUG")
        await asyncio.to_thread(router.start)
        seen = await drive_router(router, cloud, [OK, ERROR, RESET, OK])

        # Rotate the key: Secret and mounted file (the router reloads on the file's change).
        reloads = metric_value(router.metrics(), "tiered_router_config_reloads_total", result="success")
        ns.secret({"api-key": rotated})
        key_file.write_text(rotated)
        await asyncio.to_thread(
            wait_for,
            lambda: metric_value(router.metrics(), "tiered_router_config_reloads_total", result="success") > reloads,
            10,
            "key reload",
        )
        seen += await drive_router(router, cloud, [OK, ERROR])
        # The ERROR/RESET rounds may have opened the cloud tier's breaker (5 failures, open 30 s): until it lets a
        # probe through, nothing reaches the cloud. Keep asking (cloud answering OK) until the rotated key arrives.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and f"Bearer {rotated}" not in {
            r.headers.get("authorization") for r in cloud.received
        }:
            seen += await drive_router(router, cloud, [OK])
            await asyncio.sleep(1)
        # A missing key file: the router must say which file, not what the key was.
        key_file.unlink()
        await asyncio.sleep(0.5)
        seen += await drive_router(router, cloud, [OK])
        key_file.write_text(rotated)

        # Break the Secret (key missing), edit the tier (reconcile + events), then repair.
        await asyncio.to_thread(ns.kubectl, "delete", "secret", "cloud-key")
        ns.secret({"other-key": canary})
        await asyncio.to_thread(
            wait_for, lambda: "has no key" in ns.condition("inferencetier", "gpt", "Ready").get("message", ""), 30,
            "SecretInvalid naming the missing key",
        )  # fmt: skip
        ns.kubectl("patch", "inferencetier", "gpt", "--type=merge", "-p", '{"spec":{"cloud":{"model":"frontier-2"}}}')
        await asyncio.to_thread(ns.kubectl, "delete", "secret", "cloud-key")
        ns.secret({"api-key": canary})
        await asyncio.to_thread(wait_for, lambda: ns.condition("inferencetier", "gpt", "Ready").get("status") == "True",
                                30, "cloud tier Ready again")  # fmt: skip
        await asyncio.sleep(4)  # one more resync period with the operator reading the Secret
        metrics = router.metrics()
        router_log = router.log()
    finally:
        if router is not None:
            await asyncio.to_thread(router.stop)
        operator.terminate()
        try:
            operator.wait(timeout=15)
        except subprocess.TimeoutExpired:
            operator.kill()
        await slm.stop()
        await cloud.stop()
        ns.kubectl("delete", "inferencetiers,routingpolicies", "--all", "--wait=false", check=False)
        for kind in ("inferencetiers", "routingpolicies"):
            for name in ("slm", "gpt", "hybrid"):
                ns.kubectl("patch", kind, name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)

    auth = {r.headers.get("authorization") for r in cloud.received}
    assert f"Bearer {canary}" in auth and f"Bearer {rotated}" in auth  # the key was really used, then rotated
    operator_log = op_log.read_text(errors="replace")
    assert "write apply" in operator_log or "write " in operator_log  # the log is the operator's, and verbose
    objects = ns.everything_but_secrets()
    assert "has no key" in objects or "SecretInvalid" in objects  # the broken Secret was reported somewhere
    places = {"operator log": operator_log, "router log": router_log, "router /metrics": metrics,
              "client responses": "\n".join(seen), "namespace objects, status and events": objects}  # fmt: skip
    found = [(where, s[:12] + "…") for where, text in places.items() for c in (canary, rotated)
             for s in spellings(c) if s in text]  # fmt: skip
    assert found == [], f"secret value found in: {found}"
    assert "api-key" in router_log  # the missing key file was reported by path
