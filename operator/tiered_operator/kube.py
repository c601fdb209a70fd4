"""The operator's only writer to the API server: server-side apply, status merge patches, scale, Events.

Every write goes through `Kube` and is counted in `writes` (and logged), so a test or an operator log can show
that a steady state issues no write requests at all.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from tiered_operator import labels

log = logging.getLogger(__name__)

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
# Metadata-only reads (the index audit needs uids, not 1,000 pod templates).
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA_ONE = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"


def _drain(response: Any) -> None:
    """Read a raw (unparsed) response so its connection goes back to the pool; we never need the body."""
    _ = response.data


class Kube:
    """Thin, synchronous access to the Kubernetes API (call it from sync handlers or threads)."""

    def __init__(
        self,
        field_manager: str = labels.FIELD_MANAGER,
        api_client: kubernetes.client.ApiClient | None = None,
        reporting_instance: str = "tiered-operator",
    ) -> None:
        self.field_manager = field_manager
        self.api = api_client or kubernetes.client.ApiClient()
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.apps = kubernetes.client.AppsV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.reporting_instance = reporting_instance
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, verb: str, kind: str, namespace: str, name: str, why: str = "") -> None:
        with self._lock:
            self.writes[f"{verb} {kind}"] += 1
        log.info("write %s %s %s/%s%s", verb, kind, namespace, name, f" ({why})" if why else "")

    @property
    def total_writes(self) -> int:
        with self._lock:
            return sum(self.writes.values())

    # -- server-side apply ---------------------------------------------------------------------------------

    def apply(self, manifest: Mapping[str, Any], why: str = "") -> None:
        """Server-side apply under our field manager, forcing ownership of the fields we set (drift repair).

        Server-side apply merges map-lists by key, so an out-of-band edit of a key itself (a Service port number
        changed by hand) leaves a second entry behind that the API server then rejects (duplicate port name).
        Only then, the child's lists are replaced wholesale with a JSON merge patch and the apply is retried.
        """
        kind = str(manifest["kind"])
        meta = manifest["metadata"]
        name, namespace = str(meta["name"]), str(meta["namespace"])
        patchers: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "Service": self.core.patch_namespaced_service,
            "ConfigMap": self.core.patch_namespaced_config_map,
        }
        patch = patchers[kind]
        self._count("apply", kind, namespace, name, why)
        try:
            _drain(
                patch(
                    name,
                    namespace,
                    body=dict(manifest),
                    field_manager=self.field_manager,
                    force=True,
                    _content_type=APPLY_PATCH,
                    _preload_content=False,
                )
            )
            return
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
            )
        )
        self._count("apply", kind, namespace, name, why)
        _drain(
            patch(
                name,
                namespace,
                body=dict(manifest),
                field_manager=self.field_manager,
                force=True,
                _content_type=APPLY_PATCH,
                _preload_content=False,
            )
        )

    def delete(self, kind: str, namespace: str, name: str, why: str = "") -> None:
        deleters: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.delete_namespaced_deployment,
            "Service": self.core.delete_namespaced_service,
            "ConfigMap": self.core.delete_namespaced_config_map,
        }
        self._count("delete", kind, namespace, name, why)
        try:
            _drain(deleters[kind](name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- status, scale ---------------------------------------------------------------------------------------

    def apply_status(self, plural: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> str | None:
        """Server-side apply of our slice of status: conditions is a map-list keyed by type, so the autoscaler's
        and the budget loop's conditions (other field managers) are left as they are. Returns the new
        resourceVersion."""
        self._count("apply-status", kind, namespace, name)
        rsp = self.custom.patch_namespaced_custom_object_status(
            labels.GROUP,
            labels.VERSION,
            namespace,
            plural,
            name,
            body={
                "apiVersion": labels.API_VERSION,
                "kind": kind,
                "metadata": {"name": name, "namespace": namespace},
                "status": dict(status),
            },
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY_PATCH,
            _preload_content=False,
        )
        try:
            body = json.loads(rsp.data)  # type: ignore[attr-defined]  # raw urllib3 response
        except ValueError:
            return None
        meta = body.get("metadata") or {}
        return str(meta["resourceVersion"]) if meta.get("resourceVersion") else None

    def scale_deployment(self, namespace: str, name: str, replicas: int, field_manager: str) -> None:
        """Set replicas through the scale subresource (never through the applied manifest)."""
        self._count("scale", "Deployment", namespace, name, f"replicas={replicas}")
        _drain(
            self.apps.patch_namespaced_deployment_scale(
                name,
                namespace,
                body={"spec": {"replicas": replicas}},
                field_manager=field_manager,
                _content_type=MERGE_PATCH,
                _preload_content=False,
            )
        )

    # -- reads -----------------------------------------------------------------------------------------------

    def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Secret as a plain dict, or None when absent. Callers inspect keys only."""
        try:
            rsp = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        body: dict[str, Any] = json.loads(rsp.data)  # type: ignore[arg-type]  # raw urllib3 response
        return body

    def list_uids(self, kind: str) -> set[str]:
        """uids of every object of `kind` (Deployment, Service, ConfigMap: only those labelled as ours;
        InferenceTier, RoutingPolicy: all), from one cluster-wide LIST answered with metadata only."""
        selector = f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY_VALUE}"
        opts: dict[str, Any] = {"_preload_content": False, "_headers": {"Accept": METADATA_LIST}}
        rsp: Any
        if kind == "Deployment":
            rsp = self.apps.list_deployment_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "Service":
            rsp = self.core.list_service_for_all_namespaces(label_selector=selector, **opts)
        elif kind == "ConfigMap":
            rsp = self.core.list_config_map_for_all_namespaces(label_selector=selector, **opts)
        else:
            plural = {labels.KIND_INFERENCE_TIER: labels.PLURAL_INFERENCE_TIERS,
                      labels.KIND_ROUTING_POLICY: labels.PLURAL_ROUTING_POLICIES}[kind]  # fmt: skip
            rsp = self.custom.list_cluster_custom_object(labels.GROUP, labels.VERSION, plural, **opts)
        items = json.loads(rsp.data).get("items") or []  # raw urllib3 response
        return {str(item["metadata"]["uid"]) for item in items}

    def uid_of(self, kind: str, namespace: str, name: str) -> str | None:
        """The uid of the named object, or None when the API server has no such object (metadata-only GET)."""
        opts: dict[str, Any] = {"_preload_content": False, "_headers": {"Accept": METADATA_ONE}}
        rsp: Any
        try:
            if kind == "Deployment":
                rsp = self.apps.read_namespaced_deployment(name, namespace, **opts)
            elif kind == "Service":
                rsp = self.core.read_namespaced_service(name, namespace, **opts)
            elif kind == "ConfigMap":
                rsp = self.core.read_namespaced_config_map(name, namespace, **opts)
            else:
                plural = {labels.KIND_INFERENCE_TIER: labels.PLURAL_INFERENCE_TIERS,
                          labels.KIND_ROUTING_POLICY: labels.PLURAL_ROUTING_POLICIES}[kind]  # fmt: skip
                rsp = self.custom.get_namespaced_custom_object(
                    labels.GROUP, labels.VERSION, namespace, plural, name, **opts
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(json.loads(rsp.data)["metadata"]["uid"])  # raw urllib3 response

    def namespace_metadata(self, namespace: str) -> tuple[dict[str, str], dict[str, str]]:
        """The namespace's labels and annotations (residency reads both), empty when it does not exist."""
        try:
            rsp = self.core.read_namespace(namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return {}, {}
            raise
        meta = json.loads(rsp.data).get("metadata") or {}  # type: ignore[attr-defined]  # raw urllib3 response
        return dict(meta.get("labels") or {}), dict(meta.get("annotations") or {})

    # -- events ----------------------------------------------------------------------------------------------

    def event(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        type_: str = "Normal",
    ) -> None:
        """Post a core/v1 Event on a custom resource (shown by `kubectl describe`)."""
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
            _drain(self.core.create_namespaced_event(namespace, body, _preload_content=False))  # type: ignore[arg-type]
        except ApiException as exc:  # an Event is best effort: never fail a reconcile for it
            log.warning("could not post Event %s on %s/%s: %s", reason, namespace, meta["name"], exc.reason)
