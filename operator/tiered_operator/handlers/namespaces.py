"""Namespace and API changes that re-evaluate residency: a relabelled namespace (its tiers' router configs,
conditions and NetworkPolicies follow within seconds, read from the namespace index), and Cilium's CRD appearing
or going away (FQDN egress rules are applied only where the cluster serves them)."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator.handlers.runtime import reconciler
from tiered_operator.residency import namespace_policy
from tiered_operator.residency.cilium import CILIUM_GROUP, CILIUM_PLURAL


@kopf.on.event("", "v1", "namespaces")
def namespace_event(name: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    rec = reconciler(memo)
    if not rec.settings.in_scope(name):
        return
    meta = body.get("metadata") or {}
    deleted = kwargs.get("type") == "DELETED" or bool(meta.get("deletionTimestamp"))
    fingerprint = None if deleted else namespace_policy(meta.get("labels"), meta.get("annotations")).fingerprint()
    rec.namespace_changed(rec.indexes(kwargs), name, fingerprint)


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name == f"{CILIUM_PLURAL}.{CILIUM_GROUP}",
)
def cilium_crd_event(memo: Any, **kwargs: Any) -> None:
    rec = reconciler(memo)
    rec.cilium_changed(rec.indexes(kwargs))
