"""The generated CRDs, installed into the real kube-apiserver, behave as documented.

Covers: installation (Established, structural), every sample accepted, the catalogue of invalid specs rejected
with a message a user understands, server defaults equal to the models' defaults, printer columns through
`kubectl get`, descriptions through `kubectl explain`, and `kubectl scale itier`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from tiered_operator.api import InferenceTier, RoutingPolicy
from tiered_operator.api.crdgen import KINDS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
SAMPLES = REPO / "manifests" / "samples"


def _load_cases() -> ModuleType:
    """The shared catalogue lives beside the unit tests (one list for both sides)."""
    path = REPO / "tests" / "unit" / "api" / "api_invalid_cases.py"
    spec = importlib.util.spec_from_file_location("tiered_api_invalid_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is being built
    spec.loader.exec_module(module)
    return module


cases = _load_cases()

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _model_for(obj: dict[str, Any]) -> type[BaseModel]:
    models: dict[str, type[BaseModel]] = {"InferenceTier": InferenceTier, "RoutingPolicy": RoutingPolicy}
    return models[obj["kind"]]


def _named(obj: dict[str, Any], name: str) -> dict[str, Any]:
    obj["metadata"] = {"name": name}
    return obj


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def shared_namespace(crds_installed: Any) -> Iterator[str]:
    """One namespace for the many rejection checks (nothing is created there when the API server does its job)."""
    name = f"t-api-invalid-{uuid.uuid4().hex[:6]}"
    crds_installed.kubectl("create", "namespace", name)
    yield name
    crds_installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


# --- installation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_crd_is_established_and_structural(crds_installed: Any, kind: str) -> None:
    crd = json.loads(crds_installed.kubectl("get", "crd", KINDS[kind].crd_name, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions
    assert crd["spec"]["names"]["shortNames"] == [KINDS[kind].short_name]
    assert crd["spec"]["names"]["categories"] == ["tiered"]


def test_generated_crds_pass_server_dry_run(crds_installed: Any) -> None:
    out = crds_installed.kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        "--force-conflicts",
        "--field-manager=tiered-tests",
        "-k",
        str(REPO / "crds"),
    )
    assert "inferencetiers.tiered.dev" in out.stdout and "routingpolicies.tiered.dev" in out.stdout


# --- samples -----------------------------------------------------------------------------------------------------


def test_every_sample_is_accepted(crds_installed: Any, namespace: str) -> None:
    crds_installed.kubectl(
        "apply", "--server-side", "--field-manager=tiered-tests", "-n", namespace, "-k", str(SAMPLES)
    )
    listed = json.loads(crds_installed.kubectl("get", "tiered", "-n", namespace, "-o", "json").stdout)["items"]
    names = sorted((o["kind"], o["metadata"]["name"]) for o in listed)
    assert names == [("InferenceTier", "gpt-cloud"), ("InferenceTier", "slm-edge"), ("RoutingPolicy", "hybrid")]
    for obj in listed:
        _model_for(obj).model_validate(obj)


@pytest.mark.parametrize("case", cases.VALID_CASES, ids=[c.id for c in cases.VALID_CASES])
def test_valid_variant_is_accepted(crds_installed: Any, shared_namespace: str, case: Any) -> None:
    obj = _named(case.build(), f"ok-{case.id}"[:63])
    result = crds_installed.kubectl(
        "create", "--dry-run=server", "-n", shared_namespace, "-f", "-", input=yaml.safe_dump(obj), check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", cases.VALID_CASES, ids=[c.id for c in cases.VALID_CASES])
def test_server_defaults_equal_model_defaults(crds_installed: Any, shared_namespace: str, case: Any) -> None:
    """What the API server stores (with its defaults) parses to exactly what the operator computes locally."""
    obj = _named(case.build(), f"defaults-{case.id}"[:63])
    out = crds_installed.kubectl(
        "create", "--dry-run=server", "-n", shared_namespace, "-o", "json", "-f", "-", input=yaml.safe_dump(obj)
    )
    stored = json.loads(out.stdout)
    model = _model_for(obj)
    assert model.model_validate(stored).model_dump()["spec"] == model.model_validate(obj).model_dump()["spec"]


# --- rejections --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases.CASES, ids=[c.id for c in cases.CASES])
def test_invalid_spec_is_rejected_with_a_clear_message(crds_installed: Any, shared_namespace: str, case: Any) -> None:
    name = f"bad-{case.id}"[:63]
    obj = _named(case.build(), name)
    result = crds_installed.kubectl("create", "-n", shared_namespace, "-f", "-", input=yaml.safe_dump(obj), check=False)
    assert result.returncode != 0, f"the API server accepted {case.id}"
    error = result.stderr
    assert "is invalid" in error
    assert case.server in error, error
    assert case.field in error, error
    gone = crds_installed.kubectl("get", obj["kind"].lower(), name, "-n", shared_namespace, check=False)
    assert gone.returncode != 0


def test_catalogue_covers_at_least_15_distinct_rejections() -> None:
    assert len({c.id for c in cases.CASES}) >= 15


# --- kubectl experience ------------------------------------------------------------------------------------------


def _get_table(kubectl: Kubectl, *args: str) -> list[dict[str, str]]:
    """`kubectl get` output as rows keyed by column header (empty cells stay empty strings)."""
    lines = kubectl("get", *args).stdout.rstrip("\n").splitlines()
    header = lines[0]
    starts = [i for i, ch in enumerate(header) if ch != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    bounds = [*starts[1:], None]
    return [
        {name: line[start:end].strip() for name, start, end in zip(names, starts, bounds, strict=True)}
        for line in lines[1:]
    ]


def _header(kubectl: Kubectl, *args: str) -> list[str]:
    return kubectl("get", *args).stdout.splitlines()[0].split()


def test_printer_columns_show_tier_state(crds_installed: Any, namespace: str) -> None:
    kubectl = crds_installed.kubectl
    kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-n", namespace, "-k", str(SAMPLES))
    status = {
        "status": {
            "observedGeneration": 1,
            "replicas": 2,
            "readyReplicas": 1,
            "readyDisplay": "1/2",
            "selector": "tiered.dev/tier=slm-edge",
            "model": "qwen2.5-1.5b-instruct-q4_k_m.gguf",
            "quantization": "Q4_K_M",
            "p95Ms": 42,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "ReplicasNotReady",
                    "message": "1 of 2 ready",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 1,
                }
            ],
        }
    }
    kubectl(
        "patch", "itier", "slm-edge", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    assert _header(kubectl, "itier", "-n", namespace) == [
        "NAME",
        "BACKEND",
        "MODEL",
        "QUANT",
        "READY",
        "P95",
        "SLO",
        "AGE",
    ]
    rows = {r["NAME"]: r for r in _get_table(kubectl, "itier", "-n", namespace)}
    local = rows["slm-edge"]
    assert [local[c] for c in ("BACKEND", "MODEL", "QUANT", "READY", "P95", "SLO")] == [
        "local",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        "Q4_K_M",
        "1/2",
        "42",
        "60",
    ]
    cloud = rows["gpt-cloud"]
    assert (cloud["BACKEND"], cloud["SLO"], cloud["READY"]) == ("cloud", "800", "")

    policy_status = {
        "status": {
            "localShare": "0.73",
            "monthToDateUSD": "12.40",
            "avoidedUSD": "31.02",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Configured",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    kubectl(
        "patch",
        "rpol",
        "hybrid",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(policy_status),
    )
    assert _header(kubectl, "rpol", "-n", namespace) == ["NAME", "DEFAULT", "READY", "LOCAL-SHARE", "SPEND", "AGE"]
    [policy] = _get_table(kubectl, "rpol", "-n", namespace)
    assert [policy[c] for c in ("NAME", "DEFAULT", "READY", "LOCAL-SHARE", "SPEND")] == [
        "hybrid",
        "slm-edge",
        "True",
        "0.73",
        "12.40",
    ]

    assert _header(kubectl, "itier", "slm-edge", "-n", namespace, "-o", "wide")[-2:] == ["RUNTIME", "ENDPOINT"]
    in_category = kubectl("get", "tiered", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(in_category) == [
        "inferencetier.tiered.dev/gpt-cloud",
        "inferencetier.tiered.dev/slm-edge",
        "routingpolicy.tiered.dev/hybrid",
    ]


def test_status_rejects_values_outside_the_schema(crds_installed: Any, namespace: str) -> None:
    kubectl = crds_installed.kubectl
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=tiered-tests",
        "-n",
        namespace,
        "-f",
        str(SAMPLES / "inferencetier-local-gguf.yaml"),
    )
    bad = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "Maybe", "reason": "X", "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]
        }
    }
    result = kubectl(
        "patch",
        "itier",
        "slm-edge",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert result.returncode != 0
    assert 'Unsupported value: "Maybe"' in result.stderr


def test_kubectl_explain_shows_field_descriptions(crds_installed: Any) -> None:
    kubectl = crds_installed.kubectl

    def explained() -> bool:
        return kubectl("explain", "inferencetier.spec", check=False).returncode == 0

    _wait_for(explained, timeout=60, what="the CRD's OpenAPI to be published")
    text = _words(kubectl("explain", "inferencetier.spec").stdout)
    assert "exactly one of local / cloud" in text
    for field in (
        "backend <string> -required-",
        "local <Object>",
        "cloud <Object>",
        "replicas <integer>",
        "autoscaling <Object>",
        "pricing <Object>",
        "slo <Object>",
    ):
        assert field in text, field
    assert "Required when backend is local" in text
    source = _words(kubectl("explain", "inferencetier.spec.local.model.source").stdout)
    assert "pvc://<claim>/<path>" in source
    policy = _words(kubectl("explain", "rpol.spec.defaultTier").stdout)
    assert "must be listed in tiers" in policy


def _words(text: str) -> str:
    """kubectl explain wraps descriptions at 80 columns; compare on single-spaced text."""
    return " ".join(text.split())


def test_kubectl_scale_changes_spec_replicas(crds_installed: Any, namespace: str) -> None:
    kubectl = crds_installed.kubectl
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=tiered-tests",
        "-n",
        namespace,
        "-f",
        str(SAMPLES / "inferencetier-local-gguf.yaml"),
    )
    kubectl(
        "patch",
        "itier",
        "slm-edge",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"replicas": 1, "selector": "tiered.dev/tier=slm-edge"}}),
    )
    kubectl("scale", "itier", "slm-edge", "-n", namespace, "--replicas=3")
    replicas = kubectl("get", "itier", "slm-edge", "-n", namespace, "-o", "jsonpath={.spec.replicas}").stdout
    assert replicas == "3"
    scale = json.loads(
        kubectl(
            "get", "--raw", f"/apis/tiered.dev/v1alpha1/namespaces/{namespace}/inferencetiers/slm-edge/scale"
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3
    assert scale["status"]["replicas"] == 1
    assert scale["status"]["selector"] == "tiered.dev/tier=slm-edge"
