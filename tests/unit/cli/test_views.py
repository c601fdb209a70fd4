"""`tiered status` / `tiered explain` formatting and policy bundles (pure, no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiered_operator.views import bundle_from_documents, compile_bundle, render_status

SAMPLES = Path(__file__).resolve().parents[3] / "manifests" / "samples"


def _tier(name: str, backend: str, ready: str, p95: int | None) -> dict:
    status: dict = {"conditions": [{"type": "Ready", "status": ready}, {"type": "SLOMet", "status": "True"}],
                    "readyReplicas": 2}
    if p95 is not None:
        status["p95Ms"] = p95
    return {"metadata": {"namespace": "ml", "name": name},
            "spec": {"backend": backend, "replicas": 3, "slo": {"latencyP95Ms": 60}}, "status": status}


def test_status_table_shows_p95_against_slo_and_replicas() -> None:
    policy = {"metadata": {"namespace": "ml", "name": "hybrid"},
              "spec": {"defaultTier": "edge", "budget": {"monthlyUSD": "500"}},
              "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "BudgetOK", "status": "True"}],
                         "localShare": "0.82", "monthToDateUSD": "12.50", "avoidedUSD": "40.10"}}
    out = render_status([_tier("edge", "local", "True", 42), _tier("cloud", "cloud", "False", None)], [policy])
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAMESPACE", "TIER", "BACKEND", "READY", "REPLICAS", "P95"]
    edge = next(line for line in lines if " edge " in line)
    assert edge.split()[2:7] == ["local", "True", "2/3", "42ms", "60ms"]
    cloud = next(line for line in lines if " cloud " in line)
    assert cloud.split()[2:6] == ["cloud", "False", "-", "-"]
    hybrid = next(line for line in lines if "hybrid" in line)
    assert "0.82" in hybrid and "$12.50 / $500" in hybrid and "$40.10" in hybrid


def test_status_says_why_a_tier_is_not_ready() -> None:
    tier = _tier("edge", "local", "False", None)
    tier["status"]["conditions"][0].update(
        reason="Unschedulable", message='0/1 pods ready; pod edge-1: persistentvolumeclaim "models" not found')
    out = render_status([tier, _tier("ok", "local", "True", None)], [])
    assert out.splitlines()[-2:] == [
        "Not ready:",
        '  InferenceTier ml/edge: Unschedulable: 0/1 pods ready; pod edge-1: persistentvolumeclaim "models" not found',
    ]


def test_status_says_when_nothing_exists() -> None:
    assert render_status([], []).splitlines() == ["No InferenceTiers found.", "", "No RoutingPolicies found."]


def _sample_bundle_text() -> str:
    docs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return yaml.safe_dump_all([d for d in docs if d.get("kind") in ("InferenceTier", "RoutingPolicy")])


def test_sample_policy_compiles_like_the_operator_compiles_it() -> None:
    config = compile_bundle(bundle_from_documents(_sample_bundle_text(), residency="local-only"))
    assert config.residency.namespace_class.value == "local-only"
    assert {t.name for t in config.tiers} >= {config.default_tier}


def test_bundle_without_its_tiers_names_the_missing_ones() -> None:
    policy_only = [d for d in yaml.safe_load_all(_sample_bundle_text()) if d["kind"] == "RoutingPolicy"]
    with pytest.raises(ValueError, match="tiers that were not found"):
        compile_bundle(bundle_from_documents(yaml.safe_dump_all(policy_only)))


def test_bundle_needs_exactly_one_policy() -> None:
    with pytest.raises(ValueError, match="exactly one RoutingPolicy"):
        bundle_from_documents("kind: InferenceTier\nmetadata: {name: a}\n")
