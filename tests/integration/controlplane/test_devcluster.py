"""The local control plane: real processes, a fake KWOK node that runs pods, idempotent up, clean down."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tiered_dev import devcluster
from tiered_dev.devcluster import Cluster
from tiered_dev.devcluster.build import KUBERNETES_VERSION

pytestmark = pytest.mark.integration


def _wait_for(predicate, timeout: float, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def test_versions_are_the_pinned_release(cluster: Cluster) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == KUBERNETES_VERSION
    assert version["clientVersion"]["gitVersion"] == KUBERNETES_VERSION


def test_fake_node_is_ready(cluster: Cluster) -> None:
    node = json.loads(cluster.kubectl("get", "node", devcluster.cluster.FAKE_NODE, "-o", "json").stdout)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"


def test_deployment_gets_replicaset_and_ready_pods(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("-n", namespace, "create", "deployment", "web", "--image=registry.k8s.io/pause:3.10",
                    "--replicas=2")

    def ready() -> bool:
        out = cluster.kubectl("-n", namespace, "get", "deployment", "web", "-o",
                              "jsonpath={.status.readyReplicas}", check=False).stdout
        return out.strip() == "2"

    assert _wait_for(ready, timeout=60), cluster.kubectl("-n", namespace, "get", "all").stdout
    rs = json.loads(cluster.kubectl("-n", namespace, "get", "replicasets", "-o", "json").stdout)
    assert len(rs["items"]) == 1
    pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    assert [p["status"]["phase"] for p in pods] == ["Running", "Running"]
    assert {p["spec"]["nodeName"] for p in pods} == {devcluster.cluster.FAKE_NODE}


def test_operator_kubeconfig_is_a_service_account_token(cluster: Cluster) -> None:
    assert cluster.operator_kubeconfig.exists(), "manifests/rbac must define the operator's ServiceAccount"
    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=cluster.operator_kubeconfig)
    username = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert username == "system:serviceaccount:tiered-system:tiered-operator"
    # Bound only by the project's RBAC: it is not a cluster admin.
    can = cluster.kubectl("auth", "can-i", "create", "clusterrolebindings", kubeconfig=cluster.operator_kubeconfig,
                          check=False)
    assert can.stdout.strip() == "no"


def test_a_second_cluster_starts_is_reused_and_stops_without_orphans(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    first = devcluster.up(state_dir, progress=lambda _m: None)
    try:
        pids = json.loads((state_dir / "state.json").read_text())["pids"]
        assert set(pids) == set(devcluster.cluster.ORDER)
        # a fresh control plane comes with the project's CRDs installed and Established
        crds = first.kubectl("get", "crd", "inferencetiers.tiered.dev", "routingpolicies.tiered.dev", "-o",
                             "jsonpath={.items[*].status.conditions[?(@.type=='Established')].status}")
        assert crds.stdout.split() == ["True", "True"]
        started = time.monotonic()
        second = devcluster.up(state_dir, progress=lambda _m: None)
        reuse_seconds = time.monotonic() - started
        assert second.server == first.server
        assert json.loads((state_dir / "state.json").read_text())["pids"] == pids
        assert reuse_seconds < 30
        assert all(devcluster.status(state_dir).values())
    finally:
        stopped = devcluster.down(state_dir)
    assert sorted(stopped) == sorted(pids.values())
    assert devcluster.cluster._our_processes(state_dir.resolve()) == []
    assert not any(devcluster.status(state_dir).values())


def test_a_failed_start_names_the_component_and_shows_its_log(tmp_path: Path) -> None:
    state_dir = tmp_path / "dev"
    state_dir.mkdir()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        (state_dir / "state.json").write_text(json.dumps({"ports": {"etcd": taken}, "pids": {}}))
        try:
            with pytest.raises(devcluster.ComponentFailed) as failure:
                devcluster.up(state_dir, progress=lambda _m: None)
        finally:
            devcluster.down(state_dir)
    assert failure.value.component == "etcd"
    assert "address already in use" in failure.value.log_tail
