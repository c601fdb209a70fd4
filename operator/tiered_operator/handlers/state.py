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
INDEX_NAMESPACES = "residency_namespaces"
"""Registered by handlers/residency.py (the index's name is its function's name)."""
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
class IndexedRef:
    """One object an index holds: what it is, and which of our objects to reconcile if it turns out gone."""

    kind: str
    namespace: str
    name: str
    uid: str
    owner_kind: str
    owner: str


class Tombstones:
    """uids the indexes still hold although the API server no longer has the object.

    kopf drops an index entry only on a DELETED event. When a watch breaks (API server or etcd restart) and kopf
    re-lists, an object deleted in between never produces one, so the index keeps it forever: the operator would
    believe a deleted Deployment still exists and never recreate it. The index audit finds such entries and buries
    their uids here; every lookup through `Indexes` skips them. A recreated object has a new uid, so it is seen.
    """

    def __init__(self) -> None:
        self._uids: set[str] = set()
        self._lock = threading.Lock()

    def bury(self, uid: str) -> None:
        with self._lock:
            self._uids.add(uid)

    def __contains__(self, uid: object) -> bool:
        return uid in self._uids

    def alive(self, body: Mapping[str, Any]) -> bool:
        uid = (body.get("metadata") or {}).get("uid")
        return uid is None or uid not in self._uids

    def retain(self, indexed: Iterable[str]) -> None:
        """Forget uids no index holds any more (bounded memory)."""
        keep = set(indexed)
        with self._lock:
            self._uids &= keep

    def __len__(self) -> int:
        return len(self._uids)


GONE = Tombstones()
"""The process's tombstones (one operator process, one set of indexes)."""


def stale(indexed: Iterable[IndexedRef], live_uids: Mapping[str, set[str]]) -> list[IndexedRef]:
    """Indexed objects whose uid the API server's latest LIST of their kind did not return (candidates: an object
    created after the LIST began is also absent from it, so the caller confirms each one with a GET)."""
    return [ref for ref in indexed if ref.kind in live_uids and ref.uid not in live_uids[ref.kind]]


@dataclass(frozen=True)
class Indexes:
    """The indexes kopf passes to every handler, with typed lookups."""

    tiers: Mapping[str, Any]
    policies: Mapping[str, Any]
    deployments: Mapping[ChildKey, Any]
    services: Mapping[ChildKey, Any]
    configmaps: Mapping[ChildKey, Any]
    namespaces: Mapping[str, Any] | None = None
    """The residency handlers' index of namespace labels/annotations (`residency_namespaces`), when registered."""
    gone: Tombstones = GONE

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> Indexes:
        return cls(
            tiers=kwargs[INDEX_TIERS],
            policies=kwargs[INDEX_POLICIES],
            deployments=kwargs[INDEX_DEPLOYMENTS],
            services=kwargs[INDEX_SERVICES],
            configmaps=kwargs[INDEX_CONFIGMAPS],
            namespaces=kwargs.get(INDEX_NAMESPACES),
        )

    def namespace_metadata(self, namespace: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The namespace's residency labels and annotations from the watch, or None when not indexed (yet)."""
        if self.namespaces is None:
            return None
        for entry in _snapshot(self.namespaces.get(namespace, ())):
            return dict(entry.get("labels") or {}), dict(entry.get("annotations") or {})
        return None

    def tier_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {b["metadata"]["name"]: b for b in _snapshot(self.tiers.get(namespace, ())) if self.gone.alive(b)}

    def policy_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {b["metadata"]["name"]: b for b in _snapshot(self.policies.get(namespace, ())) if self.gone.alive(b)}

    def child(self, kind: str, namespace: str, owner_kind: str, owner: str, name: str) -> dict[str, Any] | None:
        index = {"Deployment": self.deployments, "Service": self.services, "ConfigMap": self.configmaps}[kind]
        for body in _snapshot(index.get((namespace, owner_kind, owner), ())):
            if body["metadata"]["name"] == name and self.gone.alive(body):
                return dict(body)
        return None

    def children_of(self, namespace: str, owner_kind: str, owner: str) -> list[dict[str, Any]]:
        key = (namespace, owner_kind, owner)
        found: list[dict[str, Any]] = []
        for index in (self.deployments, self.services, self.configmaps):
            found += [b for b in _snapshot(index.get(key, ())) if self.gone.alive(b)]
        return found

    def refs(self) -> list[IndexedRef]:
        """Every object the tier, policy and child indexes hold (tombstoned ones included)."""
        out: list[IndexedRef] = []
        for kind, index in (("Deployment", self.deployments), ("Service", self.services),
                            ("ConfigMap", self.configmaps)):  # fmt: skip
            for (namespace, owner_kind, owner), store in _snapshot(index.items()):
                for body in _snapshot(store):
                    meta = body["metadata"]
                    out.append(IndexedRef(kind, namespace, meta["name"], str(meta.get("uid")), owner_kind, owner))
        for kind, by_ns in ((labels.KIND_INFERENCE_TIER, self.tiers), (labels.KIND_ROUTING_POLICY, self.policies)):
            for namespace, store in _snapshot(by_ns.items()):
                for body in _snapshot(store):
                    meta = body["metadata"]
                    out.append(IndexedRef(kind, namespace, meta["name"], str(meta.get("uid")), kind, meta["name"]))
        return out


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
    entry also expires, so a lost event never blocks a repair for long. 60 s: with 1,000 tiers rolling out on a
    loaded machine, watch events came back more than 10 s (the former expiry) after the write, and every resync
    in between re-applied the same children (1.75 applies per child instead of 1)."""

    def __init__(self, expiry: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
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

    def outstanding(self, key: tuple[str, str, str]) -> bool:
        """True when any write for `key` still waits for its watch event (and has not expired)."""
        with self._lock:
            found = self._items.get(key)
        return found is not None and self.clock() - found[1] < self.expiry

    def observed(self, key: tuple[str, str, str]) -> None:
        """A watch event for `key` arrived: the indexes now reflect the write."""
        with self._lock:
            self._items.pop(key, None)


MANAGED_SELECTOR = {labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE}


def awaiting_finalizer(body: Mapping[str, Any]) -> bool:
    """True for a live object that does not carry our finalizer yet: its reconcile waits for the next event.

    kopf adds the finalizer (needed by the resync timers) with a JSON patch guarded by the resourceVersion, after
    the handlers of the object's first event ran. A status write in those handlers changes the resourceVersion,
    so the finalizer patch failed and was retried on every following event, each failure a request: 2-3 wasted
    patches per new object. Waiting for the finalizer patch's own event avoids them (the residency pass holds the
    object's condition until then too).
    """
    meta = body.get("metadata") or {}
    return labels.FINALIZER not in (meta.get("finalizers") or []) and not meta.get("deletionTimestamp")
