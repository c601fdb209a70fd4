"""Decide whether an observed child already matches what the builder wants, so unchanged children are
never re-applied (zero writes at steady state).

Two checks, both needed:
- every field the builder sets is present with the same value in the observed object (`is_subset`) —
  this catches hand edits and deletions of fields we manage;
- the observed object carries the hash of the last applied desired manifest (`APPLIED_HASH`) — this catches
  fields the builder *stopped* setting, which a subset test cannot see; server-side apply then removes them.

The API server rewrites some values (quantities are canonicalised: `0.5` → `500m`, `1024Mi` → `1Gi`), so
quantities under `resources` compare by value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity

APPLIED_HASH = "tiered.dev/applied-hash"
"""Annotation on every child: hash of the desired manifest the operator applied last."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text, hence equal hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def content_hash(value: Any, length: int = 16) -> str:
    """A short, stable sha256 over the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def with_applied_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `manifest` with `APPLIED_HASH` set to the hash of the manifest itself (without the hash).

    The hash is over the manifest with `metadata.annotations` present (empty if it had none) and without the hash
    annotation; the canonical text is produced once and serves both the hash and the copy (this runs for every
    child on every reconcile)."""
    meta = dict(manifest.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
    text = canonical_json({**manifest, "metadata": {**meta, "annotations": annotations}})
    body: dict[str, Any] = json.loads(text)
    body["metadata"]["annotations"][APPLIED_HASH] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return body


def _quantity(value: Any) -> Decimal | None:
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, TypeError, InvalidOperation):
        return None


def is_subset(desired: Any, observed: Any, *, in_resources: bool = False) -> bool:
    """True when every value in `desired` appears equally in `observed` (lists compare element-wise)."""
    if isinstance(desired, Mapping):
        if not isinstance(observed, Mapping):
            return False
        for key, value in desired.items():
            if key not in observed:
                if value in ({}, [], None):
                    continue  # the server drops empty values; nothing to repair
                return False
            nested_resources = in_resources or key in ("limits", "requests")
            if not is_subset(value, observed[key], in_resources=nested_resources):
                return False
        return True
    if isinstance(desired, list):
        if not isinstance(observed, list):
            return False
        key = _list_key(desired)
        if key is not None:
            # Map-lists (containers, ports, env, ownerReferences …) are merged by key under server-side
            # apply; entries other managers added are not ours to remove, so match ours by key.
            by_key = {o.get(key): o for o in observed if isinstance(o, Mapping)}
            return all(d[key] in by_key and is_subset(d, by_key[d[key]], in_resources=in_resources) for d in desired)
        if len(desired) != len(observed):
            return False
        return all(is_subset(d, o, in_resources=in_resources) for d, o in zip(desired, observed, strict=True))
    if in_resources and isinstance(desired, str | int | float) and not isinstance(desired, bool):
        left, right = _quantity(desired), _quantity(observed)
        if left is not None and right is not None:
            return left == right
    return bool(desired == observed)


def _list_key(items: list[Any]) -> str | None:
    """The merge key of a list of objects (`uid` or `name`) when every entry has a distinct one."""
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    for key in ("uid", "name"):
        values = [i.get(key) for i in items]
        if all(v is not None for v in values) and len(set(values)) == len(values):
            return key
    return None


def needs_apply(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """Whether server-side apply must run for this child (absent, edited, or desired state changed)."""
    if observed is None:
        return True
    want = desired.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH)
    have = (observed.get("metadata") or {}).get("annotations", {}).get(APPLIED_HASH)
    if want is None or want != have:
        return True
    return not is_subset(_without_status(desired), observed)


def _without_status(manifest: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k != "status"}
