"""The operator's one client of the Kubernetes API: server-side apply, deletes, status, scale, Events, and the few
reads the watches cannot answer.

Every write goes through `Kube` and is counted in `writes` (and logged), so a test or an operator log can show
that a steady state issues no write requests at all. The reconciler, the autoscaler and the budget loop share one
connection pool and one counter; `as_manager` gives a view that writes under another field manager.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cachetools
import kubernetes
from kubernetes.client.exceptions import ApiException

from tiered_operator import labels

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
# Metadata-only reads (the index audit needs uids, not 1,000 pod templates).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for every request: a hung connection must not stall a reconcile for good."""


def _drain(response: Any) -> bytes:
    """Read a raw (unparsed) response to its end, so its connection goes back to the pool."""
    data: bytes = response.data
    return data


def _json(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(_drain(response))
    return body


def _version(response: Any) -> str | None:
    """The resourceVersion of the object a write returned."""
    try:
        version = (_json(response).get("metadata") or {}).get("resourceVersion")
    except ValueError:
        return None
    return str(version) if version else None


@dataclass(frozen=True)
class _Endpoints:
    """The typed client methods for one kind (apply = server-side apply patch)."""

    patch: Callable[..., Any]
    delete: Callable[..., Any]


class _Shared:
    """What every view of one `Kube` shares: the connection pool, the write counter, the discovery cache."""

    def __init__(self, api: kubernetes.client.ApiClient, discovery_ttl: float) -> None:
        self.api = api
        self.writes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.discovery: cachetools.TTLCache[tuple[str, str, str], bool] = cachetools.TTLCache(64, discovery_ttl)


class Kube:
    """Thin, synchronous access to the Kubernetes API (call it from sync handlers or threads)."""

    def __init__(
        self,
        field_manager: str = labels.FIELD_MANAGER,
        api_client: kubernetes.client.ApiClient | None = None,
        reporting_instance: str = "tiered-operator",
        discovery_ttl: float = 60.0,
        _shared: _Shared | None = None,
    ) -> None:
        self.field_manager = field_manager
        self.reporting_instance = reporting_instance
        self._shared = _shared or _Shared(api_client or kubernetes.client.ApiClient(), discovery_ttl)
        api = self._shared.api
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.networking = kubernetes.client.NetworkingV1Api(api)
        self.policy = kubernetes.client.PolicyV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)

    def as_manager(self, field_manager: str) -> Kube:
        """The same client writing under `field_manager` (counted in the same `writes`)."""
        return Kube(field_manager, reporting_instance=self.reporting_instance, _shared=self._shared)

    # -- accounting ------------------------------------------------------------------------------------------

    @property
    def writes(self) -> Counter[str]:
        return self._shared.writes

    def _count(self, verb: str, kind: str, namespace: str, name: str, why: str = "") -> None:
        with self._shared.lock:
            self._shared.writes[f"{verb} {kind}"] += 1
        log.info("write %s %s %s/%s%s", verb, kind, namespace, name, f" ({why})" if why else "")

    @property
    def total_writes(self) -> int:
        with self._shared.lock:
            return sum(self._shared.writes.values())

    def _endpoints(self, kind: str) -> _Endpoints:
        if kind in ("Deployment", "Service", "ConfigMap", "NetworkPolicy", "PodDisruptionBudget"):
            typed = {
                "Deployment": (self.apps.patch_namespaced_deployment, self.apps.delete_namespaced_deployment),
                "Service": (self.core.patch_namespaced_service, self.core.delete_namespaced_service),
                "ConfigMap": (self.core.patch_namespaced_config_map, self.core.delete_namespaced_config_map),
                "NetworkPolicy": (
                    self.networking.patch_namespaced_network_policy,
                    self.networking.delete_namespaced_network_policy,
                ),
                "PodDisruptionBudget": (
                    self.policy.patch_namespaced_pod_disruption_budget,
                    self.policy.delete_namespaced_pod_disruption_budget,
                ),
            }[kind]
            return _Endpoints(typed[0], typed[1])
        if kind == "CiliumNetworkPolicy":
            group, version, plural = "cilium.io", "v2", "ciliumnetworkpolicies"

            def patch(name: str, namespace: str, **kw: Any) -> Any:
                return self.custom.patch_namespaced_custom_object(group, version, namespace, plural, name, **kw)

            def delete(name: str, namespace: str, **kw: Any) -> Any:
                return self.custom.delete_namespaced_custom_object(group, version, namespace, plural, name, **kw)

            return _Endpoints(patch, delete)
        raise ValueError(f"the operator does not write {kind} objects")

    # -- server-side apply -----------------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any], why: str = "") -> str | None:
        """Server-side apply under our field manager, forcing ownership of the fields we set (drift repair).
        Returns the resourceVersion the apply produced.

        Server-side apply merges map-lists by key, so an out-of-band edit of a key itself (a Service port number
        changed by hand) leaves a second entry behind that the API server then rejects (duplicate port name).
        Only then, the child's lists are replaced wholesale with a JSON merge patch and the apply is retried.
        """
        kind = str(manifest["kind"])
        meta = manifest["metadata"]
        name, namespace = str(meta["name"]), str(meta["namespace"])
        patch = self._endpoints(kind).patch
        apply_kwargs = {
            "field_manager": self.field_manager,
            "force": True,
            "_content_type": APPLY_PATCH,
            "_preload_content": False,
            "_request_timeout": REQUEST_TIMEOUT,
        }
        self._count("apply", kind, namespace, name, why)
        try:
            return _version(patch(name, namespace, body=dict(manifest), **apply_kwargs))
        except ApiException as exc:
            if exc.status != 422:
                raise
            log.warning("apply of %s %s/%s rejected (%s): replacing its lists", kind, namespace, name, exc.reason)
        replacement = {k: v for k, v in manifest.items() if k in ("spec", "data")}
        self._count("merge-patch", kind, namespace, name, "replace conflicting lists")
        _drain(
            patch(
                name,
                namespace,
                body=replacement,
                field_manager=self.field_manager,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        self._count("apply", kind, namespace, name, why)
        return _version(patch(name, namespace, body=dict(manifest), **apply_kwargs))

    def delete(self, kind: str, namespace: str, name: str, why: str = "") -> None:
        """Delete one of our children; already gone is fine."""
        self._count("delete", kind, namespace, name, why)
        try:
            _drain(
                self._endpoints(kind).delete(name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- status, scale ---------------------------------------------------------------------------------------

    def apply_status(self, plural: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        """Server-side apply of our slice of status: conditions is a map-list keyed by type, so the autoscaler's
        and the budget loop's conditions (other field managers) are left as they are. Returns the new
        resourceVersion."""
        self._count("apply-status", kind, namespace, name)
        body = {
            "apiVersion": labels.API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        rsp = self.custom.patch_namespaced_custom_object_status(
            labels.GROUP,
            labels.VERSION,
            namespace,
            plural,
            name,
            body=body,
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY_PATCH,
            _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return _version(rsp)

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set replicas through the scale subresource (never through the applied manifest)."""
        self._count("scale", "Deployment", namespace, name, f"replicas={replicas}")
        _drain(
            self.apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                body={"spec": {"replicas": replicas}},
                field_manager=self.field_manager,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    # -- events ----------------------------------------------------------------------------------------------

    def event(self, involved: Mapping[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """Post a core/v1 Event on a custom resource (shown by `kubectl describe`); best effort."""
        meta = involved["metadata"]
        namespace = str(meta["namespace"])
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", labels.API_VERSION),
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": labels.FIELD_MANAGER},
            "reportingComponent": labels.FIELD_MANAGER,
            "reportingInstance": self.reporting_instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._count("create", "Event", namespace, str(meta["name"]), reason)
        try:
            _drain(
                self.core.create_namespaced_event(
                    namespace,
                    body,  # type: ignore[arg-type]  # a plain dict serialises as the Event
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
        except ApiException as exc:  # an Event is best effort: never fail a reconcile for it
            log.warning("could not post Event %s on %s/%s: %s", reason, namespace, meta["name"], exc.reason)

    def ensure_peering(self, name: str, namespaces: list[str]) -> bool:
        """Create kopf's peering object(s) if missing (a write only when absent); False when the peering CRDs
        are not installed."""
        targets = (
            [(None, "clusterkopfpeerings", "ClusterKopfPeering")]
            if not namespaces
            else [(ns, "kopfpeerings", "KopfPeering") for ns in namespaces]
        )
        for namespace, plural, kind in targets:
            body: dict[str, Any] = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
            try:
                if namespace is None:
                    self.custom.get_cluster_custom_object("kopf.dev", "v1", plural, name)
                else:
                    self.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, plural, name)
                continue
            except ApiException as exc:
                if exc.status != 404:
                    raise
            self._count("create", kind, namespace or "", name)
            try:
                if namespace is None:
                    self.custom.create_cluster_custom_object("kopf.dev", "v1", plural, body)
                else:
                    body["metadata"]["namespace"] = namespace
                    self.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, plural, body)
            except ApiException as exc:
                if exc.status == 404:
                    return False  # the peering CRDs are not installed
                if exc.status != 409:
                    raise
        return True

    # -- reads -----------------------------------------------------------------------------------------------

    def peering_status(self, name: str, namespaces: list[str]) -> dict[str, Any]:
        """kopf's peering record(s): peer id → {priority, lastseen, lifetime}, merged over the namespaces
        (cluster-wide when none)."""
        out: dict[str, Any] = {}
        targets: list[str | None] = list(namespaces) or [None]
        for namespace in targets:
            if namespace is not None and any(c in namespace for c in "*?["):
                continue  # a pattern: kopf keeps one record per matching namespace, not enumerable here
            try:
                if namespace is None:
                    body = self.custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
                else:
                    body = self.custom.get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if isinstance(body, Mapping):
                out.update(body.get("status") or {})
        return out

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as a plain dict, or None when absent. Callers inspect keys only."""
        try:
            return _json(
                self.core.read_namespaced_secret(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment's scale subresource, None when the Deployment does not exist."""
        try:
            scale = _json(
                self.apps.read_namespaced_deployment_scale(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return int((scale.get("spec") or {}).get("replicas") or 0)

    def namespace_metadata(self, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
        """The namespace's labels and annotations (residency reads both), empty when it does not exist."""
        try:
            meta = (
                _json(
                    self.core.read_namespace(namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT)
                ).get("metadata")
                or {}
            )
        except ApiException as exc:
            if exc.status == 404:
                return {}, {}
            raise
        return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})

    def served(self, group: str, version: str, kind: str) -> bool:
        """Whether API discovery lists `kind` in group/version (cached for the discovery TTL)."""
        key = (group, version, kind)
        with self._shared.lock:
            found = self._shared.discovery.get(key)
        if found is not None:
            return found
        try:
            rsp = self.custom.get_api_resources(
                group, version, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
            resources = _json(rsp).get("resources") or []
            served = any(r.get("kind") == kind and "/" not in str(r.get("name", "")) for r in resources)
        except ApiException as exc:
            if exc.status != 404:
                raise
            served = False
        with self._shared.lock:
            self._shared.discovery[key] = served
        return served

    def forget_discovery(self) -> None:
        """A CRD appeared or went away: ask discovery again next time."""
        with self._shared.lock:
            self._shared.discovery.clear()

    def list_uids(self, kind: str) -> set[str]:
        """uids of every object of `kind` (children: only those labelled as ours; InferenceTier, RoutingPolicy:
        all), from one cluster-wide LIST answered with metadata only."""
        selector = f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY_VALUE}"
        opts: dict[str, Any] = {
            "_preload_content": False,
            "_headers": {"Accept": METADATA_LIST},
            "_request_timeout": REQUEST_TIMEOUT,
        }
        rsp: Any
        if kind == "Deployment":
            rsp = self.apps.list_deployment_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "Service":
            rsp = self.core.list_service_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "ConfigMap":
            rsp = self.core.list_config_map_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "NetworkPolicy":
            rsp = self.networking.list_network_policy_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "PodDisruptionBudget":
            rsp = self.policy.list_pod_disruption_budget_for_all_namespaces(label_selector=selector, **opts)
        else:
            plural = {
                labels.KIND_INFERENCE_TIER: labels.PLURAL_INFERENCE_TIERS,
                labels.KIND_ROUTING_POLICY: labels.PLURAL_ROUTING_POLICIES,
            }[kind]
            rsp = self.custom.list_cluster_custom_object(labels.GROUP, labels.VERSION, plural, **opts)
        return {str(item["metadata"]["uid"]) for item in _json(rsp).get("items") or []}

    def uid_of(self, kind: str, namespace: str, name: str) -> str | None:
        """The uid of the named object, or None when the API server has no such object (metadata-only GET)."""
        opts: dict[str, Any] = {
            "_preload_content": False,
            "_headers": {"Accept": METADATA_ONE},
            "_request_timeout": REQUEST_TIMEOUT,
        }
        readers: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.read_namespaced_deployment,
            "Service": self.core.read_namespaced_service,
            "ConfigMap": self.core.read_namespaced_config_map,
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
            "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
        }
        try:
            if kind in readers:
                rsp = readers[kind](name, namespace, **opts)
            else:
                plural = {
                    labels.KIND_INFERENCE_TIER: labels.PLURAL_INFERENCE_TIERS,
                    labels.KIND_ROUTING_POLICY: labels.PLURAL_ROUTING_POLICIES,
                }[kind]
                rsp = self.custom.get_namespaced_custom_object(
                    labels.GROUP, labels.VERSION, namespace, plural, name, **opts
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(_json(rsp)["metadata"]["uid"])
