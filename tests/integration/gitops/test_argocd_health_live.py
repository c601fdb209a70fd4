"""Argo CD health checks against InferenceTier/RoutingPolicy objects read back from the real kube-apiserver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from live_health_objects import as_testdata, health_testdata_files, load_argocd_lua, materialize

from tiered_dev.devcluster import Cluster

lua = load_argocd_lua()
pytestmark = pytest.mark.integration

EXPECTED = {
    case.input_path: case.expected for kind in lua.KINDS for case in lua.load_health_cases(kind)
}


@pytest.mark.parametrize(("kind", "path"), health_testdata_files(), ids=lambda v: v if isinstance(v, str) else v.stem)
def test_health_of_object_read_back_from_the_api_server(
    crds_installed: Cluster, namespace: str, kind: str, path: Path
) -> None:
    source = yaml.safe_load(path.read_text())
    live = materialize(crds_installed.kubectl, namespace, source)

    assert live["metadata"]["generation"] == source["metadata"]["generation"]
    # The testdata file is exactly what the control plane returns (CRD defaults, status schema, pruning).
    assert as_testdata(live) == source
    assert lua.run_health_check(kind, live) == EXPECTED[path]


def _tier(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": name},
        "spec": {
            "backend": "local",
            "local": {"model": {"source": "pvc://models/tiny-q4_k_m.gguf", "quantization": "Q4_K_M"}},
        },
    }


def _status_patch(crds_installed: Cluster, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    crds_installed.kubectl(
        "patch", "inferencetier", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )
    got = crds_installed.kubectl("get", "inferencetier", name, "-n", namespace, "-o", "json")
    return dict(json.loads(got.stdout))


def _condition(type_: str, status: str, reason: str, generation: int) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-11-28T14:00:00Z", "observedGeneration": generation}


def test_one_tier_walks_progressing_healthy_progressing_degraded(crds_installed: Cluster, namespace: str) -> None:
    """The life of one object: created, observed Ready, edited, then stalled, as Argo CD would show it."""
    crds_installed.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(_tier("walk")))
    got = crds_installed.kubectl("get", "inferencetier", "walk", "-n", namespace, "-o", "json")
    assert lua.run_health_check("InferenceTier", json.loads(got.stdout)).status == "Progressing"

    healthy = _status_patch(crds_installed, namespace, "walk", {
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
        "conditions": [_condition("Ready", "True", "Ready", 1)],
    })
    assert lua.run_health_check("InferenceTier", healthy) == lua.HealthStatus("Healthy", "1/1 replicas ready")

    crds_installed.kubectl("patch", "inferencetier", "walk", "-n", namespace, "--type=merge",
                           "-p", json.dumps({"spec": {"replicas": 3}}))
    edited = json.loads(crds_installed.kubectl("get", "inferencetier", "walk", "-n", namespace, "-o", "json").stdout)
    assert edited["metadata"]["generation"] == 2
    assert lua.run_health_check("InferenceTier", edited).status == "Progressing"

    stalled = _status_patch(crds_installed, namespace, "walk", {
        "observedGeneration": 2,
        "conditions": [_condition("Ready", "False", "ModelNotReady", 2),
                       _condition("Stalled", "True", "ModelChecksumMismatch", 2)],
    })
    assert lua.run_health_check("InferenceTier", stalled) == lua.HealthStatus("Degraded", "ModelChecksumMismatch")
