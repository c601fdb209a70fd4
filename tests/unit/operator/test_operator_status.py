"""Status computed from observation: local tiers from their Deployment, cloud tiers from their Secret,
policies from their resolution and the written ConfigMap; and 'write only on difference'."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tiered_operator.api.common import SecretKeyRef
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile.conditions import status_differs
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy
from tiered_operator.reconcile.status import (
    POLICY_STATUS_KEYS,
    TIER_STATUS_KEYS,
    TierObservation,
    policy_status,
    secret_problem,
    tier_status,
)
from tiered_operator.settings import OperatorSettings

MakeTier = Callable[..., InferenceTier]
CHILD = {"metadata": {"name": "x"}}


def _dep(
    desired: int = 1,
    ready: int = 1,
    updated: int | None = None,
    available: bool = True,
    gen: int = 2,
    observed_gen: int = 2,
    progressing_reason: str = "NewReplicaSetAvailable",
) -> dict[str, Any]:
    return {
        "metadata": {"name": "slm", "generation": gen},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": observed_gen,
            "replicas": desired,
            "readyReplicas": ready,
            "updatedReplicas": desired if updated is None else updated,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if available else "False",
                    "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                },
                {"type": "Progressing", "status": "True", "reason": progressing_reason, "message": "m"},
            ],
        },
    }


def _conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def _obs(dep: dict[str, Any] | None, **kw: Any) -> TierObservation:
    return TierObservation(deployment=dep, service=CHILD, configmap=CHILD, **kw)


def test_ready_local_tier(make_tier: MakeTier, settings: OperatorSettings) -> None:
    st = tier_status(make_tier(), _obs(_dep()), None, settings, "T")
    assert _conds(st) == {
        "Ready": ("True", "Ready"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "ModelReady": ("True", "ModelLoaded"),
        "Stalled": ("False", "NotStalled"),
        "ResidencyCompliant": ("True", "LocalTier"),
        "SLOMet": ("Unknown", "NoSLO"),
    }
    assert st["readyDisplay"] == "1/1" and st["replicas"] == 1 and st["readyReplicas"] == 1
    assert st["observedGeneration"] == 1 and all(c["observedGeneration"] == 1 for c in st["conditions"])
    assert st["selector"] == "tiered.dev/component=slm,tiered.dev/tier=slm"
    assert st["endpoint"] == "http://slm.team-a.svc:8080/v1"
    assert st["model"] == "m.gguf" and st["quantization"] == "Q4_K_M"


@pytest.mark.parametrize(
    ("dep", "ready", "model"),
    [
        (None, ("False", "DeploymentMissing"), ("Unknown", "Pending")),
        (_dep(ready=0, available=False), ("False", "ModelLoading"), ("False", "ModelLoading")),
        (_dep(desired=2, ready=1, updated=1), ("False", "RolloutInProgress"), ("True", "ModelLoaded")),
        (_dep(observed_gen=1), ("False", "RolloutInProgress"), ("True", "ModelLoaded")),
        (_dep(desired=0, ready=0), ("False", "ScaledToZero"), ("False", "ScaledToZero")),
        (
            _dep(ready=0, progressing_reason="ProgressDeadlineExceeded"),
            ("False", "ProgressDeadlineExceeded"),
            ("False", "ModelLoading"),
        ),
    ],
)
def test_not_ready_local_tier_says_why(
    make_tier: MakeTier, settings: OperatorSettings, dep: Any, ready: tuple[str, str], model: tuple[str, str]
) -> None:
    conds = _conds(tier_status(make_tier(), _obs(dep), None, settings, "T"))
    assert conds["Ready"] == ready and conds["ModelReady"] == model


def test_stalled_when_the_deployment_cannot_progress(make_tier: MakeTier, settings: OperatorSettings) -> None:
    dep = _dep(ready=0, progressing_reason="ProgressDeadlineExceeded")
    assert _conds(tier_status(make_tier(), _obs(dep), None, settings, "T"))["Stalled"] == (
        "True",
        "ProgressDeadlineExceeded",
    )


def test_missing_child_is_reported(make_tier: MakeTier, settings: OperatorSettings) -> None:
    st = tier_status(
        make_tier(), TierObservation(deployment=_dep(), service=None, configmap=CHILD), None, settings, "T"
    )
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ChildMissing" and "Service" in ready["message"]


def test_unrenderable_spec_is_stalled(make_tier: MakeTier, settings: OperatorSettings) -> None:
    st = tier_status(make_tier(), _obs(None, render_error="runtime vllm cannot load"), None, settings, "T")
    assert _conds(st)["Stalled"] == ("True", "UnsupportedSpec")


def test_autoscaled_tier_leaves_slomet_to_the_autoscaler(bodies: Any, settings: OperatorSettings) -> None:
    tier = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml")))
    st = tier_status(tier, _obs(_dep()), None, settings, "T")
    assert "SLOMet" not in _conds(st)


def test_second_computation_over_the_stored_status_is_not_a_difference(
    make_tier: MakeTier, settings: OperatorSettings
) -> None:
    first = tier_status(make_tier(), _obs(_dep()), None, settings, "T1")
    stored = {**first, "p95Ms": 12, "conditions": [*first["conditions"], {"type": "Other", "status": "True"}]}
    again = tier_status(make_tier(), _obs(_dep()), stored, settings, "T2")
    assert again == first  # same transition times, only our own conditions
    assert not status_differs(stored, again, TIER_STATUS_KEYS)
    changed = tier_status(make_tier(), _obs(_dep(ready=0, available=False)), stored, settings, "T3")
    assert status_differs(stored, changed, TIER_STATUS_KEYS)


def test_a_field_we_stopped_setting_is_a_difference() -> None:
    assert status_differs({"observedGeneration": 1, "configHash": "x"}, {"observedGeneration": 1}, POLICY_STATUS_KEYS)
    assert not status_differs({"observedGeneration": 1, "p95Ms": 3}, {"observedGeneration": 1}, TIER_STATUS_KEYS)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (None, "Secret 'k' not found"),
        ({"data": {"other": "c2VjcmV0"}}, "Secret 'k' has no key 'api-key' (keys present: other)"),
        ({"data": {"api-key": ""}}, "Secret 'k' key 'api-key' is empty"),
        ({"data": {"api-key": "c2stc2VjcmV0"}}, None),
    ],
)
def test_secret_problem_names_secret_and_key_never_the_value(secret: Any, problem: str | None) -> None:
    found = secret_problem(SecretKeyRef(name="k", key="api-key"), secret)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)
        assert "c2VjcmV0" not in found  # the (base64) value of the other key never appears


def test_cloud_tier_conditions(bodies: Any, settings: OperatorSettings) -> None:
    tier = InferenceTier.from_k8s(bodies.cloud_tier("gpt", region="eu-west-1"))
    ok = _conds(tier_status(tier, TierObservation(), None, settings, "T"))
    assert ok["Ready"] == ("True", "Ready") and ok["Available"] == ("True", "SecretFound")
    bad = tier_status(
        tier, TierObservation(secret_problem="Secret 'gpt-key' has no key 'api-key'"), None, settings, "T"
    )
    assert _conds(bad)["Ready"] == ("False", "SecretInvalid") and _conds(bad)["Stalled"] == ("True", "SecretInvalid")
    assert bad["readyDisplay"] == "-" and "replicas" not in bad and bad["endpoint"] == "https://api.openai.com/v1"
    local_only = TierObservation(namespace=NamespacePolicy.from_labels({"tiered.dev/residency": "local-only"}))
    assert _conds(tier_status(tier, local_only, None, settings, "T"))["ResidencyCompliant"] == (
        "False",
        "ResidencyForbidden",
    )
    wrong_region = TierObservation(namespace=NamespacePolicy.from_labels({"tiered.dev/allowed-regions": "us-east-1"}))
    assert _conds(tier_status(tier, wrong_region, None, settings, "T"))["Ready"] == ("False", "RegionNotAllowed")


def test_policy_status_missing_tier_then_pending_then_applied(
    make_tier: MakeTier, make_policy: Callable[..., RoutingPolicy], settings: OperatorSettings
) -> None:
    policy = make_policy(tiers=["slm", "ghost"])
    tiers = {"slm": make_tier()}
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    st = policy_status(policy, compiled, tiers, NamespacePolicy(), None, None, "T")
    tiers_resolved = next(c for c in st["conditions"] if c["type"] == "TiersResolved")
    assert tiers_resolved["status"] == "False" and "ghost" in tiers_resolved["message"]
    assert _conds(st)["Ready"] == ("False", "TierNotFound") and "configHash" not in st

    policy = make_policy(tiers=["slm"])
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    pending = policy_status(policy, compiled, tiers, NamespacePolicy(), None, st, "T")
    assert _conds(pending)["Ready"] == ("False", "ConfigPending") and _conds(pending)["TiersResolved"][0] == "True"
    cm = {"data": {"router.json": compiled.text}}
    done = policy_status(policy, compiled, tiers, NamespacePolicy(), cm, pending, "T")
    assert _conds(done)["Ready"] == ("True", "ConfigApplied") and done["configHash"] == compiled.config_hash
    assert "BudgetOK" not in _conds(done)  # the budget loop's condition
