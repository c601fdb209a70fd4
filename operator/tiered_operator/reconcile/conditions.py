"""Status conditions per the Kubernetes API conventions, computed as pure values.

A reconcile computes the conditions it wants (type, status, reason, message) from what it observed, then
`merge_conditions` stamps them with the generation and keeps `lastTransitionTime` of any condition whose
status did not change. Comparing the result with the stored list tells the handler whether to write at all,
which is how the operator stays silent at steady state (cert-manager's readiness controller does the same).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ConditionStatus = Literal["True", "False", "Unknown"]

TRUE: ConditionStatus = "True"
FALSE: ConditionStatus = "False"
UNKNOWN: ConditionStatus = "Unknown"


@dataclass(frozen=True)
class Condition:
    """A condition before it is stamped with a generation and a transition time."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    """The current time as the API server writes it (seconds precision, `Z`)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]] | None,
    desired: Iterable[Condition],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The full conditions list to store: desired conditions, transition times kept where status held.

    Conditions of types the reconciler does not compute (written by another controller, e.g. the autoscaler's
    SLOMet) are kept untouched, so two writers of one status do not erase each other's conditions.
    """
    by_type = {str(c.get("type")): c for c in existing or []}
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for cond in desired:
        seen.add(cond.type)
        old = by_type.get(cond.type)
        keep_time = old is not None and old.get("status") == cond.status and old.get("lastTransitionTime")
        result.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": old["lastTransitionTime"] if keep_time and old else now,
                "observedGeneration": generation,
            }
        )
    for type_, old in by_type.items():
        if type_ not in seen:
            result.append(dict(old))
    return result


def find(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of `type_` in a stored list, or None."""
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def transitions(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """Conditions in `after` whose status or reason differ from `before`: what deserves an Event."""
    changed = []
    for cond in after:
        old = find(before, str(cond.get("type")))
        if old is None or old.get("status") != cond.get("status") or old.get("reason") != cond.get("reason"):
            changed.append(cond)
    return changed


CONDITION_FIELDS = ("status", "reason", "message", "observedGeneration")
"""What makes two conditions different (lastTransitionTime follows status)."""


def status_differs(
    existing: Mapping[str, Any] | None, desired: Mapping[str, Any], owned: Iterable[str] = ()
) -> bool:
    """Whether applying `desired` (one writer's slice of status) would change the stored status.

    A field or a condition (status, reason, message, observedGeneration) differs, or a field the writer `owned`
    is stored but no longer desired (server-side apply would remove it). The one comparison every status writer
    uses: the reconciler, the autoscaler and the budget loop.
    """
    existing = existing or {}
    for key, value in desired.items():
        if key == "conditions":
            for cond in value:
                old = find(existing.get("conditions"), str(cond["type"]))
                if old is None or any(old.get(f) != cond.get(f) for f in CONDITION_FIELDS):
                    return True
        elif existing.get(key) != value:
            return True
    return any(key in existing and key not in desired for key in owned if key != "conditions")
