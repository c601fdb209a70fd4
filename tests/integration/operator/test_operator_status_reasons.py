"""A tier whose pods cannot be scheduled says why, in the scheduler's words, in its Ready condition and in
`tiered status` (the real API server, kube-scheduler and KWOK nodes): a missing PersistentVolumeClaim, no node
matching the selector, a taint the pod does not tolerate, insufficient CPU. Fixing the cause makes it Ready.

Image pull failures, crash loops and failing readiness probes need a real kubelet: see
tests/integration/operator/test_operator_status_realnode.py."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_harness import Kube, OperatorFactory, https_tier, wait_for

pytestmark = pytest.mark.integration
TIERED = str(Path(sys.executable).parent / "tiered")


def _tier(name: str, **local: Any) -> dict[str, Any]:
    body = https_tier(name)
    body["spec"]["local"].update(local)
    return body


def _reason(kube: Kube, name: str, want: str, timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = kube.condition("inferencetier", name, "Ready")
        return cond if cond and cond.get("status") == "False" and cond.get("reason") == want else None

    return dict(wait_for(check, timeout, f"inferencetier/{name} Ready=False {want}"))


def _status_text(kube: Kube) -> str:
    result = subprocess.run([TIERED, "status", "-n", kube.namespace, "--kubeconfig", str(kube.cluster.kubeconfig)],
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return result.stdout


@pytest.fixture
def tainted_node(kube: Kube) -> Iterator[str]:
    """A KWOK node of this test's own, labelled for it and tainted dedicated=gpu:NoSchedule."""
    name = f"kwok-taint-{uuid.uuid4().hex[:6]}"
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, "tiered-test": kube.namespace}},
        "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "20"},
                   "capacity": {"cpu": "8", "memory": "32Gi", "pods": "20"}},
    }  # fmt: skip
    kube.run("apply", "-f", "-", input=yaml.safe_dump(node))
    yield name
    kube.run("delete", "node", name, "--wait=false", check=False)


def test_unschedulable_tiers_carry_the_schedulers_reason_and_recover_when_fixed(
    kube: Kube, operators: OperatorFactory, tainted_node: str
) -> None:
    operators.start()
    kube.apply([
        _tier("nopvc", model={"source": "pvc://models/m.gguf", "format": "gguf"}),
        _tier("nosuchnode", nodeSelector={"disktype": "nvme-that-no-node-has"}),
        _tier("untolerated", nodeSelector={"tiered-test": kube.namespace}),
        _tier("toobig", resources={"requests": {"cpu": "5000", "memory": "1Gi"}}),
    ])  # fmt: skip

    nopvc = _reason(kube, "nopvc", "Unschedulable")
    assert 'persistentvolumeclaim "models" not found' in nopvc["message"], nopvc
    selector = _reason(kube, "nosuchnode", "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in selector["message"], selector
    taint = _reason(kube, "untolerated", "Unschedulable")
    assert "had untolerated taint" in taint["message"], taint
    cpu = _reason(kube, "toobig", "Unschedulable")
    assert "Insufficient cpu" in cpu["message"], cpu
    for name in ("nopvc", "nosuchnode", "untolerated", "toobig"):
        model = kube.condition("inferencetier", name, "ModelReady") or {}
        assert (model.get("status"), model.get("reason")) == ("False", "Unschedulable"), (name, model)

    text = _status_text(kube)
    assert "Not ready:" in text
    assert f'InferenceTier {kube.namespace}/nopvc: Unschedulable: 0/1 pods ready; pod nopvc-' in text, text
    assert 'persistentvolumeclaim "models" not found' in text

    # Fixing the cause is enough: the tolerated taint and a smaller request schedule, and the tiers become Ready.
    kube.apply(_tier("untolerated", nodeSelector={"tiered-test": kube.namespace},
                     tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                   "effect": "NoSchedule"}]))  # fmt: skip
    kube.apply(_tier("toobig", resources={"requests": {"cpu": "10m", "memory": "16Mi"}}))
    kube.wait_condition("inferencetier", "untolerated", "Ready", "True", timeout=90)
    kube.wait_condition("inferencetier", "toobig", "Ready", "True", timeout=90)
    assert (kube.get("pod", _pod_of(kube, "untolerated")) or {})["spec"]["nodeName"] == tainted_node


def _pod_of(kube: Kube, tier: str) -> str:
    pods = [p for p in kube.items("pods") if p["metadata"]["labels"].get("tiered.dev/tier") == tier
            and not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"]  # fmt: skip
    assert pods, tier
    return str(pods[0]["metadata"]["name"])
