"""Why a tier's pods are not ready, from pod status and kubelet events shaped as the API server returns them."""

from __future__ import annotations

from typing import Any

from tiered_operator.reconcile.pods import event_summary, pod_problem, pod_summary


def pod(name: str = "edge-1", created: str = "2026-12-01T10:00:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "creationTimestamp": created},
            "status": {"phase": "Pending", **status}}  # fmt: skip


def container(name: str = "model", **fields: Any) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0, "image": "x", "imageID": "", **fields}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": '0/2 nodes are available: persistentvolumeclaim "models" not found. preemption: 0/2 '
                            "nodes are available: 2 Preemption is not helpful for scheduling."}  # fmt: skip


def problem(*pods: dict[str, Any], events: dict[str, list[dict[str, Any]]] | None = None) -> Any:
    summaries = [pod_summary(p) for p in pods]
    return pod_problem(summaries, {k: [event_summary(e) for e in v] for k, v in (events or {}).items()})


def test_the_schedulers_message_is_the_reason() -> None:
    found = problem(pod(conditions=[UNSCHEDULABLE]))
    assert found.reason == "Unschedulable" and not found.stalled
    assert 'persistentvolumeclaim "models" not found' in found.message and found.message.startswith("pod edge-1:")


def test_image_pull_failure_names_the_container_and_is_stalled_once_backing_off() -> None:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/x/slm:nope"'}
    found = problem(pod(conditions=[{"type": "PodScheduled", "status": "True"}],
                        containerStatuses=[container(state={"waiting": waiting})]))  # fmt: skip
    assert (found.reason, found.stalled) == ("ImagePullBackOff", True)
    assert "container model" in found.message and "ghcr.io/x/slm:nope" in found.message


def test_crash_loop_says_how_the_container_last_exited() -> None:
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=model"}
    last = {"terminated": {"exitCode": 2, "reason": "Error", "message": "model file not found: /models/m.gguf"}}
    found = problem(pod(containerStatuses=[container(restartCount=4, state={"waiting": waiting}, lastState=last)]))
    assert (found.reason, found.stalled) == ("CrashLoopBackOff", True)
    assert "last exit code 2 (Error): model file not found: /models/m.gguf" in found.message


def test_a_failing_readiness_probe_comes_from_the_kubelets_event() -> None:
    running = container(state={"running": {"startedAt": "2026-12-01T10:00:05Z"}}, started=True)
    event = {"type": "Warning", "reason": "Unhealthy", "message": "Readiness probe failed: HTTP probe failed with "
             "statuscode: 503", "involvedObject": {"kind": "Pod", "name": "edge-1", "namespace": "ns",
             "fieldPath": "spec.containers{model}"}, "lastTimestamp": "2026-12-01T10:01:00Z"}  # fmt: skip
    found = problem(pod(phase="Running", containerStatuses=[running]), events={"edge-1": [event]})
    assert found.reason == "ReadinessProbeFailed"
    assert found.message == "pod edge-1 container model: Readiness probe failed: HTTP probe failed with statuscode: 503"


def test_normal_progress_and_ready_pods_are_no_problem() -> None:
    creating = container(state={"waiting": {"reason": "ContainerCreating"}})
    assert problem(pod(containerStatuses=[creating])) is None
    assert problem(pod()) is None  # just created, not scheduled yet
    ready = pod(phase="Running", conditions=[{"type": "Ready", "status": "True"}],
                containerStatuses=[container(ready=True, state={"running": {}})])  # fmt: skip
    stale = {"type": "Warning", "reason": "Unhealthy", "message": "Readiness probe failed: 503",
             "involvedObject": {"kind": "Pod", "name": "edge-1", "fieldPath": "spec.containers{model}"}}  # fmt: skip
    assert problem(ready, events={"edge-1": [stale]}) is None  # a past failure of a pod now ready


def test_a_terminating_pod_is_ignored_and_the_newest_pod_speaks_first() -> None:
    old = pod("edge-old", "2026-12-01T09:00:00Z", conditions=[UNSCHEDULABLE])
    old["metadata"]["deletionTimestamp"] = "2026-12-01T10:00:00Z"
    assert problem(old) is None
    waiting = {"reason": "ErrImagePull", "message": "not found"}
    new = pod("edge-new", "2026-12-01T11:00:00Z", containerStatuses=[container(state={"waiting": waiting})])
    other = pod("edge-mid", "2026-12-01T10:30:00Z", conditions=[UNSCHEDULABLE])
    assert problem(other, new).reason == "ErrImagePull"


def test_a_pod_summary_keeps_only_what_status_reads() -> None:
    body = pod(conditions=[UNSCHEDULABLE], containerStatuses=[container()])
    body["metadata"]["managedFields"] = [{"manager": "kubelet"}]
    body["spec"] = {"containers": [{"name": "model", "image": "x", "env": [{"name": "A", "value": "b" * 1000}]}]}
    summary = pod_summary(body)
    assert "spec" not in summary and "managedFields" not in summary["metadata"]
    assert summary["scheduled"]["reason"] == "Unschedulable"
