"""What a reconcile observes, read from kopf's in-memory indexes (fed by watches), not from API calls.

Reading children from indexes is what lets a periodic resync run for every object without a single request:
the watches already tell the operator what exists. Nothing here is module-global: the Reconciler (in kopf's
`memo`) owns one `Tombstones`, one `PendingWrites`, one `KeyedLocks`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tiered_operator import labels

ChildKey = tuple[str, str, str]
"""(namespace, owner kind, owner name)"""
NAMESPACE_OWNER = "Namespace"
"""The owner kind in a ChildKey for objects that serve a whole namespace (the base NetworkPolicy)."""

INDEX_TIERS = "tiered_tiers"
INDEX_POLICIES = "tiered_policies"
INDEX_DEPLOYMENTS = "tiered_deployments"
INDEX_SERVICES = "tiered_services"
INDEX_CONFIGMAPS = "tiered_configmaps"
INDEX_NETWORK_POLICIES = "tiered_network_policies"
INDEX_CILIUM_POLICIES = "tiered_cilium_policies"
INDEX_DISRUPTION_BUDGETS = "tiered_disruption_budgets"
INDEX_PODS = "tiered_pods"
INDEX_POD_EVENTS = "tiered_pod_events"
INDEX_NAMESPACES = "tiered_namespaces"
CHILD_INDEXES: Mapping[str, str] = MappingProxyType({
    "Deployment": INDEX_DEPLOYMENTS,
    "Service": INDEX_SERVICES,
    "ConfigMap": INDEX_CONFIGMAPS,
    "NetworkPolicy": INDEX_NETWORK_POLICIES,
    "CiliumNetworkPolicy": INDEX_CILIUM_POLICIES,
    "PodDisruptionBudget": INDEX_DISRUPTION_BUDGETS,
})
"""Kind of a child → the index holding it by owner (the index's name is its function's name)."""


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


def stale(indexed: Iterable[IndexedRef], live_uids: Mapping[str, set[str]]) -> list[IndexedRef]:
    """Indexed objects whose uid the API server's latest LIST of their kind did not return (candidates: an object
    created after the LIST began is also absent from it, so the caller confirms each one with a GET)."""
    return [ref for ref in indexed if ref.kind in live_uids and ref.uid not in live_uids[ref.kind]]


@dataclass(frozen=True)
class Indexes:
    """The indexes kopf passes to every handler, with typed lookups."""

    tiers: Mapping[tuple[str, str], Any]
    """(namespace, name) → the tier's body."""
    policies: Mapping[str, Any]
    """namespace → the bodies of its policies (a handful per namespace)."""
    children: Mapping[str, Mapping[ChildKey, Any]]
    """Kind → (namespace, owner kind, owner) → bodies."""
    gone: Tombstones
    pods: Mapping[ChildKey, Any] = field(default_factory=dict)
    """(namespace, owner kind, owner) → pod summaries (`reconcile.pods.pod_summary`)."""
    pod_events: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    """(namespace, pod) → Warning event summaries of our pods."""
    namespaces: Mapping[str, Any] | None = None
    """Namespace name → its residency labels and annotations."""

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], gone: Tombstones) -> Indexes:
        return cls(
            tiers=kwargs[INDEX_TIERS],
            policies=kwargs[INDEX_POLICIES],
            children={kind: kwargs[index] for kind, index in CHILD_INDEXES.items() if index in kwargs},
            gone=gone,
            pods=kwargs.get(INDEX_PODS, {}),
            pod_events=kwargs.get(INDEX_POD_EVENTS, {}),
            namespaces=kwargs.get(INDEX_NAMESPACES),
        )

    def namespace_metadata(self, namespace: str) -> tuple[dict[str, str], dict[str, str]] | None:
        """The namespace's residency labels and annotations from the watch, or None when not indexed (yet)."""
        if self.namespaces is None:
            return None
        for entry in _snapshot(self.namespaces.get(namespace, ())):
            return dict(entry.get("labels") or {}), dict(entry.get("annotations") or {})
        return None

    def namespace_names(self) -> list[str]:
        """Namespaces holding tiers or policies."""
        return sorted({*(ns for ns, _ in _snapshot(self.tiers.keys())), *_snapshot(self.policies.keys())})

    def tier_body(self, namespace: str, name: str) -> dict[str, Any] | None:
        for body in _snapshot(self.tiers.get((namespace, name), ())):
            if self.gone.alive(body):
                return dict(body)
        return None

    def tier_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every tier of the namespace (a scan of the index: for namespace-wide work, not per reconcile)."""
        out = {}
        for (ns, name), store in _snapshot(self.tiers.items()):
            if ns == namespace:
                for body in _snapshot(store):
                    if self.gone.alive(body):
                        out[name] = body
        return out

    def has_local_tier(self, namespace: str) -> bool:
        """Whether the namespace holds a live local tier (stops at the first one)."""
        for (ns, _name), store in _snapshot(self.tiers.items()):
            if ns != namespace:
                continue
            for body in _snapshot(store):
                meta = body.get("metadata") or {}
                if (body.get("spec") or {}).get("backend") == "local" and not meta.get("deletionTimestamp") \
                        and self.gone.alive(body):  # fmt: skip
                    return True
        return False

    def policy_bodies(self, namespace: str) -> dict[str, dict[str, Any]]:
        return {b["metadata"]["name"]: b for b in _snapshot(self.policies.get(namespace, ())) if self.gone.alive(b)}

    def owned(self, kind: str, namespace: str, owner_kind: str, owner: str) -> dict[str, dict[str, Any]]:
        """name → body of the `kind` children of one owner."""
        index = self.children.get(kind, {})
        return {
            b["metadata"]["name"]: dict(b)
            for b in _snapshot(index.get((namespace, owner_kind, owner), ()))
            if self.gone.alive(b)
        }

    def child(self, kind: str, namespace: str, owner_kind: str, owner: str, name: str) -> dict[str, Any] | None:
        return self.owned(kind, namespace, owner_kind, owner).get(name)

    def pods_of(self, namespace: str, owner_kind: str, owner: str) -> list[dict[str, Any]]:
        return [dict(p) for p in _snapshot(self.pods.get((namespace, owner_kind, owner), ()))]

    def events_of(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        return [dict(e) for e in _snapshot(self.pod_events.get((namespace, pod), ()))]

    def refs(self) -> list[IndexedRef]:
        """Every object the tier, policy and child indexes hold (tombstoned ones included)."""
        out: list[IndexedRef] = []
        for kind, children in sorted(self.children.items()):
            for (namespace, owner_kind, owner), store in _snapshot(children.items()):
                for body in _snapshot(store):
                    meta = body["metadata"]
                    out.append(IndexedRef(kind, namespace, meta["name"], str(meta.get("uid")), owner_kind, owner))
        ours: tuple[tuple[str, Mapping[Any, Any]], ...] = (
            (labels.KIND_INFERENCE_TIER, self.tiers), (labels.KIND_ROUTING_POLICY, self.policies))  # fmt: skip
        for kind, index in ours:
            for _key, store in _snapshot(index.items()):
                for body in _snapshot(store):
                    meta = body["metadata"]
                    namespace = str(meta["namespace"])
                    out.append(IndexedRef(kind, namespace, meta["name"], str(meta.get("uid")), kind, meta["name"]))
        return out


class KeyedLocks:
    """One lock per reconciled object, so a resync and an event never reconcile the same object at once."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, *key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self, *key: str) -> None:
        with self._guard:
            self._locks.pop(key, None)


def _at_least(seen: Any, written: Any) -> bool:
    """Whether resourceVersion `seen` includes the write that produced `written`.

    resourceVersions are opaque, but the API server issues them from etcd's increasing revision; when both are
    numbers they are compared as such, otherwise only equality counts.
    """
    if seen is None or written is None:
        return False
    if seen == written:
        return True
    return str(seen).isdigit() and str(written).isdigit() and int(seen) >= int(written)


@dataclass
class _Pending:
    digest: str
    at: float
    written: str | None = None
    """The resourceVersion the write produced (known once the request returned)."""
    seen: str | None = None
    """The newest resourceVersion a watch event showed since the write was sent."""
    owner: tuple[str, str, str] | None = None
    """(namespace, owner kind, owner) of the object written."""


class PendingWrites:
    """Writes the indexes do not show yet, so a reconcile triggered meanwhile (by another event) does not repeat
    the same write from a stale index, and a tier's status waits until its children are seen as written.

    A write is settled when a watch event, or the index, shows the object at (or after) the resourceVersion the
    write produced: an older event (the object's previous version arriving late) settles nothing, and a write
    that changed nothing (same resourceVersion) settles at once. The entry also expires, so a lost event never
    blocks a repair for long. 60 s: with 1,000 tiers rolling out on a loaded machine, watch events came back
    more than 10 s after the write."""

    def __init__(self, expiry: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.expiry = expiry
        self.clock = clock
        self._items: dict[tuple[str, str, str], _Pending] = {}
        self._owned: dict[tuple[str, tuple[str, str, str]], set[tuple[str, str, str]]] = {}
        """(kind, owner) -> keys of its pending creates/updates: `created` reads one owner's, not every entry."""
        self._lock = threading.Lock()

    def _drop(self, key: tuple[str, str, str]) -> None:
        """Remove `key`'s entry (the lock held)."""
        item = self._items.pop(key, None)
        if item is not None and item.owner is not None:
            keys = self._owned.get((key[0], item.owner))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._owned[(key[0], item.owner)]

    def wrote(self, key: tuple[str, str, str], digest: str, owner: tuple[str, str, str] | None = None) -> None:
        """Recorded before the request: its watch event may be handled before the request returns."""
        with self._lock:
            self._drop(key)
            self._items[key] = _Pending(digest, self.clock(), owner=None if digest == DELETED else owner)
            if owner is not None and digest != DELETED:
                self._owned.setdefault((key[0], owner), set()).add(key)

    def created(self, kind: str, owner: tuple[str, str, str]) -> list[str]:
        """Names of `kind` objects written for `owner` (not deletions) whose watch event has not come yet: they
        exist although the index does not show them (a watch started late, e.g. for a CRD that just appeared)."""
        now = self.clock()
        with self._lock:
            for key in [k for k in self._owned.get((kind, owner), ()) if now - self._items[k].at >= self.expiry]:
                self._drop(key)
            return sorted(key[2] for key in self._owned.get((kind, owner), ()))

    def confirmed(self, key: tuple[str, str, str], version: str | None) -> None:
        """The request returned: `version` is the resourceVersion it produced."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            item.written = version
            if _at_least(item.seen, version):
                self._drop(key)

    def observed(self, key: tuple[str, str, str], version: str | None, deleted: bool = False) -> None:
        """A watch event for `key` showed the object at `version` (or its deletion)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return
            if (deleted and item.digest == DELETED) or _at_least(version, item.written):
                self._drop(key)
            elif item.seen is None or _at_least(version, item.seen):
                item.seen = version

    def _live(self, key: tuple[str, str, str], indexed: Mapping[str, Any] | None) -> _Pending | None:
        """The entry for `key` unless expired or shown by the index (`indexed`: the object as indexed now)."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            version = None if indexed is None else (indexed.get("metadata") or {}).get("resourceVersion")
            done = (item.digest == DELETED and indexed is None) or _at_least(version, item.written)
            if done or self.clock() - item.at >= self.expiry:
                self._drop(key)
                return None
            return item

    def waiting(self, key: tuple[str, str, str], digest: str, indexed: Mapping[str, Any] | None = None) -> bool:
        """True when exactly this content was written for `key` and the index does not show it yet."""
        item = self._live(key, indexed)
        return item is not None and item.digest == digest

    def outstanding(self, key: tuple[str, str, str], indexed: Mapping[str, Any] | None = None) -> bool:
        """True when a write for `key` is not shown by the index yet (and has not expired)."""
        return self._live(key, indexed) is not None


DELETED = "<deleted>"
"""PendingWrites digest of a delete."""

MANAGED_SELECTOR: Mapping[str, str] = MappingProxyType({labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE})


def autoscaled(spec: Mapping[str, Any], **_: Any) -> bool:
    """Whether a tier's spec asks for the autoscaler (the autoscale daemon's filter)."""
    return spec.get("backend") == "local" and spec.get("autoscaling") is not None and spec.get("slo") is not None


def finalized_by_kopf(plural: str, body: Mapping[str, Any]) -> bool:
    """Whether kopf puts its finalizer on this object: it does for objects with a daemon (the autoscaler on an
    autoscaled tier, the budget loop on every policy), and for nothing else."""
    return plural == labels.PLURAL_ROUTING_POLICIES or autoscaled(body.get("spec") or {})


def awaiting_finalizer(plural: str, body: Mapping[str, Any]) -> bool:
    """True for a live object that will get kopf's finalizer but does not carry it yet: its reconcile waits for
    the next event.

    kopf adds the finalizer with a JSON patch guarded by the resourceVersion, after the handlers of the object's
    first event ran. A status write in those handlers changes the resourceVersion, so the finalizer patch failed
    and was retried on every following event, each failure a request. Waiting for the finalizer patch's own
    event avoids them.
    """
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp") or labels.FINALIZER in (meta.get("finalizers") or []):
        return False
    return finalized_by_kopf(plural, body)
