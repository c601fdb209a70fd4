"""Observe → compute → apply → report, for one InferenceTier or one RoutingPolicy.

The kopf handlers only decide *when* to reconcile; this module decides *what* to do, calling the pure builders in
`tiered_operator.reconcile` and writing through `tiered_operator.kube` only where observed and desired differ.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.handlers.state import IndexedRef, Indexes, KeyedLocks, PendingWrites, TTLCache, stale
from tiered_operator.kube import Kube
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.compare import APPLIED_HASH, needs_apply, with_applied_hash
from tiered_operator.reconcile.conditions import find, now_rfc3339, transitions
from tiered_operator.reconcile.deployment import UnsupportedSpec, build_deployment
from tiered_operator.reconcile.router_config import (
    CompiledPolicy,
    NamespacePolicy,
    build_policy_configmap,
    build_router_configmap,
    compile_policy,
    policies_using,
    tier_router_config,
)
from tiered_operator.reconcile.service import build_service
from tiered_operator.reconcile.status import (
    POLICY_STATUS_KEYS,
    TIER_STATUS_KEYS,
    TierObservation,
    policy_status,
    secret_problem,
    status_differs,
    tier_status,
)
from tiered_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

LOCAL_CHILD_KINDS = ("Deployment", "Service", "ConfigMap")
ParsedT = TypeVar("ParsedT", InferenceTier, RoutingPolicy)


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
    """(kind, name) of the children a local tier owns."""
    return (
        ("Deployment", naming.deployment_name(tier)),
        ("Service", naming.service_name(tier)),
        ("ConfigMap", naming.router_configmap_name(tier)),
    )


def announce_ready(before: str | None, after: str) -> bool:
    """Whether a Ready change deserves an Event: it became True, or it changed status after the first report."""
    if before == after:
        return False
    return after == "True" or before is not None


def related_tiers(tier: str, policies: Iterable[RoutingPolicy]) -> list[str]:
    """The tier and every tier of the policies that list it: what its reconcile compiles."""
    out = [tier]
    for policy in policies:
        if tier in policy.spec.tiers:
            out += policy.spec.tiers
    return out


def _live(body: Mapping[str, Any]) -> bool:
    return not (body.get("metadata") or {}).get("deletionTimestamp")


class Reconciler:
    """Holds the operator's collaborators; one instance per operator process."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.locks = KeyedLocks()
        self.ns_labels = TTLCache(ttl=2.0)
        self.pending = PendingWrites()
        self._parsed: dict[tuple[str, str], tuple[str, Any]] = {}
        self._parsed_lock = threading.Lock()
        self._written: dict[tuple[str, str, str], tuple[Any, dict[str, Any]]] = {}
        self.policy_tiers: dict[tuple[str, str], set[str]] = {}
        """Tiers each policy listed when last seen, so a tier dropped from a policy gets its config updated."""
        self.reconciles: Counter[str] = Counter()
        """Reconciles run, by kind (the scale benchmark divides API requests by them)."""
        self._audit_lock = threading.Lock()
        self._last_audit = time.monotonic()

    # -- observation -------------------------------------------------------------------------------------------

    def namespace_policy(self, namespace: str, idx: Indexes | None = None) -> NamespacePolicy:
        """From the namespace watch's index (no request); a GET, cached 2 s, for a namespace not indexed yet."""
        found = idx.namespace_metadata(namespace) if idx is not None else None
        if found is None:
            found = self.ns_labels.get(namespace, lambda: self.kube.namespace_metadata(namespace))
        ns_labels, ns_annotations = found
        return NamespacePolicy.from_labels(ns_labels, ns_annotations)

    def _parse(self, model: type[ParsedT], body: Mapping[str, Any]) -> ParsedT | None:
        """Parse a body once per resourceVersion (a namespace with 200 tiers is re-read on every reconcile)."""
        meta = body.get("metadata") or {}
        key = (model.__name__, str(meta.get("uid")))
        version = str(meta.get("resourceVersion"))
        with self._parsed_lock:
            hit = self._parsed.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        try:
            parsed = model.model_validate(dict(body))
        except ValidationError as exc:
            log.warning("%s %s/%s does not parse: %s", model.__name__, meta.get("namespace"), meta.get("name"), exc)
            return None
        with self._parsed_lock:
            self._parsed[key] = (version, parsed)
        return parsed

    def forget(self, uid: str, plural: str, namespace: str, name: str) -> None:
        """Drop what is remembered about a deleted object."""
        with self._parsed_lock:
            for model in (InferenceTier, RoutingPolicy):
                self._parsed.pop((model.__name__, uid), None)
        self._written.pop((plural, namespace, name), None)

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
        bodies = idx.tier_bodies(namespace)
        names = list(bodies) if tiers is None else [t for t in dict.fromkeys(tiers(out.policies)) if t in bodies]
        for name in names:
            tier_body = bodies[name]
            tier = self._parse(InferenceTier, tier_body) if _live(tier_body) else None
            if tier is not None:
                out.tiers[name] = tier
                out.tier_bodies[name] = tier_body
        return out

    # -- apply -------------------------------------------------------------------------------------------------

    def _converge(self, owner_body: Mapping[str, Any], desired: Mapping[str, Any], observed: Any) -> None:
        """Apply `desired` only when the observed child is absent, edited, or outdated."""
        manifest = with_applied_hash(desired)
        if not needs_apply(manifest, observed):
            return
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        key = (kind, manifest["metadata"]["namespace"], name)
        digest = manifest["metadata"]["annotations"][APPLIED_HASH]
        if self.pending.waiting(key, digest):
            return  # applied a moment ago; the watch event that updates our view has not arrived yet
        if observed is None:
            reason, message = "Created", f"created {kind} {name}"
        elif (observed.get("metadata") or {}).get("annotations", {}).get(APPLIED_HASH) == manifest["metadata"][
            "annotations"
        ][APPLIED_HASH]:
            reason, message = "DriftRepaired", f"restored {kind} {name} after an out-of-band change"
        else:
            reason, message = "Updated", f"applied the new desired state of {kind} {name}"
        # Recorded before the request: its watch event may be handled (and clear the entry) before apply returns.
        self.pending.wrote(key, digest)
        try:
            self.kube.apply(manifest, why=reason)
        except Exception:
            self.pending.observed(key)
            raise
        if reason != "Created" or kind == "Deployment":
            self.kube.event(owner_body, reason, message)

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
        if not status_differs(desired, existing, owned):
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
        """An Event for a meaningful transition: Ready flipping (not its first False, nor a reason change while
        not ready: a rollout passes through several), TiersResolved, Stalled=True."""
        type_, status = cond["type"], cond["status"]
        old = find(existing.get("conditions"), type_)
        first = old is None
        if type_ == "Ready":
            if not announce_ready(None if old is None else str(old.get("status")), str(status)):
                return
            warn = False
        elif type_ == "TiersResolved" and (status == "False" or not first):
            warn = status == "False"
        elif type_ == "Stalled" and status == "True":
            warn = True
        else:
            return
        self.kube.event(
            body, str(cond["reason"]), f"{type_}={status}: {cond.get('message', '')}", "Warning" if warn else "Normal"
        )

    # -- InferenceTier -----------------------------------------------------------------------------------------

    def reconcile_tier(self, idx: Indexes, namespace: str, name: str) -> None:
        """Converge the tier's children, then write its status."""
        with self.locks.get(namespace, "tier", name):
            self.reconciles["tier"] += 1
            ns = self.load(idx, namespace, lambda policies: related_tiers(name, policies.values()))
            tier = ns.tiers.get(name)
            if tier is None:
                return
            body = ns.tier_bodies[name]
            nsp = self.namespace_policy(namespace, idx)
            kind = labels.KIND_INFERENCE_TIER
            observed = {k: idx.child(k, namespace, kind, name, n) for k, n in local_children(name)}
            if tier.spec.cloud is not None:
                obs = self._converge_cloud(tier, body, observed, nsp)
            else:
                obs = self._converge_local(tier, body, ns, observed, nsp)
                if any(self.pending.outstanding((kind_, namespace, child)) for kind_, child in local_children(name)):
                    return  # a child was just written: its watch event reconciles again and reports what it shows
            existing = self.current_status(labels.PLURAL_INFERENCE_TIERS, body)
            status = tier_status(tier, obs, existing, self.settings, now_rfc3339())
            self._report(labels.PLURAL_INFERENCE_TIERS, body, status, TIER_STATUS_KEYS)

    def _converge_cloud(
        self, tier: InferenceTier, body: Mapping[str, Any], observed: Mapping[str, Any], nsp: NamespacePolicy
    ) -> TierObservation:
        meta = tier.metadata
        for kind, child in observed.items():
            if child is not None:  # the tier switched from local to cloud
                self.kube.delete(kind, meta.namespace or "", child["metadata"]["name"], "tier is now a cloud tier")
        assert tier.spec.cloud is not None
        ref = tier.spec.cloud.api_key_secret_ref
        secret = self.kube.get_secret(meta.namespace or "", ref.name)
        return TierObservation(secret_problem=secret_problem(ref, secret), namespace=nsp)

    def _converge_local(
        self,
        tier: InferenceTier,
        body: Mapping[str, Any],
        ns: Namespace,
        observed: Mapping[str, Any],
        nsp: NamespacePolicy,
    ) -> TierObservation:
        name = tier.metadata.name or ""
        using = policies_using(name, ns.policies.values())
        compiled = [compile_policy(p, ns.tiers, nsp, self.settings) for p in using]
        router = tier_router_config(tier, compiled, using, ns.tiers, nsp, self.settings)
        self._converge(body, build_router_configmap(tier, router), observed["ConfigMap"])
        self._converge(body, build_service(tier, self.settings), observed["Service"])
        try:
            deployment = build_deployment(tier, router.sidecar, self.settings)
        except UnsupportedSpec as exc:
            return TierObservation(render_error=str(exc), namespace=nsp, **self._obs(observed))
        self._converge(body, deployment, observed["Deployment"])
        self._sync_replicas(tier, observed["Deployment"])
        return TierObservation(namespace=nsp, **self._obs(observed))

    @staticmethod
    def _obs(observed: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "deployment": observed["Deployment"],
            "service": observed["Service"],
            "configmap": observed["ConfigMap"],
        }

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
            self.kube.scale_deployment(
                tier.metadata.namespace or "", naming.deployment_name(name), want, labels.AUTOSCALER_FIELD_MANAGER
            )

    # -- RoutingPolicy -----------------------------------------------------------------------------------------

    def reconcile_policy(self, idx: Indexes, namespace: str, name: str) -> CompiledPolicy | None:
        with self.locks.get(namespace, "policy", name):
            self.reconciles["policy"] += 1
            ns = self.load(idx, namespace, lambda policies: policies[name].spec.tiers if name in policies else ())
            policy = ns.policies.get(name)
            if policy is None:
                return None
            body = ns.policy_bodies[name]
            nsp = self.namespace_policy(namespace, idx)
            compiled = compile_policy(policy, ns.tiers, nsp, self.settings)
            observed = idx.child(
                "ConfigMap", namespace, labels.KIND_ROUTING_POLICY, name, naming.policy_configmap_name(name)
            )
            desired = build_policy_configmap(policy, compiled)
            if desired is not None:
                self._converge(body, desired, observed)
            existing = self.current_status(labels.PLURAL_ROUTING_POLICIES, body)
            status = policy_status(policy, compiled, ns.tiers, nsp, observed, existing, now_rfc3339())
            self._report(labels.PLURAL_ROUTING_POLICIES, body, status, POLICY_STATUS_KEYS)
            return compiled

    # -- index audit -------------------------------------------------------------------------------------------

    def audit_indexes(self, idx: Indexes) -> list[IndexedRef]:
        """Find index entries whose object the API server no longer has, bury them and reconcile their owners.

        kopf's indexes miss deletions made while a watch reconnects (see `Tombstones`). Runs from the resync
        timers, at most once per resync interval per process: one metadata-only LIST per kind held in the indexes,
        then a GET to confirm each uid the LIST lacked (an object created after the LIST began is absent from it
        too). Steady-state cost: at most 5 reads per interval, no writes.
        """
        if not self._audit_lock.acquire(blocking=False):
            return []
        try:
            now = time.monotonic()
            if now - self._last_audit < self.settings.resync_seconds:
                return []
            self._last_audit = now
            refs = idx.refs()
            live = {kind: self.kube.list_uids(kind) for kind in sorted({r.kind for r in refs})}
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
            log.warning("%s %s/%s (uid %s) was deleted while a watch was down; the index still held it",
                        ref.kind, ref.namespace, ref.name, ref.uid)  # fmt: skip
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
                if ref.owner_kind == labels.KIND_INFERENCE_TIER:
                    self.reconcile_tier(idx, ref.namespace, ref.owner)
                elif ref.owner_kind == labels.KIND_ROUTING_POLICY:
                    self.reconcile_policy(idx, ref.namespace, ref.owner)

    # -- fan-out -----------------------------------------------------------------------------------------------

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
        """A policy changed (or went away): its config and the sidecar config of every tier it touches."""
        if spec_tiers is not None:
            self.reconcile_policy(idx, namespace, name)
        for tier in sorted(self.tiers_of_policy(namespace, name, spec_tiers)):
            self.reconcile_tier(idx, namespace, tier)

    def after_tier_change(self, idx: Indexes, namespace: str, name: str) -> None:
        """A tier's spec changed, or it appeared or went away: policies using it and their other tiers."""
        ns = self.load(idx, namespace, lambda _policies: ())
        touched: set[str] = set()
        for pname, policy in ns.policies.items():
            if name in policy.spec.tiers:
                self.reconcile_policy(idx, namespace, pname)
                touched |= {t for t in policy.spec.tiers if t != name}
        for tier in sorted(touched):
            self.reconcile_tier(idx, namespace, tier)
