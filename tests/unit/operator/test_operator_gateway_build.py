"""Gateway mode: a policy's own router Deployment, Service, PodDisruptionBudget, egress, and a Ready condition that
waits for the gateway to serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.reconcile.gateway import (
    build_gateway_deployment,
    build_gateway_disruption_budget,
    build_gateway_service,
    gateway_endpoint,
)
from tiered_operator.reconcile.pods import PodProblem
from tiered_operator.reconcile.router_config import (
    NamespacePolicy,
    compile_policy,
    router_sidecar,
    tier_router_config,
)
from tiered_operator.reconcile.status import GatewayObservation, policy_status
from tiered_operator.residency import EgressSubject, build_network_policies, namespace_policy
from tiered_operator.settings import OperatorSettings


def _tiers(bodies: Any) -> dict[str, InferenceTier]:
    local = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-local-gguf.yaml")))
    cloud = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-cloud.yaml")))
    return {"slm-edge": local, "gpt-cloud": cloud}


def _gateway_policy(bodies: Any, replicas: int = 3) -> RoutingPolicy:
    body = bodies.with_meta(bodies.sample("routingpolicy-hybrid.yaml"))
    body["spec"]["router"] = {"mode": "gateway", "replicas": replicas,
                              "resources": {"requests": {"cpu": "200m"}}}  # fmt: skip
    return RoutingPolicy.from_k8s(body)


def test_gateway_runs_the_sidecars_router_with_the_policys_own_config(
    bodies: Any, settings: OperatorSettings
) -> None:
    tiers = _tiers(bodies)
    policy = _gateway_policy(bodies)
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    dep = build_gateway_deployment(policy, router_sidecar(policy, compiled, tiers), settings)
    assert dep["metadata"]["name"] == "hybrid-gateway" and dep["spec"]["replicas"] == 3
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "RoutingPolicy"
    selector = {"tiered.dev/policy": "hybrid", "tiered.dev/component": "router"}
    assert dep["spec"]["selector"] == {"matchLabels": selector}
    pod = dep["spec"]["template"]["spec"]
    (router,) = pod["containers"]
    assert router["args"] == ["serve", "--config=/etc/tiered/router/router.json", "--host=0.0.0.0", "--port=8000"]
    assert router["resources"] == {"requests": {"cpu": "200m"}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["router-config"]["configMap"] == {"name": "hybrid-policy"}  # the policy's compiled config
    assert volumes["key-gpt-cloud"]["secret"]["secretName"] == "openai-api-key"  # the cloud tier's key only
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["runAsNonRoot"] is True
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == {"matchLabels": selector}
    assert "annotations" not in dep["spec"]["template"]["metadata"]  # config changes are hot-reloaded


def test_residency_drops_the_cloud_key_from_a_local_only_gateway(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    policy = _gateway_policy(bodies)
    local_only = NamespacePolicy.from_labels({"tiered.dev/residency": "local-only"})
    compiled = compile_policy(policy, tiers, local_only, settings)
    assert router_sidecar(policy, compiled, tiers).key_mounts == ()
    subject = EgressSubject.for_gateway(policy)
    assert build_network_policies(subject, local_only.policy, [tiers["gpt-cloud"]]) == []


def test_gateway_egress_is_owned_by_the_policy_and_selects_its_pods(bodies: Any) -> None:
    cloud = InferenceTier.from_k8s(bodies.with_meta(bodies.sample("inferencetier-cloud.yaml")))
    cloud.spec.cloud.egress.cidrs = ["203.0.113.0/24"]  # type: ignore[union-attr]
    (netpol,) = build_network_policies(EgressSubject.for_gateway(_gateway_policy(bodies)),
                                       namespace_policy({}), [cloud])  # fmt: skip
    assert netpol["metadata"]["name"] == "hybrid-gateway-allow-cloud-gpt-cloud"
    assert netpol["metadata"]["ownerReferences"][0]["kind"] == "RoutingPolicy"
    assert netpol["spec"]["podSelector"] == {"matchLabels": {"tiered.dev/policy": "hybrid",
                                                             "tiered.dev/component": "router"}}  # fmt: skip


def test_service_and_disruption_budget(bodies: Any, settings: OperatorSettings) -> None:
    policy = _gateway_policy(bodies)
    svc = build_gateway_service(policy, settings)
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8000, "http"), ("metrics", 9090, "http")]  # fmt: skip
    pdb = build_gateway_disruption_budget(policy)
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": svc["spec"]["selector"]}}
    assert gateway_endpoint("hybrid", "team-a", settings) == "http://hybrid-gateway.team-a.svc:8000/v1"


def test_sidecars_do_not_serve_a_gateway_policy(bodies: Any, settings: OperatorSettings) -> None:
    tiers = _tiers(bodies)
    policy = _gateway_policy(bodies)
    compiled = [compile_policy(policy, tiers, NamespacePolicy(), settings)]
    trc = tier_router_config(tiers["slm-edge"], compiled, [policy], tiers, NamespacePolicy(), settings)
    assert trc.primary_policy is None  # the tier's sidecar passes through; the gateway serves the policy


def _deployment(replicas: int, ready: int, generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                       "readyReplicas": ready}}  # fmt: skip


def _ready(status: dict[str, Any]) -> tuple[str, str, str]:
    cond = next(c for c in status["conditions"] if c["type"] == "Ready")
    return cond["status"], cond["reason"], cond["message"]


def test_ready_only_when_the_gateway_serves(
    bodies: Any, settings: OperatorSettings, make_policy: Callable[..., RoutingPolicy]
) -> None:
    tiers = _tiers(bodies)
    policy = _gateway_policy(bodies, replicas=2)
    compiled = compile_policy(policy, tiers, NamespacePolicy(), settings)
    cm = {"data": {"router.json": compiled.text}}
    endpoint = gateway_endpoint("hybrid", "team-a", settings)

    def status(**obs: Any) -> dict[str, Any]:
        gateway = GatewayObservation(endpoint=endpoint, **obs)
        return policy_status(policy, compiled, tiers, NamespacePolicy(), cm, None, "T", gateway)

    assert _ready(status())[:2] == ("False", "GatewayPending")
    svc = {"metadata": {"name": "hybrid-gateway"}}
    assert _ready(status(deployment=_deployment(2, 1), service=svc)) == (
        "False", "GatewayStarting", "gateway hybrid-gateway: 1/2 router pods ready")
    problem = PodProblem("Unschedulable", "pod hybrid-gateway-x: 0/1 nodes are available: 1 Insufficient cpu.")
    assert _ready(status(deployment=_deployment(2, 0), service=svc, pod_problem=problem))[1] == "Unschedulable"
    done = status(deployment=_deployment(2, 2), service=svc)
    assert _ready(done)[:2] == ("True", "GatewayReady") and done["endpoint"] == endpoint
    sidecar = make_policy("side", tiers=["slm-edge"])
    plain = policy_status(sidecar, compile_policy(sidecar, tiers, NamespacePolicy(), settings), tiers,
                          NamespacePolicy(), None, None, "T")  # fmt: skip
    assert "endpoint" not in plain
