"""Recreate the Argo CD health testdata objects on a real kube-apiserver and read them back.

The testdata under manifests/argocd/health/ must be what the control plane really returns: an object of our CRDs,
created through the API, its status written through the status subresource (as the operator writes it), read
back with `kubectl get -o json`. `materialize` does exactly that for one testdata file; the integration test
compares the result with the file, and running this module rewrites the files from the control plane:

    .venv/bin/python tests/integration/gitops/live_health_objects.py   # needs `make dev-up` and crds/ applied
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from unit_modules import load_unit_module

REPO = Path(__file__).resolve().parents[3]
TESTDATA_NAMESPACE = "demo"
"""The namespace written into testdata files (each test run uses its own fresh namespace)."""
FIELD_MANAGER = "tiered-gitops-tests"
_VOLATILE_METADATA = ("uid", "resourceVersion", "creationTimestamp", "managedFields")

Kubectl = Callable[..., Any]
"""`Cluster.kubectl(*args, input=None, check=True)` from tiered_dev.devcluster."""


def load_argocd_lua() -> ModuleType:
    """tests/unit/gitops/argocd_lua.py: the Argo CD-like Lua runner the unit tests use."""
    return load_unit_module("argocd_lua")


def _earlier_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A valid spec that differs from `spec`, so replacing one by the other bumps metadata.generation."""
    earlier = copy.deepcopy(spec)
    if kind == "InferenceTier":
        earlier["replicas"] = int(spec.get("replicas", 1)) + 1
    else:
        others = [t for t in spec["tiers"] if t != spec["defaultTier"]]
        earlier["defaultTier"] = others[0]
    return earlier


def _manifest(obj: dict[str, Any], namespace: str, spec: dict[str, Any]) -> str:
    metadata = {"name": obj["metadata"]["name"], "namespace": namespace}
    for key in ("labels", "annotations"):
        if obj["metadata"].get(key):
            metadata[key] = obj["metadata"][key]
    return json.dumps({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": metadata, "spec": spec})


def materialize(kubectl: Kubectl, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Create `obj` in `namespace` with the same generation and status, and return what the API server holds.

    Generation N is reached by N-1 spec changes alternating with a slightly different spec, ending on the
    object's own spec; the status goes through the status subresource, as the operator writes it.
    """
    kind, name = obj["kind"], obj["metadata"]["name"]
    generation = int(obj["metadata"].get("generation", 1))
    final_spec = obj["spec"]
    other_spec = _earlier_spec(kind, final_spec)
    specs = [final_spec if (generation - 1 - i) % 2 == 0 else other_spec for i in range(generation)]
    for spec in specs:  # server-side apply: custom resources refuse updates without a resourceVersion
        kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-",
                input=_manifest(obj, namespace, spec))
    if "status" in obj:
        kubectl(
            "patch", kind.lower(), name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": obj["status"]}),
        )
    result = kubectl("get", kind.lower(), name, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout))


def as_testdata(live: dict[str, Any]) -> dict[str, Any]:
    """The read-back object without per-instance metadata, in the testdata namespace."""
    obj = copy.deepcopy(live)
    for key in _VOLATILE_METADATA:
        obj["metadata"].pop(key, None)
    obj["metadata"]["namespace"] = TESTDATA_NAMESPACE
    return obj


def health_testdata_files() -> list[tuple[str, Path]]:
    """(kind, path) of every health testdata file."""
    lua = load_argocd_lua()
    return [
        (kind, path)
        for kind in lua.KINDS
        for path in sorted((lua.HEALTH_DIR / lua.GROUP / kind / "testdata").glob("*.yaml"))
    ]


def capture() -> None:
    """Rewrite every testdata file with what the local control plane returns for it."""
    from tiered_dev import devcluster

    state_dir = Path(os.environ.get("TIERED_DEV_DIR", REPO / ".dev")).resolve()
    cluster = devcluster.up(state_dir, progress=lambda _msg: None)
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests", "-f", str(crd))
    namespace = "gitops-capture"
    cluster.kubectl("create", "namespace", namespace, check=False)
    try:
        for kind, path in health_testdata_files():
            source = yaml.safe_load(path.read_text())
            cluster.kubectl("delete", kind.lower(), source["metadata"]["name"], "-n", namespace, "--wait",
                            check=False)
            live = materialize(cluster.kubectl, namespace, source)
            path.write_text(yaml.safe_dump(as_testdata(live), sort_keys=False, width=120))
            print(f"captured {path.relative_to(REPO)}")
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


if __name__ == "__main__":
    capture()
