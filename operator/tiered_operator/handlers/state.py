"""What a reconcile observes, read from kopf's in-memory indexes (fed by watches), not from API calls.

Reading children from indexes is what lets a periodic resync run for every object without a single request:
the watches already tell the operator what exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tiered_operator import labels

ChildKey = tuple[str, str, str]
"""(namespace, owner kind, owner name)"""

INDEX_TIERS = "tiered_tiers"
INDEX_POLICIES = "tiered_policies"
INDEX_DEPLOYMENTS = "tiered_deployments"
INDEX_SERVICES = "tiered_services"
INDEX_CONFIGMAPS = "tiered_configmaps"
ALL_INDEXES = (INDEX_TIERS, INDEX_POLICIES, INDEX_DEPLOYMENTS, INDEX_SERVICES, INDEX_CONFIGMAPS)


def plain(value: Any) -> Any:
    """A deep, plain-dict copy of a kopf body view (safe to keep and to read from another thread)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def slim(body: Mapping[str, Any]) -> dict[str, Any]:
    """The body without managedFields (they cost memory and nobody reads them)."""
    out = plain(body)
    out.get("metadata", {}).pop("managedFields", None)
    return out


def _snapshot(values: Iterable[Any]) -> list[Any]:
    for _ in range(5):  # the event loop may update an index while a handler thread reads it
        try:
            return list(values)
        except RuntimeError:
            time.sleep(0.001)
    return list(values)


@dataclass(frozen=True)
class Indexes:
    """The indexes kopf passes to every handler, with typed lookups."""

    tiers: Mapping[str, Any]
    policies: Mapping[str, Any]
    deployments: Mapping[ChildKey, Any]
    services: Mapping[ChildKey, Any]
    configmaps: Mapping[ChildKey, Any]

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Indexes:
        return cls(
            tiers=kwargs[INDEX_TIERS],
            policies=kwargs[INDEX_POLICIES],
            deployments=kwargs[INDEX_DEPLOYMENTS],
            services=kwargs[INDEX_SERVICES],
            configmaps=kwargs[INDEX_CONFIGMAPS],
        )

    def tier_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {b["metadata"]["name"]: b for b in _snapshot(self.tiers.get(namespace, ()))}

    def policy_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {b["metadata"]["name"]: b for b in _snapshot(self.policies.get(namespace, ()))}

    def child(self, kind: str, namespace: str, owner_kind: str, owner: str, name: str) -> dict[str, Any] | None:
        index = {"Deployment": self.deployments, "Service": self.services, "ConfigMap": self.configmaps}[kind]
        for body in _snapshot(index.get((namespace, owner_kind, owner), ())):
            if body["metadata"]["name"] == name:
                return dict(body)
        return None

    def children_of(self, namespace: str, owner_kind: str, owner: str) -> list[dict[str, Any]]:
        key = (namespace, owner_kind, owner)
        found: list[dict[str, Any]] = []
        for index in (self.deployments, self.services, self.configmaps):
            found += _snapshot(index.get(key, ()))
        return found


class KeyedLocks:
    """One lock per reconciled object, so a timer and an event never reconcile the same object at once."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, *key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class TTLCache:
    """A tiny time-bounded cache (namespace labels: read often, change rarely)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = load()
        with self._lock:
            self._items[key] = (now, value)
        return value


class PendingWrites:
    """Writes whose watch event has not come back yet, so a reconcile triggered meanwhile (by another event)
    does not repeat the same write from a stale index. Any watch event for the object clears its entry; the
    entry also expires, so a lost event never blocks a repair for long."""

    def __init__(self, expiry: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.expiry = expiry
        self.clock = clock
        self._items: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def wrote(self, key: tuple[str, str, str], digest: str) -> None:
        with self._lock:
            self._items[key] = (digest, self.clock())

    def waiting(self, key: tuple[str, str, str], digest: str) -> bool:
        """True when exactly this content was written for `key` and its event is still outstanding."""
        with self._lock:
            found = self._items.get(key)
        return found is not None and found[0] == digest and self.clock() - found[1] < self.expiry

    def observed(self, key: tuple[str, str, str]) -> None:
        """A watch event for `key` arrived: the indexes now reflect the write."""
        with self._lock:
            self._items.pop(key, None)


MANAGED_SELECTOR = {labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE}
