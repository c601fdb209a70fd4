"""Scaling and updates with real pods: the autoscaler's scale-up starts containers that become Ready and answer
requests, and a model change rolls out while clients keep calling, without one failed request.

One tier in namespace `e2e-scaling` (local-only: no cloud tier, every request is served by the pods under test),
its SLO far below what a CPU model answers in, so the autoscaler (reading the demo's Prometheus) scales it up.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
from realnode_support import (
    MODEL_SOURCE,
    LoadLoop,
    RealNodeSession,
    apply,
    get_json,
    local_tier,
    model_volume,
    namespace,
    policy,
    ready_pods,
    service_url,
    slm_requests_served,
    wait_for,
)

pytestmark = pytest.mark.integration

NS = "e2e-scaling"
TIER = "edge"


@pytest.fixture(scope="module")
def scaling_tier(real_node: RealNodeSession) -> str:
    cluster = real_node.kube
    apply(cluster, [namespace(NS, "local-only")])
    apply(cluster, [*model_volume(NS, real_node.model_dir),
                    local_tier(NS, TIER, slo_ms=50, min_replicas=1, max_replicas=2),
                    policy(NS, "p", [TIER], TIER)])
    started = time.monotonic()
    pods = wait_for("the tier's first pod Ready", lambda: ready_pods(cluster, NS, TIER), 600, interval=1)
    created = pods[0]["metadata"]["creationTimestamp"]
    real_node.figures["slm_pod_ready_seconds_first"] = round(time.monotonic() - started, 1)
    print(f"\nfirst pod {pods[0]['metadata']['name']} (created {created}) Ready after "
          f"{real_node.figures['slm_pod_ready_seconds_first']} s from apply")
    return service_url(cluster, NS, TIER)


def test_autoscaler_scale_up_creates_real_pods_that_become_ready_and_take_traffic(
    real_node: RealNodeSession, scaling_tier: str
) -> None:
    cluster = real_node.kube
    first = {p["metadata"]["name"] for p in ready_pods(cluster, NS, TIER)}
    with LoadLoop(scaling_tier, workers=2) as load:
        wait_for("the autoscaler asking for 2 replicas", lambda: get_json(
            cluster, "deployment", TIER, "-n", NS).get("spec", {}).get("replicas") == 2, 240, interval=1)
        asked = time.monotonic()
        pods = wait_for("2 Ready pods on the real node", lambda: (lambda ps: ps if len(ps) == 2 else None)(
            ready_pods(cluster, NS, TIER)), 600, interval=1)
        real_node.figures["slm_pod_ready_seconds_scale_up"] = round(time.monotonic() - asked, 1)
        new = [p for p in pods if p["metadata"]["name"] not in first]
        assert new and all(p["spec"]["nodeName"] == "real-node-0" for p in pods)
        new_ip = new[0]["status"]["podIP"]
        served_before = slm_requests_served(new_ip)
        wait_for("the new pod answering requests sent to the tier's Service",
                 lambda: slm_requests_served(new_ip) >= served_before + 3, 180, interval=2)
    assert load.outcomes and not load.failures(), load.failures()[:5]
    status = get_json(cluster, "inferencetier", TIER, "-n", NS)["status"]
    print(f"\nscale-up: {status.get('lastScaleReason')}; new pod Ready "
          f"{real_node.figures['slm_pod_ready_seconds_scale_up']} s after the autoscaler asked")


def test_model_change_rolls_out_without_dropping_a_request(real_node: RealNodeSession, scaling_tier: str) -> None:
    cluster = real_node.kube
    # The same weights under another name: a new model source, so a new pod template and a rolling update.
    original = real_node.model_dir / MODEL_SOURCE.rsplit("/", 1)[1]
    renamed = original.with_name("SmolLM2-135M-Instruct.Q4_1.v2.gguf")
    shutil.copyfile(original, renamed)
    renamed.chmod(0o644)
    before = {p["metadata"]["name"] for p in ready_pods(cluster, NS, TIER)}
    new_source = f"pvc://models/{renamed.name}"
    with LoadLoop(scaling_tier, workers=2) as load:
        time.sleep(3)
        cluster.kubectl("patch", "inferencetier", TIER, "-n", NS, "--type=merge",
                        "-p", json.dumps({"spec": {"local": {"model": {"source": new_source}}}}))

        def rolled_out() -> bool:
            pods = ready_pods(cluster, NS, TIER)
            every = get_json(cluster, "pods", "-n", NS, "-l", f"tiered.dev/tier={TIER}").get("items", [])
            return (len(every) == len(pods) >= 1 and not before & {p["metadata"]["name"] for p in pods}
                    and all(f"--model={new_source}" in p["spec"]["containers"][0]["args"] for p in pods))

        wait_for("every pod replaced by one serving the new model source", rolled_out, 900, interval=1)
        time.sleep(3)
    sent = len(load.outcomes)
    failures = load.failures()
    print(f"\nrolling update: {sent} requests during the rollout, {len(failures)} failed")
    assert sent >= 10, "too few requests during the rollout to show anything"
    assert not failures, failures[:5]
