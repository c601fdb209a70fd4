"""On a real node (containerd, kubelet: `tiered dev up --node real`), a tier whose pods cannot run says why in its
Ready condition, in the kubelet's own words: an image that cannot be pulled, a model server that keeps exiting
(crash loop, with its exit code and termination message), a readiness probe that keeps failing.

These causes need a real kubelet (KWOK fakes a pod's containers as running): this directory's conftest gives the
module a control plane with a real node. The unschedulable causes are in ../test_operator_status_reasons.py
(KWOK)."""

from __future__ import annotations

from typing import Any

import pytest
from operator_harness import Kube, OperatorFactory, https_tier, wait_for

from tiered_dev.devcluster import node as realnode

pytestmark = pytest.mark.integration
UNREACHABLE = realnode.OUTSIDE_ADDRESSES[1]
"""An address outside the cluster that no NetworkPolicy of the tier opens: connections to it hang."""


def _tier(name: str, **local: Any) -> dict[str, Any]:
    body = https_tier(name)
    body["spec"]["local"].update(local)
    return body


def _reason(kube: Kube, name: str, reasons: set[str], timeout: float) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = kube.condition("inferencetier", name, "Ready")
        return cond if cond and cond.get("status") == "False" and cond.get("reason") in reasons else None

    return dict(wait_for(check, timeout, f"inferencetier/{name} Ready=False {sorted(reasons)}", interval=1))


def test_image_pull_failure_crash_loop_and_failing_readiness_probe_say_why(
    kube: Kube, operators: OperatorFactory, real_node: str
) -> None:
    operators.start()
    kube.apply([
        # an image no registry here has (nothing outside the cluster is reachable)
        _tier("noimage", image="localhost/tiered/no-such-model-server:0"),
        # a model source whose host does not resolve: the server refuses to start, exits, and is restarted
        _tier("crashes", model={"source": "https://no-such-host.invalid/m.gguf", "sha256": "0" * 64,
                                "format": "gguf"}),
        # a model source the server waits for (the address is outside what the tier may reach): it listens and
        # answers /healthz, but /readyz stays 503 while it waits, so the readiness probe keeps failing
        _tier("notready", model={"source": f"https://{UNREACHABLE}/m.gguf", "sha256": "0" * 64, "format": "gguf"}),
    ])  # fmt: skip

    pull = _reason(kube, "noimage", {"ErrImagePull", "ImagePullBackOff"}, timeout=120)
    assert "localhost/tiered/no-such-model-server:0" in pull["message"], pull
    assert "container model" in pull["message"]
    pull = _reason(kube, "noimage", {"ImagePullBackOff"}, timeout=120)
    assert (kube.condition("inferencetier", "noimage", "Stalled") or {}).get("status") == "True"

    probe = _reason(kube, "notready", {"ReadinessProbeFailed"}, timeout=120)
    assert "Readiness probe failed" in probe["message"] and "container model" in probe["message"], probe

    crash = _reason(kube, "crashes", {"CrashLoopBackOff"}, timeout=240)
    assert "keeps exiting, last exit code" in crash["message"], crash
    assert "no-such-host.invalid" in crash["message"], crash  # the server's termination message, passed on
    model = kube.condition("inferencetier", "crashes", "ModelReady") or {}
    assert (model.get("status"), model.get("reason")) == ("False", "CrashLoopBackOff")
    for name, cond in (("noimage", pull), ("notready", probe), ("crashes", crash)):
        print(f"\n{name}: Ready=False {cond['reason']}: {cond['message']}")
    for name in ("noimage", "crashes", "notready"):
        pods = [p for p in kube.items("pods") if p["metadata"]["labels"].get("tiered.dev/tier") == name]
        assert pods and all(p["spec"].get("nodeName") == real_node for p in pods), name
