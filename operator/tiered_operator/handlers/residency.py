"""Residency in the cluster: NetworkPolicies per namespace, the namespace watch, and the admission webhook.

Thin I/O around `tiered_operator.residency` (pure decisions):

- Every event of an InferenceTier, a RoutingPolicy, one of our NetworkPolicies, or a Namespace whose residency
  labels changed asks for `reconcile_namespace`, coalesced per namespace (a burst of events costs one pass).
  One pass observes the namespace, computes every NetworkPolicy (and CiliumNetworkPolicy where discovery finds
  the API), applies only what differs (server-side apply, owned by the tier), deletes what is no longer wanted,
  writes the `EgressRestricted` condition, and stamps `tiered.dev/namespace-residency` on each tier and policy.
- The stamp is how a relabelled namespace re-evaluates within seconds: it changes the objects' metadata, so the
  operator's tier/policy handlers run at once (conditions, router config) without waiting for the resync timer.
- `@kopf.on.validate` handlers reject objects that break residency; kopf serves them over TLS with a CA we
  generate, and manages the ValidatingWebhookConfiguration (caBundle + URL). failurePolicy is Ignore: see
  docs/residency.md for why the webhook is the first line of defence, not the only one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fnmatch
import functools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import kopf
import kubernetes
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.handlers.state import INDEX_NAMESPACES, awaiting_finalizer
from tiered_operator.reconcile.compare import APPLIED_HASH, needs_apply, with_applied_hash
from tiered_operator.reconcile.conditions import Condition, merge_conditions, now_rfc3339
from tiered_operator.residency import (
    NamespacePolicy,
    NetworkOptions,
    build_cilium_policies,
    build_network_policies,
    cilium_served,
    namespace_policy,
    review_policy,
    review_tier,
)
from tiered_operator.residency.cilium import CILIUM_GROUP, CILIUM_PLURAL, CILIUM_VERSION
from tiered_operator.residency.network import EGRESS_CONDITION, egress_condition
from tiered_operator.residency.tls import build_webhook_certificates

log = logging.getLogger(__name__)
T = TypeVar("T")

ANNOTATION_NAMESPACE_RESIDENCY = f"{labels.GROUP}/namespace-residency"
"""On tiers and policies: the fingerprint of the namespace policy they were last evaluated under."""
OWNED_CONDITIONS: tuple[str, ...] = (EGRESS_CONDITION,)
"""Condition types this module writes on InferenceTiers; the main reconciler must leave them alone."""
STATUS_FIELD_MANAGER = "tiered-residency"
"""Owns only the EgressRestricted condition (status SSA), so the main reconciler's status apply keeps it."""
NETWORK_SELECTOR = {labels.LABEL_MANAGED_BY: labels.MANAGED_BY_VALUE, labels.LABEL_COMPONENT: labels.COMPONENT_NETWORK}
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
DISCOVERY_TTL_SECONDS = float(os.environ.get("TIERED_DISCOVERY_TTL_SECONDS", "60"))
"""How long the answer of API discovery for cilium.io/v2 is reused."""
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0)
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every API call: a hung connection must not stall residency for good."""
STAMP_DELAY_SECONDS = float(os.environ.get("TIERED_RESIDENCY_STAMP_DELAY_SECONDS", "0.5"))
"""After a relabel, the stamp that re-triggers the tier/policy reconcilers waits this long. The reconcilers read
namespace labels from the namespace watch's index (updated by the same event), so a short delay suffices; only a
namespace not indexed yet is read with a GET cached for 2 s."""


def _scope() -> tuple[str, ...]:
    """Namespace patterns the operator serves (TIERED_WATCH_NAMESPACES, globs allowed); empty = all."""
    return tuple(p.strip() for p in os.environ.get("TIERED_WATCH_NAMESPACES", "").split(",") if p.strip())


def in_scope(namespace: str | None) -> bool:
    patterns = _scope()
    return namespace is not None and (not patterns or any(fnmatch.fnmatchcase(namespace, p) for p in patterns))


# --- API access (sync; called from worker threads) -----------------------------------------------------------


def _drain_response(response: Any) -> None:
    """Read an unparsed response to its end, so its connection goes back to the pool: an unread one is dropped
    and the next request pays a new TLS handshake (measurable CPU at 1,000 tiers)."""
    _ = response.data


class _Api:
    """Generic reads and writes as plain dicts: networking.k8s.io, cilium.io and tiered.dev all live under /apis."""

    def __init__(self) -> None:
        client = kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self._cilium: tuple[float, bool] | None = None

    @staticmethod
    def _json(rsp: Any) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(rsp.data)
        return data

    def namespace(self, name: str) -> dict[str, Any] | None:
        try:
            rsp = self.core.read_namespace(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            return self._json(rsp)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, group: str, version: str, namespace: str, plural: str, selector: str | None = None) -> list[Any]:
        rsp = self.custom.list_namespaced_custom_object(
            group, version, namespace, plural, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[Any] = self._json(rsp).get("items") or []
        return items

    def apply(self, group: str, version: str, plural: str, manifest: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        _drain_response(self.custom.patch_namespaced_custom_object(
            group, version, meta["namespace"], plural, meta["name"], dict(manifest),
            field_manager=labels.FIELD_MANAGER, force=True, _content_type=APPLY_PATCH, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        ))

    def delete(self, group: str, version: str, namespace: str, plural: str, name: str) -> None:
        try:
            _drain_response(self.custom.delete_namespaced_custom_object(
                group, version, namespace, plural, name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            ))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def apply_condition(self, plural: str, kind: str, namespace: str, name: str, condition: dict[str, Any]) -> None:
        body = {
            "apiVersion": labels.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": {"conditions": [condition]},
        }
        _drain_response(self.custom.patch_namespaced_custom_object_status(
            labels.GROUP, labels.VERSION, namespace, plural, name, body,
            field_manager=STATUS_FIELD_MANAGER, force=True, _content_type=APPLY_PATCH, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        ))

    def annotate(self, plural: str, namespace: str, name: str, key: str, value: str) -> None:
        _drain_response(self.custom.patch_namespaced_custom_object(
            labels.GROUP, labels.VERSION, namespace, plural, name, {"metadata": {"annotations": {key: value}}},
            _content_type=MERGE_PATCH, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        ))

    def cilium_available(self) -> bool:
        """API discovery of cilium.io/v2, cached for a minute (Cilium is installed or removed rarely)."""
        now = time.monotonic()
        if self._cilium is not None and now - self._cilium[0] < DISCOVERY_TTL_SECONDS:
            return self._cilium[1]
        try:
            rsp = self.custom.get_api_resources(
                CILIUM_GROUP, CILIUM_VERSION, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
            served = cilium_served(self._json(rsp).get("resources") or [])
        except ApiException as exc:
            if exc.status != 404:
                raise
            served = False
        self._cilium = (now, served)
        return served


_api: _Api | None = None


def api() -> _Api:
    global _api
    if _api is None:
        _api = _Api()
    return _api


# --- one pass over a namespace -------------------------------------------------------------------------------


def _live(body: Mapping[str, Any]) -> bool:
    return not (body.get("metadata") or {}).get("deletionTimestamp")


def _parse_tiers(items: Sequence[Mapping[str, Any]]) -> dict[str, InferenceTier]:
    out = {}
    for body in items:
        if not _live(body):
            continue
        try:
            tier = _parse_cached(body)
        except ValidationError as exc:
            log.warning("InferenceTier %s does not parse: %s", (body.get("metadata") or {}).get("name"), exc)
            continue
        out[tier.metadata.name or ""] = tier
    return out


def callers_and_clouds(
    tiers: Mapping[str, InferenceTier], policies: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, list[InferenceTier]], dict[str, list[str]]]:
    """For each local tier, the cloud tiers its router may call; for each cloud tier, the local tiers calling it.

    A local tier's sidecar router serves every RoutingPolicy that lists it, so it may dispatch to every cloud
    tier those policies list.
    """
    clouds: dict[str, dict[str, InferenceTier]] = {n: {} for n, t in tiers.items() if t.spec.backend == "local"}
    callers: dict[str, set[str]] = {n: set() for n, t in tiers.items() if t.spec.backend == "cloud"}
    for policy in policies:
        listed = [str(n) for n in ((policy.get("spec") or {}).get("tiers") or [])]
        local = [n for n in listed if n in clouds]
        cloud = [n for n in listed if n in callers]
        for lname in local:
            for cname in cloud:
                clouds[lname][cname] = tiers[cname]
                callers[cname].add(lname)
    return ({k: list(v.values()) for k, v in clouds.items()}, {k: sorted(v) for k, v in callers.items()})


def _converge(
    group: str, version: str, plural: str, namespace: str, desired: list[dict[str, Any]], why: str
) -> None:
    """Apply the desired objects that differ from what is observed; delete ours that are no longer desired."""
    a = api()
    selector = ",".join(f"{k}={v}" for k, v in NETWORK_SELECTOR.items())
    observed = {o["metadata"]["name"]: o for o in a.list(group, version, namespace, plural, selector)}
    for item in observed.values():  # list items carry no apiVersion/kind; the desired manifests do
        item.setdefault("apiVersion", f"{group}/{version}")
    for manifest in desired:
        if manifest["metadata"]["name"] in observed:
            observed[manifest["metadata"]["name"]].setdefault("kind", manifest["kind"])
    wanted = {d["metadata"]["name"]: with_applied_hash(d) for d in desired}
    writes: list[Callable[[], None]] = []
    for name, manifest in wanted.items():
        if needs_apply(manifest, observed.get(name)):
            current = observed.get(name)
            state = "absent" if current is None else (
                f"applied-hash {(current['metadata'].get('annotations') or {}).get(APPLIED_HASH)} != "
                f"{manifest['metadata']['annotations'][APPLIED_HASH]}, or edited"
            )
            log.info("apply %s %s/%s (%s; %s)", plural, namespace, name, state, why)
            writes.append(functools.partial(a.apply, group, version, plural, manifest))
    for name in observed.keys() - wanted.keys():
        log.info("delete %s %s/%s (no longer permitted or needed; %s)", plural, namespace, name, why)
        writes.append(functools.partial(a.delete, group, version, namespace, plural, name))
    _run_all(writes)


WRITE_CONCURRENCY = int(os.environ.get("TIERED_RESIDENCY_WRITE_CONCURRENCY", "8"))
"""Writes one pass issues at once: 1,000 new tiers need 3,000 NetworkPolicies, which one at a time take minutes."""
_writers = concurrent.futures.ThreadPoolExecutor(max_workers=WRITE_CONCURRENCY, thread_name_prefix="residency-write")


def _run_all(writes: Sequence[Callable[[], None]]) -> None:
    """Run independent writes concurrently; every one is attempted, and the first failure is raised after."""
    if len(writes) <= 1:
        for write in writes:
            write()
        return
    futures = [_writers.submit(write) for write in writes]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _report_condition(plural: str, kind: str, body: Mapping[str, Any], cond: Condition) -> None:
    existing = [c for c in ((body.get("status") or {}).get("conditions") or []) if c.get("type") == cond.type]
    old = existing[0] if existing else None
    if old is not None and (old.get("status"), old.get("reason"), old.get("message")) == (
        cond.status, cond.reason, cond.message
    ):
        return
    meta = body["metadata"]
    log.info("write %s condition %s/%s: %s %s", cond.type, meta["namespace"], meta["name"], cond.status, cond.reason)
    stamped = merge_conditions(existing, [cond], generation=int(meta.get("generation") or 0), now=now_rfc3339())
    api().apply_condition(plural, kind, meta["namespace"], meta["name"], stamped[0])


def needs_stamp(current: str | None, fingerprint: str, relabelled: bool) -> bool:
    """Whether an object gets the namespace-residency stamp now.

    The stamp exists to wake the tier/policy reconcilers when the namespace's policy changes. An object never
    stamped was reconciled under the labels it was created with, so it needs one only once the namespace has been
    relabelled (while this operator runs; after a restart every object is reconciled anyway). Stamping every new
    object would cost a write, a watch event and a reconcile per object for nothing.
    """
    if current is None:
        return relabelled
    return current != fingerprint


_parsed_tiers: dict[str, tuple[str, InferenceTier]] = {}
"""uid → (resourceVersion, parsed tier): a pass over a namespace parses only the tiers that changed."""


def _parse_cached(body: Mapping[str, Any]) -> InferenceTier:
    meta = body.get("metadata") or {}
    uid, version = str(meta.get("uid")), str(meta.get("resourceVersion"))
    hit = _parsed_tiers.get(uid)
    if hit is not None and hit[0] == version:
        return hit[1]
    tier = InferenceTier.from_k8s(body)
    _parsed_tiers[uid] = (version, tier)
    return tier


_uids_by_namespace: dict[str, set[str]] = {}


def _prune_parsed(namespace: str, items: Sequence[Mapping[str, Any]]) -> None:
    """Drop cached parses of this namespace's tiers that no longer exist."""
    now = {str((i.get("metadata") or {}).get("uid")) for i in items}
    for uid in _uids_by_namespace.get(namespace, set()) - now:
        _parsed_tiers.pop(uid, None)
    _uids_by_namespace[namespace] = now


def reconcile_namespace(namespace: str, options: NetworkOptions) -> None:
    """Observe → compute → apply → report for everything residency owns in one namespace."""
    a = api()
    ns_body = a.namespace(namespace)
    if ns_body is None:
        return
    meta = ns_body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return  # nothing can be created there any more; ownerReferences clean up the rest
    policy = namespace_policy(meta.get("labels"), meta.get("annotations"))
    tier_items = [t for t in a.list(labels.GROUP, labels.VERSION, namespace, labels.PLURAL_INFERENCE_TIERS)
                  if _live(t)]
    policy_items = [p for p in a.list(labels.GROUP, labels.VERSION, namespace, labels.PLURAL_ROUTING_POLICIES)
                    if _live(p)]
    tiers = _parse_tiers(tier_items)
    _prune_parsed(namespace, tier_items)
    clouds, callers = callers_and_clouds(tiers, policy_items)
    cilium = a.cilium_available()
    why = f"namespace residency {policy.fingerprint()}"

    netpols: list[dict[str, Any]] = []
    cnps: list[dict[str, Any]] = []
    for name, tier in tiers.items():
        if tier.spec.backend == "local":
            netpols += build_network_policies(tier, policy, clouds.get(name, []), options)
            cnps += build_cilium_policies(tier, policy, clouds.get(name, []), options)
    _converge("networking.k8s.io", "v1", "networkpolicies", namespace, netpols, why)
    if cilium:
        _converge(CILIUM_GROUP, CILIUM_VERSION, CILIUM_PLURAL, namespace, cnps, why)

    fingerprint = policy.fingerprint()
    stamp = time.monotonic() - _relabelled_at.get(namespace, -STAMP_DELAY_SECONDS) >= STAMP_DELAY_SECONDS
    reports: list[Callable[[], None]] = []
    for body in tier_items:
        name = body["metadata"]["name"]
        parsed = tiers.get(name)
        if parsed is not None and not awaiting_finalizer(body):  # a status write now would fail kopf's patch
            cond = egress_condition(parsed, policy, clouds.get(name, []), callers.get(name, []), cilium)
            reports.append(functools.partial(_report_condition, labels.PLURAL_INFERENCE_TIERS,
                                             labels.KIND_INFERENCE_TIER, body, cond))
    _run_all(reports)
    relabelled = namespace in _relabelled_at
    stamps: list[Callable[[], None]] = []
    for plural, items in ((labels.PLURAL_INFERENCE_TIERS, tier_items), (labels.PLURAL_ROUTING_POLICIES,
                                                                         policy_items)):
        for body in items:
            annotations = body["metadata"].get("annotations") or {}
            if stamp and needs_stamp(annotations.get(ANNOTATION_NAMESPACE_RESIDENCY), fingerprint, relabelled):
                log.info("stamp %s %s/%s with %s", plural, namespace, body["metadata"]["name"], fingerprint)
                stamps.append(functools.partial(a.annotate, plural, namespace, body["metadata"]["name"],
                                                ANNOTATION_NAMESPACE_RESIDENCY, fingerprint))
    _run_all(stamps)


# --- coalescing per namespace -----------------------------------------------------------------------------------

_executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="residency")
"""Residency passes and webhook lookups run here, apart from kopf's pool for sync handlers, so a relabel revokes
egress (namespace watch → pass) even while that pool is busy."""
_dirty: set[str] = set()
_running: dict[str, asyncio.Task[None]] = {}
_fingerprints: dict[str, str] = {}
_relabelled_at: dict[str, float] = {}
_last_pass: dict[str, float] = {}
"""When the last pass over each namespace started (monotonic seconds)."""


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args))


def request_reconcile(namespace: str | None) -> None:
    """Ask for a pass over `namespace`; requests that arrive while one runs are folded into one more pass."""
    if namespace is None or not in_scope(namespace):
        return
    _dirty.add(namespace)
    if namespace not in _running:
        _running[namespace] = asyncio.get_running_loop().create_task(_drain(namespace))


async def _drain(namespace: str) -> None:
    options = NetworkOptions.from_env(os.environ)
    attempt = 0
    try:
        while namespace in _dirty:
            _dirty.discard(namespace)
            _last_pass[namespace] = time.monotonic()
            try:
                await _in_thread(reconcile_namespace, namespace, options)
                attempt = 0
            except Exception as exc:  # a failed pass is retried; the next event would retry it anyway
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("residency pass over %s failed (%s); retrying in %.0fs", namespace, exc, delay)
                _dirty.add(namespace)
                await asyncio.sleep(delay)
    finally:
        _running.pop(namespace, None)


# --- watches ----------------------------------------------------------------------------------------------------

RELEVANT_KEYS = (labels.LABEL_RESIDENCY, labels.LABEL_ALLOWED_REGIONS)


@kopf.index("", "v1", "namespaces")
def residency_namespaces(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, dict[str, str]]]:
    """Each namespace's residency labels/annotations, for the webhook (no API call per admission request)."""
    meta = body.get("metadata") or {}
    return {name: {
        "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k in RELEVANT_KEYS},
        "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if k in RELEVANT_KEYS},
    }}


def policy_from_index(index: Mapping[str, Any], namespace: str) -> NamespacePolicy | None:
    """The namespace policy from the `residency_namespaces` index, or None when the namespace is not indexed yet."""
    for entry in index.get(namespace, ()):
        return namespace_policy(entry.get("labels"), entry.get("annotations"))
    return None


@kopf.on.event("", "v1", "namespaces")
async def residency_namespace_event(type: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    """A namespace's residency labels changed: re-evaluate everything in it now."""
    if type == "DELETED":
        _fingerprints.pop(name, None)
        return
    meta = body.get("metadata") or {}
    fingerprint = namespace_policy(meta.get("labels"), meta.get("annotations")).fingerprint()
    before = _fingerprints.get(name)
    _fingerprints[name] = fingerprint
    if before is not None and before != fingerprint:
        log.info("namespace %s residency changed %s -> %s", name, before, fingerprint)
        _relabelled_at[name] = time.monotonic()
        request_reconcile(name)  # NetworkPolicies now; the stamp follows after STAMP_DELAY_SECONDS
        asyncio.get_running_loop().call_later(STAMP_DELAY_SECONDS + 0.1, request_reconcile, name)


_tier_namespaces: set[str] = set()
"""Namespaces that have held tiers: re-evaluated when the cluster starts or stops serving Cilium's API."""


TierState = tuple[int, bool, bool]
"""(generation, being deleted, carries kopf's finalizer)"""
_tier_generations: dict[tuple[str, str], TierState] = {}
"""(namespace, name) → the TierState of the tier's last event."""


def tier_event_matters(event_type: str | None, before: TierState | None, now: TierState) -> bool:
    """Whether a tier's watch event can change what residency computes: a new or deleted tier, a new spec
    (generation), a deletion that started, or kopf's finalizer arriving (a pass holds a new tier's condition until
    then). Status and metadata updates (the operator's own status writes, thousands while 1,000 tiers roll out)
    cannot, and each would otherwise cost a pass that lists the whole namespace."""
    return event_type == "DELETED" or before is None or before != now


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS)
async def residency_tier_event(
    namespace: str | None, name: str | None, type: str | None, body: kopf.Body, **_: Any
) -> None:
    if namespace is None:
        return
    _tier_namespaces.add(namespace)
    key = (namespace, str(name))
    meta = body.get("metadata") or {}
    seen = (int(meta.get("generation") or 0), bool(meta.get("deletionTimestamp")), not awaiting_finalizer(body))
    matters = tier_event_matters(type, _tier_generations.get(key), seen)
    if type == "DELETED":
        _tier_generations.pop(key, None)
    else:
        _tier_generations[key] = seen
    if matters:
        request_reconcile(namespace)


@kopf.on.event("apiextensions.k8s.io", "v1", "customresourcedefinitions",
               when=lambda name, **_: name == f"{CILIUM_PLURAL}.{CILIUM_GROUP}")
async def residency_cilium_crd_event(**_: Any) -> None:
    """Cilium's CRD appeared, changed or went away: forget the discovery answer and re-evaluate every namespace."""
    if _api is not None:
        _api._cilium = None
    for namespace in sorted(_tier_namespaces):
        request_reconcile(namespace)


@kopf.on.event(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES)
async def residency_policy_event(namespace: str | None, **_: Any) -> None:
    request_reconcile(namespace)


@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=NETWORK_SELECTOR)
async def residency_networkpolicy_event(namespace: str | None, **_: Any) -> None:
    """A NetworkPolicy of ours was edited or deleted out of band: repair it (level-triggered)."""
    request_reconcile(namespace)


RESYNC_SECONDS = 60.0


def resync_due(last_pass: float | None, now: float, interval: float = RESYNC_SECONDS) -> bool:
    """A namespace's safety-net pass is due when no pass started there within the interval."""
    return last_pass is None or now - last_pass >= interval


@kopf.timer(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS, interval=RESYNC_SECONDS)
async def residency_resync(namespace: str | None, **_: Any) -> None:
    """Safety net: a pass per namespace every minute even without events (cheap: writes only on difference).

    Every tier has this timer, but one pass covers the whole namespace: a timer asks for one only when no pass
    started there for a minute, so 1,000 tiers cost one pass a minute, not one per tier."""
    if namespace is not None and resync_due(_last_pass.get(namespace), time.monotonic()):
        request_reconcile(namespace)


# --- admission webhook ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookConfig:
    """Where the webhook listens and how the API server reaches it (TIERED_WEBHOOK_* variables)."""

    port: int
    addr: str = "127.0.0.1"
    host: str | None = None
    cert_dir: str | None = None
    configuration: str = "tiered-operator.tiered.dev"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookConfig | None:
        """None unless TIERED_WEBHOOK_PORT is set (0 = pick a free port)."""
        port = env.get("TIERED_WEBHOOK_PORT", "").strip()
        if not port:
            return None
        return cls(
            port=int(port),
            addr=env.get("TIERED_WEBHOOK_ADDR", "").strip() or "127.0.0.1",
            host=env.get("TIERED_WEBHOOK_HOST", "").strip() or None,
            cert_dir=env.get("TIERED_WEBHOOK_CERT_DIR", "").strip() or None,
            configuration=env.get("TIERED_WEBHOOK_CONFIGURATION", "").strip() or "tiered-operator.tiered.dev",
        )


def ensure_certificates(config: WebhookConfig) -> tuple[Path, Path, Path]:
    """tls.crt, tls.key, ca.crt in the cert dir: mounted ones are used as they are, else a fresh CA is made."""
    directory = Path(config.cert_dir or tempfile.mkdtemp(prefix="tiered-webhook-"))
    cert, key, ca = directory / "tls.crt", directory / "tls.key", directory / "ca.crt"
    if not (cert.exists() and key.exists() and ca.exists()):
        hosts = [h for h in (config.host, config.addr, "127.0.0.1", "localhost") if h and h != "0.0.0.0"]
        made = build_webhook_certificates(list(dict.fromkeys(hosts)))
        directory.mkdir(parents=True, exist_ok=True)
        ca.write_bytes(made.ca_pem)
        cert.write_bytes(made.cert_pem)
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(made.key_pem)
    return cert, key, ca


@kopf.on.startup()
def residency_webhook_server(
    settings: kopf.OperatorSettings, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    config = WebhookConfig.from_env(os.environ)
    if config is None:
        logger.info("admission webhook disabled (set TIERED_WEBHOOK_PORT to serve it)")
        return
    cert, key, ca = ensure_certificates(config)
    settings.admission.server = kopf.WebhookServer(
        addr=config.addr, port=config.port or None, host=config.host, certfile=cert, pkeyfile=key, cafile=ca
    )
    settings.admission.managed = config.configuration
    logger.info("admission webhook on %s:%s, configuration %s", config.addr, config.port, config.configuration)


async def _namespace_policy(namespace: str, index: Mapping[str, Any] | None) -> NamespacePolicy:
    found = policy_from_index(index, namespace) if index is not None else None
    if found is not None:
        return found
    body = await _in_thread(api().namespace, namespace)  # a namespace created a moment ago
    meta = (body or {}).get("metadata") or {}
    return namespace_policy(meta.get("labels"), meta.get("annotations"))


def _old(kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object before an UPDATE (kopf passes it as `old`), or None on CREATE."""
    old = kwargs.get("old")
    return dict(old) if old else None


def _reject(message: str) -> None:
    raise kopf.AdmissionError(message, code=403)


@kopf.on.validate(labels.GROUP, labels.VERSION, labels.PLURAL_INFERENCE_TIERS, id="residency-inferencetier",
                  operations=["CREATE", "UPDATE"], ignore_failures=True)
async def residency_validate_tier(
    body: kopf.Body, namespace: str | None, **kwargs: Any
) -> None:
    if not in_scope(namespace):
        return
    assert namespace is not None
    policy = await _namespace_policy(namespace, kwargs.get(INDEX_NAMESPACES))
    decision = review_tier(dict(body), _old(kwargs), namespace, policy)
    if not decision.allowed:
        _reject(decision.message)


@kopf.on.validate(labels.GROUP, labels.VERSION, labels.PLURAL_ROUTING_POLICIES, id="residency-routingpolicy",
                  operations=["CREATE", "UPDATE"], ignore_failures=True)
async def residency_validate_policy(
    body: kopf.Body, namespace: str | None, **kwargs: Any
) -> None:
    if not in_scope(namespace):
        return
    assert namespace is not None
    policy = await _namespace_policy(namespace, kwargs.get(INDEX_NAMESPACES))
    items = await _in_thread(api().list, labels.GROUP, labels.VERSION, namespace, labels.PLURAL_INFERENCE_TIERS)
    tiers = {t["metadata"]["name"]: t for t in items}
    decision = review_policy(dict(body), _old(kwargs), namespace, policy, tiers)
    if not decision.allowed:
        _reject(decision.message)

