"""The Argo CD health checks in manifests/argocd/: their health_test.yaml cases, their sandbox, their argocd-cm."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from argocd_lua import (
    GROUP,
    HEALTH_DIR,
    KINDS,
    REPO,
    HealthCase,
    HealthStatus,
    health_script_path,
    load_health_cases,
    load_object,
    run_health_check,
    run_health_script,
)

from tiered_operator.api.inferencetier import INFERENCE_TIER_CONDITION_TYPES, InferenceTier
from tiered_operator.api.routingpolicy import ROUTING_POLICY_CONDITION_TYPES, RoutingPolicy

ARGOCD_DIR = REPO / "manifests" / "argocd"
ALL_CASES = [case for kind in KINDS for case in load_health_cases(kind)]


def _case_id(case: HealthCase) -> str:
    return f"{case.kind}/{case.input_path.name}"


def _kubectl() -> str:
    """kubectl on PATH, else the one the local control plane build caches (kustomize is built into both)."""
    found = shutil.which("kubectl")
    if found:
        return found
    cached = sorted(Path.home().glob(".cache/tiered/controlplane/*/bin/kubectl"))
    if not cached:
        pytest.fail("kubectl is needed to render manifests/argocd with kustomize; none on PATH or in the cache")
    return str(cached[-1])


def _kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --- health_test.yaml, as Argo CD runs it ------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_health_check_returns_expected_status_and_message(case: HealthCase) -> None:
    assert run_health_check(case.kind, load_object(case.input_path)) == case.expected


@pytest.mark.parametrize("kind", KINDS)
def test_every_testdata_file_has_a_case_and_every_status_is_covered(kind: str) -> None:
    cases = load_health_cases(kind)
    referenced = {case.input_path.name for case in cases}
    on_disk = {p.name for p in (HEALTH_DIR / GROUP / kind / "testdata").glob("*.yaml")}
    assert referenced == on_disk
    assert {case.expected.status for case in cases} >= {"Healthy", "Progressing", "Degraded"}


@pytest.mark.parametrize("case", ALL_CASES, ids=_case_id)
def test_testdata_objects_match_the_api_models(case: HealthCase) -> None:
    """The objects the checks are tested on have the operator's status shape (the pydantic models)."""
    obj = load_object(case.input_path)
    assert obj["kind"] == case.kind
    model = InferenceTier if case.kind == "InferenceTier" else RoutingPolicy
    parsed = model.model_validate(obj)
    known_types = INFERENCE_TIER_CONDITION_TYPES if case.kind == "InferenceTier" else (
        *ROUTING_POLICY_CONDITION_TYPES, "Stalled")
    for condition in (parsed.status.conditions or []) if parsed.status else []:
        assert condition.type in known_types, f"{condition.type} is not a {case.kind} condition type"


def _lua_reason_table(kind: str, table: str) -> set[str]:
    script = health_script_path(kind).read_text()
    match = re.search(rf"local {table} = {{(.*?)}}", script, re.S)
    return set(re.findall(r"(\w+) = true", match.group(1))) if match else set()


def _operator_string_literals() -> set[str]:
    literals: set[str] = set()
    for path in (REPO / "operator" / "tiered_operator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
    return literals


@pytest.mark.parametrize("kind", KINDS)
def test_reasons_the_checks_single_out_are_reasons_the_operator_writes(kind: str) -> None:
    """A renamed reason in the operator would silently turn a Degraded tier into a Progressing one."""
    singled_out = _lua_reason_table(kind, "TERMINAL_REASONS") | _lua_reason_table(kind, "SUSPENDED_REASONS")
    assert _lua_reason_table(kind, "TERMINAL_REASONS"), "no TERMINAL_REASONS table found"
    assert singled_out - _operator_string_literals() == set()


# --- behaviour beyond the fixed cases ----------------------------------------------------------------------------


def _tier(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": "t", "namespace": "n", "generation": generation},
        "spec": {"backend": "cloud"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def _cond(type_: str, status: str, reason: str, generation: int = 1) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": "2026-11-28T13:40:00Z", "observedGeneration": generation}


@pytest.mark.parametrize("kind", KINDS)
def test_stale_stalled_condition_does_not_mark_a_new_generation_degraded(kind: str) -> None:
    """A spec edit may fix what stalled: until the operator looks again, the object is Progressing."""
    obj = _tier(2, {"observedGeneration": 1, "conditions": [_cond("Stalled", "True", "InvalidSpec")]})
    obj["kind"] = kind
    assert run_health_check(kind, obj).status == "Progressing"


@pytest.mark.parametrize("kind", KINDS)
def test_ready_false_with_an_unknown_reason_is_progressing_not_degraded(kind: str) -> None:
    obj = _tier(1, {"observedGeneration": 1, "conditions": [_cond("Ready", "False", "SomethingTransient")]})
    assert run_health_check(kind, obj) == HealthStatus("Progressing", "SomethingTransient")


@pytest.mark.parametrize("kind", KINDS)
def test_ready_false_with_a_terminal_reason_is_degraded(kind: str) -> None:
    obj = _tier(1, {"observedGeneration": 1, "conditions": [_cond("Ready", "False", "ResidencyForbidden")]})
    assert run_health_check(kind, obj) == HealthStatus("Degraded", "ResidencyForbidden")


@pytest.mark.parametrize("kind", KINDS)
def test_status_without_conditions_is_progressing(kind: str) -> None:
    assert run_health_check(kind, _tier(1, {"observedGeneration": 1})) == HealthStatus(
        "Progressing", "Waiting for the Ready condition"
    )


def test_runner_denies_libraries_argo_cd_does_not_open() -> None:
    """A script calling os.time() works in plain Lua but fails in Argo CD: the runner must fail it too."""
    with pytest.raises(Exception, match="os"):
        run_health_script('hs = {status = "Healthy", message = tostring(os.time())} return hs', _tier(1, None))


def test_runner_rejects_a_status_argo_cd_does_not_know() -> None:
    with pytest.raises(AssertionError, match="Fine"):
        run_health_script('return {status = "Fine"}', _tier(1, None))


# --- argocd-cm and the Application ------------------------------------------------------------------------------


def test_argocd_cm_embeds_exactly_the_tested_lua_files() -> None:
    rendered = _kustomize(ARGOCD_DIR)
    config_maps = [d for d in rendered if d["kind"] == "ConfigMap"]
    assert len(config_maps) == 1
    cm = config_maps[0]
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["metadata"]["namespace"] == "argocd"
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    expected = {
        f"resource.customizations.health.{GROUP}_{kind}": health_script_path(kind).read_text() for kind in KINDS
    }
    assert cm["data"] == expected


def test_application_points_at_a_kustomization_that_ships_both_crds() -> None:
    applications = [d for d in _kustomize(ARGOCD_DIR) if d["kind"] == "Application"]
    assert len(applications) == 1
    app = applications[0]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["metadata"]["namespace"] == "argocd"
    source_dir = REPO / app["spec"]["source"]["path"]
    assert (source_dir / "kustomization.yaml").is_file(), f"{source_dir} has no kustomization.yaml"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    crd_names = {
        d["metadata"]["name"] for d in _kustomize(source_dir) if d["kind"] == "CustomResourceDefinition"
    }
    assert {f"inferencetiers.{GROUP}", f"routingpolicies.{GROUP}"} <= crd_names
