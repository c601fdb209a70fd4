"""Observe → compute → apply → report, for one InferenceTier, one RoutingPolicy or one namespace's network.

The kopf handlers only decide *when* to reconcile; this module decides *what* to do, calling the pure builders in
`tiered_operator.reconcile` and `tiered_operator.residency` and writing through `tiered_operator.kube` only where
observed and desired differ. Everything it observes comes from kopf's indexes; everything it remembers lives in
the one `Reconciler` instance (kopf's `memo`), never in module globals.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cachetools
from pydantic import ValidationError

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.handlers.state import (
    DELETED,
    NAMESPACE_OWNER,
    ChildKey,
    IndexedRef,
    Indexes,
    KeyedLocks,
    PendingWrites,
    Tombstones,
    stale,
)
from tiered_operator.kube import Kube
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.compare import APPLIED_HASH, canonical_json, needs_apply, with_applied_hash
from tiered_operator.reconcile.conditions import find, now_rfc3339, status_differs, transitions
from tiered_operator.reconcile.deployment import RouterSidecar, UnsupportedSpec, build_deployment
from tiered_operator.reconcile.gateway import (
    build_gateway_deployment,
    build_gateway_disruption_budget,
    build_gateway_service,
    gateway_endpoint,
    is_gateway,
)
from tiered_operator.reconcile.pods import pod_problem
from tiered_operator.reconcile.router_config import (
    CompiledPolicy,
    NamespacePolicy,
    build_policy_configmap,
    build_router_configmap,
    compile_policy,
    policies_using,
    router_sidecar,
    tier_router_config,
)
from tiered_operator.reconcile.service import build_service
from tiered_operator.reconcile.status import (
    POLICY_STATUS_KEYS,
    TIER_STATUS_KEYS,
    GatewayObservation,
    TierObservation,
    policy_status,
    secret_problem,
    tier_status,
)
from tiered_operator.residency.cilium import CILIUM_GROUP, CILIUM_KIND, CILIUM_VERSION, build_cilium_policies
from tiered_operator.residency.network import (
    BASE_POLICY_NAME,
    EgressSubject,
    build_base_network_policy,
    build_network_policies,
    egress_condition,
)
from tiered_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

ParsedT = TypeVar("ParsedT", InferenceTier, RoutingPolicy)
WriteKey = tuple[str, str, str]
"""(kind, namespace, name) of a child."""
Written = dict[WriteKey, ChildKey]
GATEWAY_KINDS = ("Deployment", "Service", "PodDisruptionBudget")
"""The children a reconcile may have written, with the owner key their index entries live under."""
PROGRESS_REASONS = frozenset(
    {"DeploymentMissing", "RolloutInProgress", "ModelLoading", "ConfigPending", "ChildMissing", "TierNotFound"}
)
"""Ready=False reasons of normal progress: reaching Ready=True from them is not news (no Event)."""


@dataclass
class Namespace:
    """Parsed tiers and policies of one namespace (invalid objects are skipped and logged)."""

    tiers: dict[str, InferenceTier] = field(default_factory=dict)
    tier_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, RoutingPolicy] = field(default_factory=dict)
    policy_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)


def _caught_up(seen: Any, written: Any) -> bool:
    """Whether the watched object (resourceVersion `seen`) already includes our write (`written`).

    resourceVersions are opaque, but the API server issues them from etcd's increasing revision; when both are
    numbers they are compared as such, otherwise only equality counts.
    """
    if written is None or seen == written:
        return True
    if str(seen).isdigit() and str(written).isdigit():
        return int(seen) >= int(written)
    return False


def local_children(tier: str) -> tuple[tuple[str, str], ...]:
    """(kind, name) of the children every local tier owns."""
    return (
        ("Deployment", naming.deployment_name(tier)),
        ("Service", naming.service_name(tier)),
        ("ConfigMap", naming.router_configmap_name(tier)),
    )


def announce_ready(before: Mapping[str, Any] | None, after: str) -> bool:
    """Whether a Ready change deserves an Event: readiness lost, or regained after a failure. A tier or policy
    becoming ready for the first time, or after a rollout, is in its status; an Event would be a write per object
    for nothing."""
    old = None if before is None else str(before.get("status"))
    if old == after or old is None:
        return False
    if old == "True":
        return True
    return after == "True" and str((before or {}).get("reason")) not in PROGRESS_REASONS


def related_tiers(tier: str, policies: Iterable[RoutingPolicy]) -> list[str]:
    """The tier and every tier of the policies that list it: what its reconcile compiles."""
    out = [tier]
    for policy in policies:
        if tier in policy.spec.tiers:
            out += policy.spec.tiers
    return out


def outranked(peering: Mapping[str, Any] | None, priority: int, now: float) -> bool:
    """Whether another live kopf peer has a higher priority than ours, i.e. this replica is paused.

    kopf pauses its own watchers and daemons by the same rule (kopf._core.engines.peering); the resync loop is
    ours, so it asks the peering object itself. `peering` is the object's status: peer id → {priority, lastseen,
    lifetime}; our own entry has our priority and does not outrank us.
    """
    for info in (peering or {}).values():
        if not isinstance(info, Mapping) or int(info.get("priority") or 0) <= priority:
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info.get("lastseen")))
        except ValueError:
            continue
        if seen.tzinfo is None:
            seen = seen.replace(tzinfo=datetime.UTC)
        if seen.timestamp() + float(info.get("lifetime") or 60) > now:
            return True
    return False


def _live(body: Mapping[str, Any]) -> bool:
    return not (body.get("metadata") or {}).get("deletionTimestamp")


def _problem_key(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a pod can change its tier's status: readiness, scheduling, container waiting states."""
    return (
        pod.get("ready"),
        pod.get("phase"),
        tuple(sorted((pod.get("scheduled") or {}).items())),
        tuple(
            (c.get("name"), c.get("ready"), c.get("running"), str(c.get("waiting")))
            for c in pod.get("containers") or []
        ),
    )


class Reconciler:
    """Holds the operator's collaborators and memory; one instance per operator process."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.replica_kube = kube.as_manager(labels.AUTOSCALER_FIELD_MANAGER)
        self.locks = KeyedLocks()
        self.pending = PendingWrites()
        self.gone = Tombstones()
        self._cache_lock = threading.Lock()
        self._ns_metadata: cachetools.TTLCache[str, tuple[dict[str, str], dict[str, str]]] = cachetools.TTLCache(
            1024, 2.0
        )
        self._parsed: dict[tuple[str, str], tuple[str, Any]] = {}
        self._written: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {}
        self.policy_tiers: dict[tuple[str, str], set[str]] = {}
        """Tiers each policy listed when last seen, so a tier dropped from a policy gets its config updated."""
        self.tier_generations: dict[tuple[str, str], tuple[int, str]] = {}
        """(generation, backend) of each tier when last seen: a change recompiles its dependents."""
        self.namespace_fingerprints: dict[str, str] = {}
        """Each namespace's residency fingerprint when last seen: a relabel re-evaluates the namespace."""
        self.pod_states: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.child_states: dict[WriteKey, tuple[Any, str]] = {}
        """(generation, labels and annotations) of each child when last seen: drift or only status."""
        self._render_errors: dict[str, tuple[int, str | None]] = {}
        """uid → (generation, why the tier cannot be rendered) from the last converge."""
        self._base_manifests: dict[str, dict[str, Any]] = {}
        """namespace → its base NetworkPolicy with the applied hash (the same every time)."""
        self.reconciles: Counter[str] = Counter()
        """Reconciles run, by kind (the scale benchmark divides API requests by them)."""
        self._audit_lock = threading.Lock()
        self._last_audit = time.monotonic()
        self._last_reconciled: dict[tuple[str, str, str], float] = {}

    def indexes(self, kwargs: Mapping[str, Any]) -> Indexes:
        """The indexes of a handler call, read through this process's tombstones."""
        return Indexes.from_kwargs(kwargs, self.gone)

    # -- observation -------------------------------------------------------------------------------------------

    def namespace_policy(self, namespace: str, idx: Indexes | None = None) -> NamespacePolicy:
        """From the namespace watch's index (no request); a GET, cached 2 s, for a namespace not indexed yet."""
        found = idx.namespace_metadata(namespace) if idx is not None else None
        if found is None:
            with self._cache_lock:
                found = self._ns_metadata.get(namespace)
            if found is None:
                found = self.kube.namespace_metadata(namespace)
                with self._cache_lock:
                    self._ns_metadata[namespace] = found
        ns_labels, ns_annotations = found
        return NamespacePolicy.from_labels(ns_labels, ns_annotations)

    def _parse(self, model: type[ParsedT], body: Mapping[str, Any]) -> ParsedT | None:
        """Parse a body once per resourceVersion (a namespace with 200 tiers is re-read on every reconcile)."""
        meta = body.get("metadata") or {}
        key = (model.__name__, str(meta.get("uid")))
        version = str(meta.get("resourceVersion"))
        with self._cache_lock:
            hit = self._parsed.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        try:
            parsed = model.model_validate(dict(body))
        except ValidationError as exc:
            log.warning("%s %s/%s does not parse: %s", model.__name__, meta.get("namespace"), meta.get("name"), exc)
            return None
        with self._cache_lock:
            self._parsed[key] = (version, parsed)
        return parsed

    def forget(self, uid: str, plural: str, namespace: str, name: str) -> None:
        """Drop what is remembered about a deleted object."""
        with self._cache_lock:
            for model in (InferenceTier, RoutingPolicy):
                self._parsed.pop((model.__name__, uid), None)
        self._written.pop((plural, namespace, name), None)
        self._last_reconciled.pop((plural, namespace, name), None)
        if plural == labels.PLURAL_INFERENCE_TIERS:
            self.tier_generations.pop((namespace, name), None)
            self._render_errors.pop(uid, None)

    def load(
        self,
        idx: Indexes,
        namespace: str,
        tiers: Callable[[Mapping[str, RoutingPolicy]], Iterable[str]] | None = None,
    ) -> Namespace:
        """The namespace's policies, and its tiers: all of them, or only those `tiers(policies)` names (a
        reconcile of one tier needs that tier and the tiers of the policies listing it, not 1,000 others)."""
        out = Namespace()
        for name, body in idx.policy_bodies(namespace).items():
            policy = self._parse(RoutingPolicy, body) if _live(body) else None
            if policy is not None:
                out.policies[name] = policy
                out.policy_bodies[name] = body
        if tiers is None:
            bodies = idx.tier_bodies(namespace)
        else:
            found = ((t, idx.tier_body(namespace, t)) for t in dict.fromkeys(tiers(out.policies)))
            bodies = {t: b for t, b in found if b is not None}
        for name, tier_body in bodies.items():
            tier = self._parse(InferenceTier, tier_body) if _live(tier_body) else None
            if tier is not None:
                out.tiers[name] = tier
                out.tier_bodies[name] = tier_body
        return out

    # -- apply -------------------------------------------------------------------------------------------------

    def _converge(
        self,
        owner_body: Mapping[str, Any] | None,
        desired: Mapping[str, Any],
        observed: Any,
        owner: ChildKey | None = None,
    ) -> None:
        """Apply `desired` only when the observed child is absent, edited, or outdated."""
        hashed = APPLIED_HASH in ((desired.get("metadata") or {}).get("annotations") or {})
        manifest = dict(desired) if hashed else with_applied_hash(desired)
        if not needs_apply(manifest, observed):
            return
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        key = (kind, manifest["metadata"]["namespace"], name)
        digest = manifest["metadata"]["annotations"][APPLIED_HASH]
        if self.pending.waiting(key, digest, observed):
            return  # applied a moment ago; the watch event that updates our view has not arrived yet
        if observed is None:
            reason, message = "Created", f"created {kind} {name}"
        elif (observed.get("metadata") or {}).get("annotations", {}).get(APPLIED_HASH) == digest:
            reason, message = "DriftRepaired", f"restored {kind} {name} after an out-of-band change"
        else:
            reason, message = "Updated", f"applied the new desired state of {kind} {name}"
        # Recorded before the request: its watch event may be handled (and clear the entry) before apply returns.
        self.pending.wrote(key, digest, owner)
        try:
            self.pending.confirmed(key, self.kube.apply(manifest, why=reason))
        except Exception:
            self.pending.confirmed(key, None)
            self.pending.observed(key, None, deleted=True)
            raise
        # Events for what deserves attention: a repaired drift, a new pod template. A creation, or a new router
        # config (hot-reloaded; the policy's status says it), is a write per object for nothing.
        if owner_body is not None and (reason == "DriftRepaired" or (reason == "Updated" and kind == "Deployment")):
            self.kube.event(owner_body, reason, message)

    def _delete(self, kind: str, namespace: str, name: str, why: str, indexed: Mapping[str, Any] | None) -> None:
        key = (kind, namespace, name)
        if self.pending.waiting(key, DELETED, indexed):
            return  # deleted a moment ago; its DELETED event has not arrived yet
        self.pending.wrote(key, DELETED)
        try:
            self.kube.delete(kind, namespace, name, why)
        except Exception:
            self.pending.observed(key, None, deleted=True)
            raise

    def _converge_set(
        self,
        owner: ChildKey,
        owner_body: Mapping[str, Any],
        kind: str,
        desired: list[dict[str, Any]],
        observed: Mapping[str, Mapping[str, Any]],
        why: str,
    ) -> Written:
        """Apply each desired object that differs; delete the owner's objects of `kind` no longer desired.
        Returns every object involved (for the outstanding-write check)."""
        written: Written = {}
        wanted = {d["metadata"]["name"]: d for d in desired}
        for name, manifest in wanted.items():
            self._converge(owner_body, manifest, observed.get(name), owner)
            written[(kind, owner[0], name)] = owner
        # Also what we created a moment ago that the index does not show yet (its watch may have started late).
        existing = {**{n: {} for n in self.pending.created(kind, owner)}, **observed}
        for name, body in existing.items():
            if name not in wanted:
                self._delete(kind, owner[0], name, why, body or None)
                written[(kind, owner[0], name)] = owner
        return written

    def own_status_echo(self, plural: str, body: Mapping[str, Any]) -> bool:
        """Whether this watch event only shows our own last status write (nothing new to reconcile)."""
        meta = body.get("metadata") or {}
        written = self._written.get((plural, str(meta.get("namespace")), str(meta.get("name"))))
        return written is not None and written[0] is not None and written[0] == meta.get("resourceVersion")

    def child_changed(self, kind: str, body: Mapping[str, Any]) -> bool:
        """Whether a child's event may show drift (its spec, labels or annotations changed since last seen);
        False for a status-only update (a Deployment's pods progressing), which needs a report, not a converge."""
        meta = body.get("metadata") or {}
        key = (kind, str(meta.get("namespace")), str(meta.get("name")))
        seen = (meta.get("generation"), canonical_json([meta.get("labels"), meta.get("annotations")]))
        before = self.child_states.get(key)
        self.child_states[key] = seen
        return kind != "Deployment" or before != seen

    def forget_child(self, kind: str, namespace: str, name: str) -> None:
        self.child_states.pop((kind, namespace, name), None)

    def current_status(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """The stored status, or what we wrote on top of it when the index has not caught up with that write.

        Without this, a reconcile triggered by another event right after a status write would compare against
        the old status, write the same slice again and post the same Event twice.
        """
        meta = body["metadata"]
        written = self._written.get((plural, meta["namespace"], meta["name"]))
        if written is not None and not _caught_up(meta.get("resourceVersion"), written[0]):
            return written[1]
        return dict(body.get("status") or {})

    def _report(self, plural: str, body: Mapping[str, Any], desired: dict[str, Any], owned: frozenset[str]) -> None:
        existing = self.current_status(plural, body)
        if not status_differs(existing, desired, owned):
            return
        meta = body["metadata"]
        version = self.kube.apply_status(plural, str(body["kind"]), meta["namespace"], meta["name"], desired)
        ours = {c["type"] for c in desired.get("conditions") or []}
        merged = {k: v for k, v in existing.items() if k not in owned}
        merged.update(desired)
        merged["conditions"] = [
            *(desired.get("conditions") or []),
            *(c for c in existing.get("conditions") or [] if c.get("type") not in ours),
        ]
        self._written[(plural, meta["namespace"], meta["name"])] = (version, merged)
        for cond in transitions(existing.get("conditions"), desired.get("conditions") or []):
            self._announce(body, existing, cond)

    def _announce(self, body: Mapping[str, Any], existing: Mapping[str, Any], cond: Mapping[str, Any]) -> None:
        """An Event for a transition worth a user's attention: Ready lost or regained after a failure,
        TiersResolved failing or recovering, Stalled=True."""
        type_, status = cond["type"], cond["status"]
        old = find(existing.get("conditions"), type_)
        if type_ == "Ready":
            if not announce_ready(old, str(status)):
                return
            warn = status != "True" and str(cond.get("reason")) not in PROGRESS_REASONS
        elif type_ == "TiersResolved" and (status == "False" or old is not None):
            warn = status == "False"
        elif type_ == "Stalled" and status == "True":
            warn = True
        else:
            return
        self.kube.event(
            body, str(cond["reason"]), f"{type_}={status}: {cond.get('message', '')}", "Warning" if warn else "Normal"
        )

    def _outstanding(self, idx: Indexes, written: Written) -> bool:
        """Whether a child just written is not shown by the indexes yet (its watch event will reconcile again).

        A CiliumNetworkPolicy never holds the status back: kopf watches that kind only once its discovery lists
        it, and kopf rediscovers only on CRD events, which can all arrive before the API server's discovery serves
        the new group (seen here: the CRD Established, the policy created, and kopf still reporting the kind
        unresolved). Its event may then never come; the level-triggered resync repairs such policies instead."""
        return any(
            self.pending.outstanding(key, idx.child(key[0], owner[0], owner[1], owner[2], key[2]))
            for key, owner in written.items()
            if key[0] != CILIUM_KIND
        )

    # -- the namespace's network -----------------------------------------------------------------------------

    def _base_network(self, idx: Indexes, namespace: str, wanted: bool) -> Written:
        """Create or repair the namespace's `tiered-base` NetworkPolicy, or delete it when nothing needs it."""
        owner = (namespace, NAMESPACE_OWNER, namespace)
        observed = idx.child("NetworkPolicy", *owner, BASE_POLICY_NAME)
        if wanted:
            desired = self._base_manifests.get(namespace)
            if desired is None:
                desired = self._base_manifests[namespace] = with_applied_hash(
                    build_base_network_policy(namespace, self.settings.network))  # fmt: skip
            self._converge(None, desired, observed)
        elif observed is not None:
            self._delete("NetworkPolicy", namespace, BASE_POLICY_NAME, "no pods of ours left in the namespace",
                         observed)  # fmt: skip
        return {("NetworkPolicy", namespace, BASE_POLICY_NAME): owner}

    def reconcile_namespace_network(self, idx: Indexes, namespace: str) -> None:
        """The base NetworkPolicy exists exactly while the namespace holds a local tier or a gateway router."""
        with self.locks.get(namespace, "network"):
            self.reconciles["network"] += 1
            self._base_network(idx, namespace, idx.has_local_tier(namespace) or self._has_gateway(idx, namespace))

    def _has_gateway(self, idx: Indexes, namespace: str) -> bool:
        """Whether a live policy of the namespace runs a gateway router."""
        for body in idx.policy_bodies(namespace).values():
            policy = self._parse(RoutingPolicy, body) if _live(body) else None
            if policy is not None and is_gateway(policy):
                return True
        return False

    def _cilium(self) -> bool:
        return self.kube.served(CILIUM_GROUP, CILIUM_VERSION, CILIUM_KIND)

    def _egress(
        self,
        idx: Indexes,
        owner_body: Mapping[str, Any],
        subject: EgressSubject,
        nsp: NamespacePolicy,
        clouds: list[InferenceTier],
        cilium: bool,
    ) -> Written:
        """The cloud egress allowances of `subject`'s pods (plain, and FQDN where Cilium is served)."""
        why = f"namespace residency {nsp.policy.fingerprint()}"
        owner = (subject.namespace, subject.kind, subject.name)
        allowances = build_network_policies(subject, nsp.policy, clouds)
        written = self._converge_set(owner, owner_body, "NetworkPolicy", allowances,
                                     idx.owned("NetworkPolicy", *owner), why)  # fmt: skip
        if cilium:
            fqdn = build_cilium_policies(subject, nsp.policy, clouds, self.settings.network)
            written |= self._converge_set(owner, owner_body, "CiliumNetworkPolicy", fqdn,
                                          idx.owned("CiliumNetworkPolicy", *owner), why)  # fmt: skip
        return written

    # -- InferenceTier -----------------------------------------------------------------------------------------

    def reconcile_tier(self, idx: Indexes, namespace: str, name: str, converge: bool = True) -> None:
        """Converge the tier's children (unless `converge` is False: a pod changed, only status may), then
        write its status."""
        with self.locks.get(namespace, "tier", name):
            self.reconciles["tier"] += 1
            self._last_reconciled[(labels.PLURAL_INFERENCE_TIERS, namespace, name)] = time.monotonic()
            ns = self.load(idx, namespace, lambda policies: related_tiers(name, policies.values()))
            tier = ns.tiers.get(name)
            if tier is None:
                return
            body = ns.tier_bodies[name]
            nsp = self.namespace_policy(namespace, idx)
            cilium = self._cilium()
            kind = labels.KIND_INFERENCE_TIER
            observed = {k: idx.child(k, namespace, kind, name, n) for k, n in local_children(name)}
            if tier.spec.cloud is not None:
                obs = self._converge_cloud(idx, tier, body, ns, observed, nsp, cilium, converge)
            else:
                written, obs = self._converge_local(idx, tier, body, ns, observed, nsp, cilium, converge)
                if self._outstanding(idx, written):
                    return  # a child was just written: its watch event reconciles again and reports what it shows
            existing = self.current_status(labels.PLURAL_INFERENCE_TIERS, body)
            status = tier_status(tier, obs, existing, self.settings, now_rfc3339())
            self._report(labels.PLURAL_INFERENCE_TIERS, body, status, TIER_STATUS_KEYS)

    def _converge_cloud(
        self,
        idx: Indexes,
        tier: InferenceTier,
        body: Mapping[str, Any],
        ns: Namespace,
        observed: Mapping[str, Any],
        nsp: NamespacePolicy,
        cilium: bool,
        converge: bool,
    ) -> TierObservation:
        meta = tier.metadata
        name = meta.name or ""
        if converge:  # a tier switched from local to cloud keeps none of its local children
            for kind, child in observed.items():
                if child is not None:
                    self._delete(kind, meta.namespace or "", child["metadata"]["name"], "tier is now a cloud tier",
                                 child)  # fmt: skip
            self._egress(idx, body, EgressSubject.for_tier(tier), nsp, [], cilium)
        assert tier.spec.cloud is not None
        ref = tier.spec.cloud.api_key_secret_ref
        secret = self.kube.get_secret(meta.namespace or "", ref.name)
        callers = sorted(
            {
                t
                for p in policies_using(name, ns.policies.values())
                for t in p.spec.tiers
                if t in ns.tiers and ns.tiers[t].spec.backend == "local"
            }
        )
        egress = egress_condition(tier, nsp.policy, [], callers, cilium)
        return TierObservation(secret_problem=secret_problem(ref, secret), namespace=nsp, egress=egress)

    def _converge_local(
        self,
        idx: Indexes,
        tier: InferenceTier,
        body: Mapping[str, Any],
        ns: Namespace,
        observed: Mapping[str, Any],
        nsp: NamespacePolicy,
        cilium: bool,
        converge: bool,
    ) -> tuple[Written, TierObservation]:
        name = tier.metadata.name or ""
        namespace = tier.metadata.namespace or ""
        using = policies_using(name, ns.policies.values())
        clouds = list(
            {
                t: ns.tiers[t]
                for p in using
                for t in p.spec.tiers
                if t in ns.tiers and ns.tiers[t].spec.backend == "cloud"
            }.values()
        )
        owner = (namespace, labels.KIND_INFERENCE_TIER, name)
        written: Written = {(k, namespace, n): owner for k, n in local_children(name)}
        render_error = None
        if converge:
            written |= self._base_network(idx, namespace, True)
            written |= self._egress(idx, body, EgressSubject.for_tier(tier), nsp, clouds, cilium)
            compiled = [compile_policy(p, ns.tiers, nsp, self.settings) for p in using]
            router = tier_router_config(tier, compiled, using, ns.tiers, nsp, self.settings)
            self._converge(body, build_router_configmap(tier, router), observed["ConfigMap"])
            self._converge(body, build_service(tier, self.settings), observed["Service"])
            try:
                self._converge(body, build_deployment(tier, router.sidecar, self.settings), observed["Deployment"])
                self._sync_replicas(tier, observed["Deployment"])
            except UnsupportedSpec as exc:
                render_error = str(exc)
            self._render_errors[tier.metadata.uid or ""] = (int(tier.metadata.generation or 0), render_error)
        else:
            render_error = self._render_error(tier)
        pods = idx.pods_of(namespace, labels.KIND_INFERENCE_TIER, name)
        events = {str(p["metadata"]["name"]): idx.events_of(namespace, str(p["metadata"]["name"])) for p in pods}
        obs = TierObservation(
            deployment=observed["Deployment"],
            service=observed["Service"],
            configmap=observed["ConfigMap"],
            render_error=render_error,
            namespace=nsp,
            pod_problem=pod_problem(pods, events),
            egress=egress_condition(tier, nsp.policy, clouds, [], cilium),
        )
        return written, obs

    def _render_error(self, tier: InferenceTier) -> str | None:
        """Why the tier cannot be rendered, as its last converge found (rendered again if its spec changed)."""
        known = self._render_errors.get(tier.metadata.uid or "")
        if known is not None and known[0] == int(tier.metadata.generation or 0):
            return known[1]
        try:
            build_deployment(tier, RouterSidecar(), self.settings)
        except UnsupportedSpec as exc:
            return str(exc)
        return None

    def _sync_replicas(self, tier: InferenceTier, deployment: Mapping[str, Any] | None) -> None:
        """Without autoscaling, `spec.replicas` of the tier (kubectl scale itier) is the Deployment's scale."""
        if tier.spec.autoscaling is not None:
            return  # the autoscaler owns replicas
        current = None if deployment is None else (deployment.get("spec") or {}).get("replicas", 1)
        want = tier.spec.replicas
        if deployment is None and want == 1:
            return  # a new Deployment defaults to 1
        if current != want:
            name = tier.metadata.name or ""
            self.replica_kube.scale_deployment(tier.metadata.namespace or "", naming.deployment_name(name), want)

    # -- RoutingPolicy -----------------------------------------------------------------------------------------

    def reconcile_policy(self, idx: Indexes, namespace: str, name: str) -> CompiledPolicy | None:
        """Converge the policy's compiled config (and in gateway mode its router), then write its status."""
        with self.locks.get(namespace, "policy", name):
            self.reconciles["policy"] += 1
            self._last_reconciled[(labels.PLURAL_ROUTING_POLICIES, namespace, name)] = time.monotonic()
            ns = self.load(idx, namespace, lambda policies: policies[name].spec.tiers if name in policies else ())
            policy = ns.policies.get(name)
            if policy is None:
                return None
            body = ns.policy_bodies[name]
            nsp = self.namespace_policy(namespace, idx)
            compiled = compile_policy(policy, ns.tiers, nsp, self.settings)
            owner = (namespace, labels.KIND_ROUTING_POLICY, name)
            cm_name = naming.policy_configmap_name(name)
            observed = idx.child("ConfigMap", *owner, cm_name)
            desired = build_policy_configmap(policy, compiled)
            written: Written = {}
            if desired is not None:
                self._converge(body, desired, observed)
                written[("ConfigMap", namespace, cm_name)] = owner
            gateway = None
            if is_gateway(policy):
                gateway, more = self._converge_gateway(idx, policy, body, ns, nsp, compiled)
                written |= more
            else:
                self._remove_gateway(idx, owner)
            if self._outstanding(idx, written):
                return compiled  # a child was just written: its watch event reconciles again
            existing = self.current_status(labels.PLURAL_ROUTING_POLICIES, body)
            status = policy_status(policy, compiled, ns.tiers, nsp, observed, existing, now_rfc3339(), gateway)
            self._report(labels.PLURAL_ROUTING_POLICIES, body, status, POLICY_STATUS_KEYS)
            return compiled

    def _converge_gateway(
        self,
        idx: Indexes,
        policy: RoutingPolicy,
        body: Mapping[str, Any],
        ns: Namespace,
        nsp: NamespacePolicy,
        compiled: CompiledPolicy,
    ) -> tuple[GatewayObservation, Written]:
        """The gateway router of a policy in gateway mode: Deployment, Service, PodDisruptionBudget, egress
        allowances for the cloud tiers residency permits, and the namespace's base NetworkPolicy."""
        name = policy.metadata.name or ""
        namespace = policy.metadata.namespace or ""
        owner = (namespace, labels.KIND_ROUTING_POLICY, name)
        gw = naming.gateway_name(name)
        observed = {kind: idx.child(kind, *owner, gw) for kind in GATEWAY_KINDS}
        written: Written = {}
        if compiled.text is not None:  # an invalid config creates nothing; a running gateway keeps its last good one
            sidecar = router_sidecar(policy, compiled, ns.tiers)
            clouds = [t for t in (ns.tiers.get(n) for n in policy.spec.tiers) if t is not None and t.spec.cloud]
            written |= self._base_network(idx, namespace, True)
            written |= self._egress(idx, body, EgressSubject.for_gateway(policy), nsp, clouds, self._cilium())
            self._converge(body, build_gateway_deployment(policy, sidecar, self.settings), observed["Deployment"])
            self._converge(body, build_gateway_service(policy, self.settings), observed["Service"])
            self._converge(body, build_gateway_disruption_budget(policy), observed["PodDisruptionBudget"])
            written |= {(kind, namespace, gw): owner for kind in GATEWAY_KINDS}
        pods = idx.pods_of(*owner)
        events = {str(p["metadata"]["name"]): idx.events_of(namespace, str(p["metadata"]["name"])) for p in pods}
        obs = GatewayObservation(
            endpoint=gateway_endpoint(name, namespace, self.settings),
            deployment=observed["Deployment"],
            service=observed["Service"],
            pod_problem=pod_problem(pods, events),
        )
        return obs, written

    def _remove_gateway(self, idx: Indexes, owner: ChildKey) -> None:
        """A policy in sidecar mode has no gateway: delete what a former gateway mode left (its config stays)."""
        for kind in (*GATEWAY_KINDS, "NetworkPolicy", "CiliumNetworkPolicy"):
            for name, child in idx.owned(kind, *owner).items():
                self._delete(kind, owner[0], name, "the policy is in sidecar mode", child)

    # -- index audit -------------------------------------------------------------------------------------------

    def audit_indexes(self, idx: Indexes) -> list[IndexedRef]:
        """Find index entries whose object the API server no longer has, bury them and reconcile their owners.

        kopf's indexes miss deletions made while a watch reconnects (see `Tombstones`). Runs from the resync
        loop, at most once per resync interval: one metadata-only LIST per kind held in the indexes, then a GET to
        confirm each uid the LIST lacked (an object created after the LIST began is absent from it too).
        Steady-state cost: a few reads per interval, no writes.
        """
        if not self._audit_lock.acquire(blocking=False):
            return []
        try:
            now = time.monotonic()
            if now - self._last_audit < self.settings.resync_seconds:
                return []
            self._last_audit = now
            refs = idx.refs()
            live = {
                kind: self.kube.list_uids(kind)
                for kind in sorted({r.kind for r in refs})
                if kind != "CiliumNetworkPolicy"
            }
            gone: list[IndexedRef] = []
            for ref in stale((r for r in refs if r.uid not in idx.gone), live):
                if self.kube.uid_of(ref.kind, ref.namespace, ref.name) == ref.uid:
                    continue  # created after the LIST began
                idx.gone.bury(ref.uid)
                gone.append(ref)
            idx.gone.retain(r.uid for r in refs)
        finally:
            self._audit_lock.release()
        for ref in gone:
            log.warning(
                "%s %s/%s (uid %s) was deleted while a watch was down; the index still held it",
                ref.kind,
                ref.namespace,
                ref.name,
                ref.uid,
            )
        self._repair(idx, gone)
        return gone

    def _repair(self, idx: Indexes, gone: list[IndexedRef]) -> None:
        """Reconcile what depended on objects found gone (each owner once)."""
        done: set[tuple[str, str, str]] = set()
        for ref in gone:
            if ref.kind == labels.KIND_INFERENCE_TIER:
                self.forget(ref.uid, labels.PLURAL_INFERENCE_TIERS, ref.namespace, ref.name)
                self.after_tier_change(idx, ref.namespace, ref.name)
            elif ref.kind == labels.KIND_ROUTING_POLICY:
                self.forget(ref.uid, labels.PLURAL_ROUTING_POLICIES, ref.namespace, ref.name)
                self.after_policy_change(idx, ref.namespace, ref.name, None)
            elif (ref.owner_kind, ref.namespace, ref.owner) not in done:
                done.add((ref.owner_kind, ref.namespace, ref.owner))
                self.reconcile_owner(idx, ref.namespace, ref.owner_kind, ref.owner)

    # -- fan-out -----------------------------------------------------------------------------------------------

    def reconcile_owner(self, idx: Indexes, namespace: str, owner_kind: str, owner: str, converge: bool = True) -> None:
        """Reconcile the object a child belongs to."""
        if owner_kind == labels.KIND_INFERENCE_TIER:
            self.reconcile_tier(idx, namespace, owner, converge)
        elif owner_kind == labels.KIND_ROUTING_POLICY:
            self.reconcile_policy(idx, namespace, owner)
        elif owner_kind == NAMESPACE_OWNER:
            self.reconcile_namespace_network(idx, namespace)

    def tiers_of_policy(self, namespace: str, name: str, spec_tiers: list[str] | None) -> set[str]:
        """Tiers whose sidecar config depends on the policy: listed now, or listed when last seen."""
        key = (namespace, name)
        before = self.policy_tiers.get(key, set())
        if spec_tiers is None:
            self.policy_tiers.pop(key, None)
            return before
        now = set(spec_tiers)
        self.policy_tiers[key] = now
        return before | now

    def after_policy_change(self, idx: Indexes, namespace: str, name: str, spec_tiers: list[str] | None) -> None:
        """A policy changed (or went away): its config (and gateway), the sidecar config of every tier it touches,
        and the namespace's network (a gateway needs the base NetworkPolicy)."""
        if spec_tiers is not None:
            self.reconcile_policy(idx, namespace, name)
        self.reconcile_namespace_network(idx, namespace)
        for tier in sorted(self.tiers_of_policy(namespace, name, spec_tiers)):
            self.reconcile_tier(idx, namespace, tier)

    def tier_changed(self, namespace: str, name: str, generation: int, backend: str) -> bool:
        """Whether a tier event brings a new spec (or a new tier): then its dependents recompile."""
        key = (namespace, name)
        before = self.tier_generations.get(key)
        self.tier_generations[key] = (generation, backend)
        return before != (generation, backend)

    def after_tier_change(self, idx: Indexes, namespace: str, name: str) -> None:
        """A tier's spec changed, or it appeared or went away: the namespace's network, the policies using it and
        their other tiers."""
        self.reconcile_namespace_network(idx, namespace)
        ns = self.load(idx, namespace, lambda _policies: ())
        touched: set[str] = set()
        for pname, policy in ns.policies.items():
            if name in policy.spec.tiers:
                self.reconcile_policy(idx, namespace, pname)
                touched |= {t for t in policy.spec.tiers if t != name}
        for tier in sorted(touched):
            self.reconcile_tier(idx, namespace, tier)

    def namespace_changed(self, idx: Indexes, namespace: str, fingerprint: str | None) -> bool:
        """A namespace event: when its residency changed (not on first sight), re-evaluate everything in it.
        Returns whether it did."""
        if fingerprint is None:
            self.namespace_fingerprints.pop(namespace, None)
            return False
        before = self.namespace_fingerprints.get(namespace)
        self.namespace_fingerprints[namespace] = fingerprint
        if before is None or before == fingerprint:
            return False
        log.info("namespace %s residency changed %s -> %s", namespace, before, fingerprint)
        self.reconcile_namespace(idx, namespace)
        return True

    def reconcile_namespace(self, idx: Indexes, namespace: str) -> None:
        """Everything the operator manages in one namespace."""
        self.reconcile_namespace_network(idx, namespace)
        for policy in sorted(idx.policy_bodies(namespace)):
            self.reconcile_policy(idx, namespace, policy)
        for tier in sorted(idx.tier_bodies(namespace)):
            self.reconcile_tier(idx, namespace, tier)

    def pod_changed(
        self, idx: Indexes, namespace: str, owner_kind: str, owner: str, pod: str, summary: Mapping[str, Any] | None
    ) -> None:
        """A pod of ours changed: its owner's status may say something new (why it is not ready)."""
        key = (namespace, pod)
        if summary is None:
            self.pod_states.pop(key, None)
        else:
            state = _problem_key(summary)
            if self.pod_states.get(key) == state:
                return  # nothing the status reads changed (e.g. a new IP, a new restart count)
            self.pod_states[key] = state
        self.reconcile_owner(idx, namespace, owner_kind, owner, converge=False)

    def cilium_changed(self, idx: Indexes) -> None:
        """Cilium's CRD appeared, changed or went away: forget discovery and re-evaluate every tier's egress."""
        self.kube.forget_discovery()
        for namespace in idx.namespace_names():
            for tier in sorted(idx.tier_bodies(namespace)):
                try:
                    self.reconcile_tier(idx, namespace, tier)
                except Exception:  # e.g. a namespace being deleted refuses new objects; the others still follow
                    log.exception("re-evaluating tier %s/%s after a Cilium API change failed", namespace, tier)

    # -- resync ------------------------------------------------------------------------------------------------

    def resync(self, idx: Indexes) -> int:
        """Level-triggered safety net: reconcile every object not reconciled within the resync interval (the
        watches' events handle the fast path). Returns how many reconciles ran."""
        self.audit_indexes(idx)
        horizon = time.monotonic() - self.settings.resync_seconds
        count = 0
        for namespace in idx.namespace_names():
            try:
                self.reconcile_namespace_network(idx, namespace)
                for plural, names in (
                    (labels.PLURAL_ROUTING_POLICIES, idx.policy_bodies(namespace)),
                    (labels.PLURAL_INFERENCE_TIERS, idx.tier_bodies(namespace)),
                ):
                    for name in sorted(names):
                        if self._last_reconciled.get((plural, namespace, name), 0.0) > horizon:
                            continue
                        if plural == labels.PLURAL_ROUTING_POLICIES:
                            self.reconcile_policy(idx, namespace, name)
                        else:
                            self.reconcile_tier(idx, namespace, name)
                        count += 1
            except Exception:  # one namespace failing must not stop the others; the next round retries
                log.exception("resync of namespace %s failed", namespace)
        return count
