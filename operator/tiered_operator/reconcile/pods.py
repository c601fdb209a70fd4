"""Why a tier's pods are not running, in the scheduler's and the kubelet's own words (pure functions).

The operator indexes a summary of each of its pods and of the Warning events about them (`pod_summary`,
`event_summary`: only the fields read here, so 1,000 pods cost little memory), and `pod_problem` picks the
reason a tier reports in its Ready condition, the way KServe surfaces a predictor's failure: the scheduler's
`PodScheduled=False` message (a missing PersistentVolumeClaim, no node matching the selector or tolerations,
insufficient CPU or memory), the container's waiting reason (image pull failure, crash loop, bad config), a
failing readiness probe (from the kubelet's `Unhealthy` events), a volume that cannot be mounted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
EVENT_REASONS = frozenset({"Unhealthy", "FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"})
"""Warning events about our pods worth indexing (the rest is in the pod's own status)."""
STALLED_REASONS = frozenset(
    {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CrashLoopBackOff", "CreateContainerConfigError"}
)
"""Reasons that will not fix themselves: the tier also reports Stalled=True (Argo CD shows it Degraded)."""
MESSAGE_LIMIT = 512


@dataclass(frozen=True)
class PodProblem:
    """Why the tier's pods are not ready: a CamelCase reason and the message of whoever said so."""

    reason: str
    message: str

    @property
    def stalled(self) -> bool:
        return self.reason in STALLED_REASONS


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def pod_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a pod: name, when, whether scheduled, and each container's state."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    scheduled = _condition(status, "PodScheduled")
    ready = _condition(status, "Ready")
    containers = []
    for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state, last = c.get("state") or {}, c.get("lastState") or {}
        waiting = state.get("waiting") or {}
        terminated = last.get("terminated") or state.get("terminated") or {}
        containers.append(
            {
                "name": c.get("name"),
                "ready": bool(c.get("ready")),
                "running": "running" in state,
                "restarts": int(c.get("restartCount") or 0),
                "waiting": {"reason": waiting.get("reason"), "message": waiting.get("message")} if waiting else None,
                "terminated": {
                    "reason": terminated.get("reason"),
                    "exitCode": terminated.get("exitCode"),
                    "message": terminated.get("message"),
                }
                if terminated
                else None,
            }
        )
    return {
        "metadata": {
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "namespace": meta.get("namespace"),
            "creationTimestamp": meta.get("creationTimestamp"),
            "deleting": bool(meta.get("deletionTimestamp")),
        },
        "phase": status.get("phase"),
        "ready": (ready or {}).get("status") == "True",
        "scheduled": None
        if scheduled is None
        else {
            "status": scheduled.get("status"),
            "reason": scheduled.get("reason"),
            "message": scheduled.get("message"),
        },
        "containers": containers,
    }


def event_summary(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a Warning event about one of its pods."""
    involved = body.get("involvedObject") or {}
    field_path = str(involved.get("fieldPath") or "")
    container = field_path.partition("{")[2].rstrip("}") if "{" in field_path else None
    return {
        "reason": body.get("reason"),
        "message": body.get("message") or body.get("note"),
        "container": container,
        "last": body.get("lastTimestamp")
        or body.get("eventTime")
        or (body.get("metadata") or {}).get("creationTimestamp"),
    }


def _short(text: Any) -> str:
    value = " ".join(str(text or "").split())
    return value if len(value) <= MESSAGE_LIMIT else value[: MESSAGE_LIMIT - 1] + "…"


def _container_problem(pod: str, container: Mapping[str, Any]) -> PodProblem | None:
    waiting = container.get("waiting") or {}
    reason = waiting.get("reason")
    name = container.get("name")
    if reason in IMAGE_REASONS or reason in CONFIG_REASONS:
        return PodProblem(str(reason), _short(f"pod {pod} container {name}: {waiting.get('message') or reason}"))
    if reason == "CrashLoopBackOff":
        last = container.get("terminated") or {}
        detail = f"last exit code {last.get('exitCode')} ({last.get('reason') or 'unknown'})"
        if last.get("message"):
            detail += f": {last['message']}"
        return PodProblem("CrashLoopBackOff", _short(f"pod {pod} container {name} keeps exiting, {detail}"))
    return None


def pod_problem(
    pods: Sequence[Mapping[str, Any]], events: Mapping[str, Sequence[Mapping[str, Any]]]
) -> PodProblem | None:
    """The most telling reason the tier's pods are not ready, or None when they are fine or just starting.

    `events` maps pod name → its indexed Warning events. Newer pods are looked at first (during a rollout the
    new ReplicaSet's pod is the one that matters); within a pod: scheduling, then the containers, then volume
    mounts, then probes. Normal progress (ContainerCreating, a pod just created) is no problem.
    """
    ordered = sorted(
        (p for p in pods if not (p.get("metadata") or {}).get("deleting") and not p.get("ready")),
        key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""),
        reverse=True,
    )
    for pod in ordered:
        name = str((pod.get("metadata") or {}).get("name"))
        scheduled = pod.get("scheduled") or {}
        if scheduled.get("status") == "False":
            reason = str(scheduled.get("reason") or "Unschedulable")
            return PodProblem(reason, _short(f"pod {name}: {scheduled.get('message') or reason}"))
        for container in pod.get("containers") or []:
            found = _container_problem(name, container)
            if found is not None:
                return found
        pod_events = sorted(events.get(name, ()), key=lambda e: str(e.get("last") or ""), reverse=True)
        for event in pod_events:
            if event.get("reason") in ("FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox"):
                return PodProblem(str(event["reason"]), _short(f"pod {name}: {event.get('message')}"))
        for event in pod_events:
            container = next((c for c in pod.get("containers") or [] if c.get("name") == event.get("container")), None)
            if (
                event.get("reason") == "Unhealthy"
                and container is not None
                and container.get("running")
                and not container.get("ready")
            ):
                message = str(event.get("message") or "")
                reason = "ReadinessProbeFailed" if message.startswith("Readiness") else "ProbeFailed"
                return PodProblem(reason, _short(f"pod {name} container {container.get('name')}: {message}"))
    return None
