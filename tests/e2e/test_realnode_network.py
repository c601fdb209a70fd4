"""Residency at the packet level, on the real node: the NetworkPolicies the operator writes, enforced by kube-router,
stop (or let through) real TCP connections from the tier pods.

The cloud stand-in lives outside the cluster, in the node's `tiered-outside` network namespace (10.201.0.2:18443,
the demo's cloud tier); a second listener on the same port at 10.201.0.3, and one on another port at the declared
address, are reachable from the host, so a refused connection from a pod is the policy's doing.
"""

from __future__ import annotations

import time

import pytest
from realnode_support import (
    DEMO_NS,
    SECOND_ADDRESS,
    STANDIN,
    RealNodeSession,
    apply,
    cloud_tier,
    dns_from_pod,
    get_json,
    http_from_pod,
    local_tier,
    model_volume,
    namespace,
    outside_listeners,
    policy,
    ready_pods,
    tcp_from_pod,
    wait_for,
)

from tiered_operator.residency.network import BASE_POLICY_NAME

pytestmark = pytest.mark.integration

LOCAL_NS = "e2e-local-only"
OTHER_PORT = f"{STANDIN.split(':')[0]}:18444"
SECOND_STANDIN = f"{SECOND_ADDRESS}:18443"
RELABEL_SECONDS = 30
"""How soon a relabelled namespace's pods see the new reachability (operator resync + kube-router sync)."""


@pytest.fixture(scope="module")
def local_only(real_node: RealNodeSession) -> str:
    """Namespace `e2e-local-only` (tiered.dev/residency=local-only) with a local tier, a cloud tier that declares
    the stand-in, and a policy over both; returns the name of the local tier's Ready pod."""
    cluster = real_node.kube
    apply(cluster, [namespace(LOCAL_NS, "local-only")])
    apply(cluster, [*model_volume(LOCAL_NS, real_node.model_dir), local_tier(LOCAL_NS, "edge"),
                    *cloud_tier(LOCAL_NS, "cloud", STANDIN), policy(LOCAL_NS, "p", ["edge", "cloud"], "edge")])
    pods = wait_for("the local-only tier's pod Ready on the real node",
                    lambda: ready_pods(cluster, LOCAL_NS, "edge"), 600, interval=2)
    assert pods[0]["spec"]["nodeName"] == "real-node-0"
    return str(pods[0]["metadata"]["name"])


def _demo_router_pod(real_node: RealNodeSession) -> str:
    pods = wait_for("a Ready slm-edge pod in the demo namespace", lambda: ready_pods(real_node.kube, DEMO_NS,
                                                                                      "slm-edge"), 300, interval=2)
    return str(pods[0]["metadata"]["name"])


def test_local_only_pod_cannot_reach_the_cloud_while_dns_and_the_local_tier_work(
    real_node: RealNodeSession, local_only: str
) -> None:
    cluster = real_node.kube
    policies = {p["metadata"]["name"] for p in get_json(cluster, "networkpolicy", "-n", LOCAL_NS)["items"]}
    assert BASE_POLICY_NAME in policies and not any("allow-cloud" in p for p in policies), policies
    with outside_listeners(SECOND_STANDIN):
        reach = tcp_from_pod(cluster, LOCAL_NS, local_only, STANDIN, SECOND_STANDIN)
    assert reach[STANDIN] != "open" and reach[SECOND_STANDIN] != "open", reach
    names = dns_from_pod(cluster, LOCAL_NS, local_only, f"edge.{LOCAL_NS}.svc.cluster.local", "edge",
                         "kubernetes.default.svc.cluster.local")
    service_ip = get_json(cluster, "service", "edge", "-n", LOCAL_NS)["spec"]["clusterIP"]
    assert names[f"edge.{LOCAL_NS}.svc.cluster.local"] == [service_ip], names
    assert names["edge"] == [service_ip], names  # the pod's search path
    assert names["kubernetes.default.svc.cluster.local"] == ["10.0.0.1"], names
    # Names outside the cluster are not resolved (CoreDNS has no upstream; nothing asks the machine's resolver).
    assert dns_from_pod(cluster, LOCAL_NS, local_only, "example.com")["example.com"] == "gaierror"
    assert http_from_pod(cluster, LOCAL_NS, local_only, f"http://edge.{LOCAL_NS}.svc:8080/readyz") == "200"


def test_restricted_router_reaches_only_the_declared_cloud_cidr_and_port(real_node: RealNodeSession) -> None:
    cluster = real_node.kube
    pod = _demo_router_pod(real_node)
    allow = [p for p in get_json(cluster, "networkpolicy", "-n", DEMO_NS)["items"]
             if "allow-cloud" in p["metadata"]["name"]]
    assert [r["to"] for p in allow for r in p["spec"]["egress"]] == [[{"ipBlock": {"cidr": "10.201.0.2/32"}}]]
    with outside_listeners(SECOND_STANDIN, OTHER_PORT):
        reach = tcp_from_pod(cluster, DEMO_NS, pod, STANDIN, SECOND_STANDIN, OTHER_PORT)
    assert reach == {STANDIN: "open", SECOND_STANDIN: reach[SECOND_STANDIN], OTHER_PORT: reach[OTHER_PORT]}, reach
    assert reach[SECOND_STANDIN] != "open", "a second stand-in address outside the declared CIDR was reachable"
    assert reach[OTHER_PORT] != "open", "another port of the declared address was reachable"


def _stand_in_reachable(real_node: RealNodeSession, pod: str) -> bool:
    return tcp_from_pod(real_node.kube, LOCAL_NS, pod, STANDIN)[STANDIN] == "open"


def test_relabelling_the_namespace_changes_what_its_pods_reach(real_node: RealNodeSession, local_only: str) -> None:
    cluster = real_node.kube
    assert not _stand_in_reachable(real_node, local_only)
    timings = {}
    for residency, expect in (("restricted", True), ("local-only", False)):
        cluster.kubectl("label", "namespace", LOCAL_NS, f"tiered.dev/residency={residency}", "--overwrite")
        started = time.monotonic()
        wait_for(f"stand-in {'reachable' if expect else 'unreachable'} after relabelling to {residency}",
                 lambda expect=expect: _stand_in_reachable(real_node, local_only) is expect,
                 RELABEL_SECONDS, interval=0.5)
        timings[residency] = round(time.monotonic() - started, 1)
    real_node.figures["relabel_seconds"] = timings
    print(f"\nrelabel → reachability changed after {timings} s (stated bound {RELABEL_SECONDS} s)")
