"""`make demo` on the real node, its pure parts: the checked-in manifests agree with the addresses the code uses,
the operator overlay is manifests/ plus one setting, pod discovery selects what the PodMonitor selects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tiered_dev.demo import podtargets, prom, realnode
from tiered_dev.devcluster import node

REPO = Path(__file__).resolve().parents[3]


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_cloud_tier_declares_where_the_demo_runs_the_stand_in() -> None:
    tier = _docs(REPO / "manifests" / "demo" / "inferencetier-cloud.yaml")[0]["spec"]["cloud"]
    assert tier["baseURL"] == f"http://{realnode.STANDIN_ADDRESS}:{realnode.STANDIN_PORT}/v1"
    assert tier["egress"] == {"cidrs": [f"{realnode.STANDIN_ADDRESS}/32"], "ports": [realnode.STANDIN_PORT]}
    assert realnode.STANDIN_ADDRESS in node.OUTSIDE_ADDRESSES


def test_operator_overlay_is_the_whole_install_plus_the_prometheus_url() -> None:
    base = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())["resources"]
    overlay_dir = REPO / "manifests" / "demo" / "operator"
    overlay = yaml.safe_load((overlay_dir / "kustomization.yaml").read_text())
    resolved = {(overlay_dir / r).resolve() for r in overlay["resources"] if not r.endswith(".yaml")}
    assert resolved == {(REPO / "manifests" / r).resolve() for r in base}
    patch = yaml.safe_load(overlay["patches"][0]["patch"])
    assert patch == [{"op": "add", "path": "/spec/template/spec/containers/0/env/-",
                      "value": {"name": "TIERED_PROMETHEUS_URL", "value": "http://prometheus.tiered-system.svc:9090"}}]
    service, slice_ = _docs(overlay_dir / "prometheus.yaml")
    assert service["spec"]["ports"][0]["port"] == 9090 and "selector" not in service["spec"]
    assert slice_["endpoints"] == [{"addresses": [node.NODE_IP]}]
    assert slice_["ports"][0]["port"] == realnode.PROMETHEUS_PORT


def test_volume_path_points_only_the_persistent_volume_at_the_filled_directory(tmp_path: Path) -> None:
    objects = _docs(REPO / "manifests" / "demo" / "model-volume.yaml")
    out = realnode.with_volume_path(objects, tmp_path / "models")
    pv = next(o for o in out if o["kind"] == "PersistentVolume")
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "models")
    others = [o for o in objects if o["kind"] != "PersistentVolume"]
    assert [o for o in out if o["kind"] != "PersistentVolume"] == others
    assert objects[0]["spec"]["hostPath"]["path"] != str(tmp_path / "models")  # the input is not modified


def _pod(name: str, phase: str = "Running", ip: str | None = "10.200.0.9", component: str = "slm",
         part_of: str = "tiered", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns",
                            "labels": {"app.kubernetes.io/part-of": part_of, "tiered.dev/component": component}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase, "podIP": ip},
            "spec": {"containers": [
                {"name": "model", "ports": [{"name": "slm", "containerPort": 8080}]},
                {"name": "router", "ports": [{"name": "http", "containerPort": 8000},
                                             {"name": "debug", "containerPort": 6060}]}]}}


def test_pod_targets_follow_the_podmonitor_selection() -> None:
    pods = [_pod("a"), _pod("b", phase="Pending"), _pod("c", ip=None), _pod("d", part_of="other"),
            _pod("e", component="network"), _pod("f", deleting=True), _pod("g", ip="10.200.0.7")]
    groups = podtargets.pod_targets(pods)
    assert groups[prom.SLM_JOB] == [
        {"targets": ["10.200.0.9:8080"], "labels": {"namespace": "ns", "pod": "a", "container": "model"}},
        {"targets": ["10.200.0.7:8080"], "labels": {"namespace": "ns", "pod": "g", "container": "model"}},
    ]
    assert [g["targets"] for g in groups[prom.ROUTER_JOB]] == [["10.200.0.9:8000"], ["10.200.0.7:8000"]]
    assert podtargets.pod_targets([]) == {prom.ROUTER_JOB: [], prom.SLM_JOB: []}


def test_written_target_files_change_only_when_targets_do(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    groups = podtargets.pod_targets([_pod("a")])[prom.SLM_JOB]
    assert podtargets.write_if_changed(path, groups)
    assert not podtargets.write_if_changed(path, groups)
    assert podtargets.write_if_changed(path, [])


def test_scrape_config_reads_the_discovered_files_and_labels_the_stand_in() -> None:
    doc = yaml.safe_load(prom.pod_scrape_config("/t", {prom.STANDIN_JOB: "10.201.0.2:18443"}, "tiered-demo"))
    jobs = {j["job_name"]: j for j in doc["scrape_configs"]}
    assert jobs[prom.ROUTER_JOB]["file_sd_configs"][0]["files"] == [f"/t/{prom.ROUTER_JOB}.json"]
    assert jobs[prom.STANDIN_JOB]["static_configs"] == [{"targets": ["10.201.0.2:18443"],
                                                         "labels": {"namespace": "tiered-demo"}}]


def test_rolled_out_needs_every_replica_updated_and_available() -> None:
    def dep(gen: int, observed: int, want: int, updated: int, total: int, available: int) -> dict[str, Any]:
        return {"metadata": {"generation": gen}, "spec": {"replicas": want},
                "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                           "availableReplicas": available}}

    assert realnode.rolled_out(dep(2, 2, 2, 2, 2, 2))
    assert not realnode.rolled_out(dep(3, 2, 2, 2, 2, 2))  # the controller has not seen the new template
    assert not realnode.rolled_out(dep(2, 2, 2, 1, 3, 2))  # an old pod still runs
    assert not realnode.rolled_out(dep(2, 2, 2, 2, 2, 1))
    assert not realnode.rolled_out({})
