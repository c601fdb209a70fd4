"""The operator against the real API server (with controller-manager, scheduler and KWOK), running under the
ServiceAccount from manifests/rbac: convergence, status, drift repair, rollouts, steady-state silence, cascade."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest
import yaml
from operator_harness import REPO, Kube, OperatorFactory, https_tier, wait_for

from tiered_router.config import load_config

pytestmark = pytest.mark.integration

STEADY_SECONDS = float(os.environ.get("TIERED_STEADY_SECONDS", "60"))
WATCHED_KINDS = "inferencetiers,routingpolicies,deployments,replicasets,services,configmaps,networkpolicies,pods,events"


def _owner_uid(obj: dict[str, Any]) -> str:
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref["controller"] is True and ref["blockOwnerDeletion"] is True
    return str(ref["uid"])


def _models_pvc(kube: Kube) -> None:
    """A statically bound PV/PVC named `models`, so the sample's pvc:// source schedules."""
    pv = f"models-{kube.namespace}"[:63]
    kube.run(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": pv},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": "",
                    "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": "/tmp/tiered-models"},
                    "claimRef": {"namespace": kube.namespace, "name": "models"},
                },
            }
        ),
    )
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "storageClassName": "",
                "volumeName": pv,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


def test_samples_converge_stay_silent_at_steady_state_and_cascade_on_delete(
    kube: Kube, operators: OperatorFactory
) -> None:
    kube.run("label", "namespace", kube.namespace, "pod-security.kubernetes.io/enforce=restricted")
    _models_pvc(kube)
    op = operators.start()
    kube.run("apply", "-k", str(REPO / "manifests" / "samples"), "-n", kube.namespace)

    kube.wait_condition("inferencetier", "slm-edge", "Ready", "True", timeout=60)
    kube.wait_condition("inferencetier", "gpt-cloud", "Ready", "True", timeout=30)
    ready_policy = kube.wait_condition("routingpolicy", "hybrid", "Ready", "True", timeout=30)
    assert ready_policy["reason"] == "ConfigApplied"

    table = kube.run("get", "itier", "-n", kube.namespace).stdout
    row = next(line for line in table.splitlines() if line.startswith("slm-edge"))
    assert "1/1" in row.split(), table

    tier = kube.get("inferencetier", "slm-edge")
    assert tier is not None
    uid = tier["metadata"]["uid"]
    dep, svc, cm = (
        kube.get(k, n)
        for k, n in (("deployment", "slm-edge"), ("service", "slm-edge"), ("configmap", "slm-edge-router"))
    )
    assert dep and svc and cm
    assert {_owner_uid(dep), _owner_uid(svc), _owner_uid(cm)} == {uid}
    assert dep["status"]["readyReplicas"] == 1  # admitted under enforce=restricted, scheduled, readied by KWOK
    status = tier["status"]
    assert status["readyReplicas"] == 1 and status["observedGeneration"] == tier["metadata"]["generation"]
    assert {c["type"] for c in status["conditions"]} >= {
        "Ready",
        "Available",
        "ModelReady",
        "Stalled",
        "ResidencyCompliant",
    }
    for cond in status["conditions"]:
        assert cond["reason"] and cond["lastTransitionTime"]

    # The sidecar reads the policy's config; the policy reports the hash of what was written.
    router_config = load_config(cm["data"]["router.json"])
    assert router_config.policy == "hybrid" and [t.name for t in router_config.tiers] == ["slm-edge", "gpt-cloud"]
    policy_cm = kube.get("configmap", "hybrid-policy")
    assert policy_cm is not None and policy_cm["data"]["router.json"] == cm["data"]["router.json"]
    policy = kube.get("routingpolicy", "hybrid")
    assert policy is not None
    expected_hash = hashlib.sha256(
        json.dumps(policy_cm["data"]["router.json"], separators=(",", ":")).encode()
    ).hexdigest()[:16]
    assert policy["status"]["configHash"] == expected_hash
    assert "annotations" not in dep["spec"]["template"]["metadata"]  # nothing of the router config on the pods

    # Creation and readiness are in status; an Event is a write, kept for what needs attention (drift, failures).
    ours = {e["reason"] for e in kube.items("events") if e["involvedObject"]["kind"] in ("InferenceTier",
                                                                                        "RoutingPolicy")}
    assert not ours & {"Created", "Ready", "ModelLoading"}, ours

    # Steady state: let the other loops (autoscaler, budget) publish their first status, then count writes.
    wait_for(lambda: kube.condition("inferencetier", "slm-edge", "SLOMet"), 45, "SLOMet from the autoscaler")
    time.sleep(3)
    before = kube.resource_versions(WATCHED_KINDS)
    writes_before = len(op.writes())
    time.sleep(STEADY_SECONDS)
    after = kube.resource_versions(WATCHED_KINDS)
    changed = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
    own_writes = op.writes()[writes_before:]
    print(
        f"\nsteady state over {STEADY_SECONDS:.0f}s: {len(own_writes)} operator write requests, "
        f"{len(changed)} objects changed (of {len(after)})"
    )
    assert own_writes == []
    assert changed == {}

    # Deleting the tier garbage-collects every child (ownerReferences + the controller-manager's GC).
    kube.run("delete", "inferencetier", "slm-edge", "-n", kube.namespace, "--wait=true", "--timeout=30s")
    wait_for(
        lambda: all(
            kube.get(k, n) is None
            for k, n in (("deployment", "slm-edge"), ("service", "slm-edge"), ("configmap", "slm-edge-router"))
        ),
        30,
        "children garbage-collected",
    )


def _restored_in(kube: Kube, kind: str, name: str, ok: Any, timeout: float = 10) -> float:
    started = time.monotonic()
    wait_for(lambda: (obj := kube.get(kind, name)) is not None and ok(obj), timeout, f"{kind}/{name} restored")
    return time.monotonic() - started


def test_deleted_or_edited_children_are_restored_within_ten_seconds(kube: Kube, operators: OperatorFactory) -> None:
    operators.start()
    kube.apply(https_tier("edge"))
    kube.wait_condition("inferencetier", "edge", "Ready", "True", timeout=60)
    dep = kube.get("deployment", "edge")
    assert dep is not None
    router_image = dep["spec"]["template"]["spec"]["containers"][1]["image"]
    timings: dict[str, float] = {}

    old_uid = dep["metadata"]["uid"]
    kube.run("delete", "deployment", "edge", "-n", kube.namespace, "--wait=false")
    timings["delete Deployment"] = _restored_in(kube, "deployment", "edge", lambda o: o["metadata"]["uid"] != old_uid)

    kube.run("set", "image", "deployment/edge", "router=attacker/router:latest", "-n", kube.namespace)
    timings["edit Deployment image"] = _restored_in(
        kube, "deployment", "edge", lambda o: o["spec"]["template"]["spec"]["containers"][1]["image"] == router_image
    )

    kube.run(
        "patch",
        "service",
        "edge",
        "-n",
        kube.namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/ports/0/port","value":1234}]',
    )
    timings["edit Service port"] = _restored_in(
        kube, "service", "edge", lambda o: o["spec"]["ports"][0]["port"] == 8000
    )

    cm = kube.get("configmap", "edge-router")
    assert cm is not None
    kube.run("delete", "configmap", "edge-router", "-n", kube.namespace, "--wait=false")
    timings["delete ConfigMap"] = _restored_in(
        kube,
        "configmap",
        "edge-router",
        lambda o: o["data"] == cm["data"] and o["metadata"]["uid"] != cm["metadata"]["uid"],
    )
    kube.run(
        "patch", "configmap", "edge-router", "-n", kube.namespace, "--type=merge", "-p", '{"data":{"router.json":"{}"}}'
    )
    timings["edit ConfigMap data"] = _restored_in(kube, "configmap", "edge-router", lambda o: o["data"] == cm["data"])

    print("\ndrift repair (seconds): " + json.dumps({k: round(v, 2) for k, v in timings.items()}))
    assert all(v < 10 for v in timings.values()), timings
    reasons = {e["reason"] for e in kube.items("events") if e["involvedObject"]["name"] == "edge"}
    assert {"DriftRepaired"} <= reasons, reasons


def test_spec_change_rolls_pods_and_scale_and_policy_change_follow(kube: Kube, operators: OperatorFactory) -> None:
    operators.start()
    kube.apply(https_tier("edge", context_length=2048))
    kube.wait_condition("inferencetier", "edge", "Ready", "True", timeout=60)
    dep = kube.get("deployment", "edge")
    assert dep is not None
    first_rs = {rs["metadata"]["name"] for rs in kube.items("replicasets")}

    kube.run(
        "patch",
        "inferencetier",
        "edge",
        "-n",
        kube.namespace,
        "--type=merge",
        "-p",
        '{"spec":{"local":{"model":{"contextLength":4096}}}}',
    )
    wait_for(
        lambda: (
            "--ctx=4096" in (kube.get("deployment", "edge") or {})["spec"]["template"]["spec"]["containers"][0]["args"]
        ),
        10,
        "new args in the Deployment",
    )
    wait_for(lambda: {rs["metadata"]["name"] for rs in kube.items("replicasets")} - first_rs, 15, "a new ReplicaSet")
    tier = kube.get("inferencetier", "edge")
    assert tier is not None
    generation = tier["metadata"]["generation"]
    wait_for(
        lambda: (
            (c := kube.condition("inferencetier", "edge", "Ready"))
            and c["status"] == "True"
            and c["observedGeneration"] == generation
        ),
        30,
        "Ready at the new generation",
    )

    # kubectl scale itier → the Deployment's scale subresource.
    kube.run("scale", "inferencetier", "edge", "--replicas=2", "-n", kube.namespace)
    wait_for(lambda: (kube.get("deployment", "edge") or {})["spec"]["replicas"] == 2, 10, "Deployment scaled")
    wait_for(lambda: "2/2" in kube.run("get", "itier", "edge", "-n", kube.namespace).stdout, 30, "READY 2/2")

    # A policy that starts using the tier changes its router config, which the router hot-reloads: no new pods.
    replicasets = _replicasets(kube, "edge")
    kube.apply(_policy("only-edge", ["edge"]))
    wait_for(
        lambda: load_config((kube.get("configmap", "edge-router") or {})["data"]["router.json"]).policy == "only-edge",
        10,
        "the sidecar config names the new policy",
    )
    time.sleep(3)  # the Deployment controller acts within milliseconds of a template change; give it time
    assert _replicasets(kube, "edge") == replicasets


def _replicasets(kube: Kube, deployment: str) -> dict[str, str]:
    """name → pod-template-hash of the Deployment's ReplicaSets (a new one means the pods were rolled)."""
    return {
        rs["metadata"]["name"]: rs["metadata"]["labels"].get("pod-template-hash", "")
        for rs in kube.items("replicasets")
        if any(ref["name"] == deployment for ref in rs["metadata"].get("ownerReferences") or [])
    }


def _policy(name: str, tiers: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name},
        "spec": {
            "tiers": tiers,
            "defaultTier": tiers[0],
            "routes": [{"name": "chat", "tier": tiers[0], "examples": ["hello there"]}],
            **spec,
        },
    }


def test_budget_flip_and_route_edit_reach_the_router_config_without_a_new_replicaset(
    kube: Kube, operators: OperatorFactory
) -> None:
    """The router hot-reloads its mounted ConfigMap (tests/integration/router/test_router_configmap_reload.py), so
    neither a budget flip nor a route edit may change the pod template: kube-controller-manager would roll every
    model pod of the policy, and a model server may take up to 30 minutes to start."""
    operators.start()
    kube.apply([https_tier("edge"), _policy("p", ["edge"], budget={"monthlyUSD": "10", "whenExhausted": "localOnly"})])
    kube.wait_condition("inferencetier", "edge", "Ready", "True", timeout=60)
    kube.wait_condition("routingpolicy", "p", "Ready", "True", timeout=30)

    def sidecar_config() -> Any:
        return load_config((kube.get("configmap", "edge-router") or {})["data"]["router.json"])

    wait_for(lambda: sidecar_config().policy == "p", 10, "the sidecar serves policy p")
    before = _replicasets(kube, "edge")
    pods = {p["metadata"]["uid"] for p in kube.items("pods")}
    assert len(before) == 1 and len(pods) == 1

    # The budget loop's verdict, written as the loop writes it (server-side apply of its status slice).
    exhausted = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "p", "namespace": kube.namespace},
        "status": {
            "conditions": [
                {
                    "type": "BudgetOK",
                    "status": "False",
                    "reason": "BudgetExhausted",
                    "message": "spent $10.00 of the $10.00 monthly budget",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ]
        },
    }
    kube.run("apply", "--server-side", "--subresource=status", "--field-manager=tiered-autoscaler",
             "--force-conflicts", "-f", "-", input=yaml.safe_dump(exhausted))  # fmt: skip
    wait_for(lambda: sidecar_config().budget.exhausted, 10, "budget.exhausted in the sidecar config")

    kube.run("patch", "routingpolicy", "p", "-n", kube.namespace, "--type=json", "-p",
             '[{"op":"add","path":"/spec/routes/0/examples/-","value":"good morning"}]')  # fmt: skip
    wait_for(lambda: "good morning" in sidecar_config().routes[0].examples, 10, "the edited route in the config")

    time.sleep(3)  # the Deployment controller acts within milliseconds of a template change; give it time
    assert _replicasets(kube, "edge") == before
    assert {p["metadata"]["uid"] for p in kube.items("pods")} == pods
    assert (kube.get("deployment", "edge") or {})["status"].get("observedGeneration") == 1


def test_cloud_tier_reports_missing_secret_and_key_by_name_never_the_value(
    kube: Kube, operators: OperatorFactory
) -> None:
    operators.start()
    kube.apply(
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "InferenceTier",
            "metadata": {"name": "gpt"},
            "spec": {
                "backend": "cloud",
                "cloud": {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "apiKeySecretRef": {"name": "openai", "key": "api-key"},
                },
            },
        }
    )
    cond = kube.wait_condition("inferencetier", "gpt", "Ready", "False", timeout=20)
    assert cond["reason"] == "SecretInvalid" and "Secret 'openai' not found" in cond["message"]
    assert kube.condition("inferencetier", "gpt", "Stalled")["status"] == "True"

    kube.run("create", "secret", "generic", "openai", "--from-literal=wrong-key=sk-very-secret", "-n", kube.namespace)
    wait_for(
        lambda: "has no key 'api-key'" in (kube.condition("inferencetier", "gpt", "Ready") or {}).get("message", ""),
        15,
        "message naming the missing key",
    )
    tier = json.dumps(kube.get("inferencetier", "gpt"))
    events = json.dumps(kube.items("events"))
    assert "sk-very-secret" not in tier and "sk-very-secret" not in events

    kube.run("delete", "secret", "openai", "-n", kube.namespace)
    kube.run("create", "secret", "generic", "openai", "--from-literal=api-key=sk-very-secret", "-n", kube.namespace)
    kube.wait_condition("inferencetier", "gpt", "Ready", "True", timeout=15)
    assert kube.get("deployment", "gpt") is None and kube.get("service", "gpt") is None  # no pods for cloud tiers
    assert "sk-very-secret" not in json.dumps(kube.get("inferencetier", "gpt"))


def test_policy_with_a_missing_tier_names_it_and_resolves_when_it_appears(
    kube: Kube, operators: OperatorFactory
) -> None:
    operators.start()
    kube.apply(
        {
            "apiVersion": "tiered.dev/v1alpha1",
            "kind": "RoutingPolicy",
            "metadata": {"name": "p"},
            "spec": {"tiers": ["ghost"], "defaultTier": "ghost"},
        }
    )
    cond = kube.wait_condition("routingpolicy", "p", "TiersResolved", "False", timeout=20)
    assert cond["reason"] == "TierNotFound" and "ghost" in cond["message"]
    assert kube.condition("routingpolicy", "p", "Ready")["status"] == "False"
    assert kube.get("configmap", "p-policy") is None

    kube.apply(https_tier("ghost"))
    kube.wait_condition("routingpolicy", "p", "TiersResolved", "True", timeout=15)
    kube.wait_condition("routingpolicy", "p", "Ready", "True", timeout=15)
    assert kube.get("configmap", "p-policy") is not None
