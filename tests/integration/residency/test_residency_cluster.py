"""Residency on the real control plane: the operator (as a process, with its own ServiceAccount) and its webhook
registered in the real API server over loopback TLS.

Every test works in its own `rz-…` namespace; the operator under test serves only `rz-*`, so other suites sharing
the control plane are never touched by it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tiered_dev.devcluster import Cluster
from tiered_router.config import load_config

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
WEBHOOK_CONFIGURATION = "tiered-operator.tiered.dev"
SETTLE = 10.0
"""The issue's bound: a relabelled namespace is re-evaluated within 10 s; every wait below uses it."""
CIDR = "203.0.113.0/24"
SHA = "a" * 64
T = TypeVar("T")


# --- helpers ----------------------------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = SETTLE, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (subprocess.CalledProcessError, KeyError, json.JSONDecodeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not true within {timeout:.0f}s (last: {last!r})")


def get(cluster: Cluster, kind: str, name: str, ns: str, *extra: str) -> dict[str, Any] | None:
    out = cluster.kubectl("get", kind, name, "-n", ns, "-o", "json", *extra, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def apply(cluster: Cluster, obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("apply", "-f", "-", input=json.dumps(obj), check=check)


def netpol_names(cluster: Cluster, ns: str) -> set[str]:
    out = cluster.kubectl("get", "networkpolicies", "-n", ns, "-l", "tiered.dev/component=network", "-o", "json")
    return {i["metadata"]["name"] for i in json.loads(out.stdout)["items"]}


def condition(cluster: Cluster, kind: str, name: str, ns: str, type_: str) -> dict[str, Any] | None:
    body = get(cluster, kind, name, ns) or {}
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def router_config(cluster: Cluster, ns: str, configmap: str = "slm-router") -> Any:
    cm = get(cluster, "configmap", configmap, ns)
    if cm is None:
        return None
    return load_config(cm["data"]["router.json"])


def local_tier(ns: str, name: str = "slm") -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backend": "local",
            "local": {"model": {"source": "https://models.example.com/tiny-q4.gguf", "sha256": SHA,
                                "quantization": "Q4_K_M"}},
        },
    }


def cloud_tier(ns: str, name: str = "gpt", region: str = "eu-west-1") -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backend": "cloud",
            "cloud": {
                "provider": "openai-compatible",
                "baseURL": "https://llm.example.com/v1",
                "model": "big",
                "apiKeySecretRef": {"name": "gpt-key"},
                "region": region,
                "egress": {"cidrs": [CIDR], "ports": [443]},
            },
        },
    }


def policy(ns: str, tiers: list[str], name: str = "hybrid") -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"tiers": tiers, "defaultTier": tiers[0],
                 "routes": [{"name": "chat", "tier": tiers[0], "examples": ["hello there"]}]},
    }


def secret(ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "gpt-key", "namespace": ns},
            "stringData": {"api-key": "sk-test"}}


def label_ns(cluster: Cluster, ns: str, **values: str | None) -> None:
    args = [f"{k}-" if v is None else f"{k}={v}" for k, v in values.items()]
    cluster.kubectl("label", "namespace", ns, "--overwrite", *args)


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def operator(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The operator as a process, with the webhook on a free loopback port, serving only `rz-*` namespaces."""
    crds = [str(REPO / "crds" / f) for f in ("inferencetiers.yaml", "routingpolicies.yaml")]
    for path in crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests", "-f", path)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"-f={p}" for p in crds))
    kubeconfig = cluster.operator_kubeconfig if cluster.operator_kubeconfig.exists() else cluster.kubeconfig
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "TIERED_WATCH_NAMESPACES": "rz-*",
        "TIERED_WEBHOOK_PORT": "0",
        "TIERED_WEBHOOK_ADDR": "127.0.0.1",
        "TIERED_WEBHOOK_CONFIGURATION": WEBHOOK_CONFIGURATION,
        "TIERED_DISCOVERY_TTL_SECONDS": "1",
        # Each RoutingPolicy holds one of kopf's sync-handler threads for its budget daemon; the suite creates
        # more policies than the default pool (8), and a starved pool would stall every handler of an object.
        "TIERED_WORKERS": "32",
    }
    # kopf.operator directly (not `tiered-operator --standalone`): the suite needs a namespace *pattern* and no
    # peering, and the process imports exactly what the shipped operator imports. `kill -USR1 <pid>` dumps every
    # thread's stack into the operator log (how a starved handler pool was diagnosed).
    code = (
        "import asyncio, faulthandler, logging, signal, sys, kopf, tiered_operator.handlers; "
        "faulthandler.register(signal.SIGUSR1); "
        "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s'); "
        "asyncio.run(kopf.operator(namespaces=['rz-*'], standalone=True))"
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=subprocess.STDOUT,
                                cwd=REPO)
    try:
        def registered() -> bool:
            vwc = get(cluster, "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "default")
            hooks = (vwc or {}).get("webhooks") or []
            return len(hooks) == 2 and all(h["clientConfig"].get("caBundle") for h in hooks)

        try:
            wait_for("webhook configuration registered", registered, timeout=60)
        except AssertionError:
            raise AssertionError(
                f"operator did not register its webhook; log:\n{log_path.read_text()[-4000:]}"
            ) from None
        yield cluster
    finally:
        _release_namespaces(cluster)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            cluster.kubectl("delete", kind, WEBHOOK_CONFIGURATION, "--ignore-not-found", check=False)
        if os.environ.get("TIERED_SHOW_OPERATOR_LOG"):
            print(log_path.read_text())


_CREATED: list[str] = []
"""Every namespace this module made; released before the operator stops (its finalizers need the operator)."""


def _release_namespaces(cluster: Cluster, timeout: float = 30.0) -> None:
    """Wait (bounded) for our namespaces to go; then drop our finalizers from what is left, so nothing lingers."""
    deadline = time.monotonic() + timeout
    remaining = list(_CREATED)
    while remaining and time.monotonic() < deadline:
        out = cluster.kubectl("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}", check=False)
        present = set(out.stdout.split())
        remaining = [n for n in remaining if n in present]
        time.sleep(0.5)
    for ns in remaining:
        for kind in ("inferencetiers", "routingpolicies"):
            names = cluster.kubectl("get", kind, "-n", ns, "-o", "name", check=False).stdout.split()
            for name in names:
                cluster.kubectl("patch", name, "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
                                check=False)


@pytest.fixture
def make_ns(operator: Cluster) -> Iterator[Callable[..., str]]:
    created: list[str] = []

    def make(**ns_labels: str) -> str:
        name = f"rz-{uuid.uuid4().hex[:8]}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": ns_labels}}
        apply(operator, body)
        created.append(name)
        _CREATED.append(name)
        return name

    yield make
    for name in created:
        operator.kubectl("delete", "namespace", name, "--wait=false", check=False)


def populate(cluster: Cluster, ns: str) -> None:
    """Secret, local tier, cloud tier, mixed policy (slm first: the default tier is local)."""
    for obj in (secret(ns), local_tier(ns), cloud_tier(ns), policy(ns, ["slm", "gpt"])):
        apply(cluster, obj)


BASE_NETPOLS = {"tiered-base"}
"""The namespace's default deny + baseline (one object for every tier of the namespace)."""


# --- the webhook ------------------------------------------------------------------------------------------------


def test_webhook_is_registered_in_the_api_server_over_loopback_tls(operator: Cluster) -> None:
    vwc = get(operator, "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "default")
    assert vwc is not None
    hooks = {h["name"].split(".")[0]: h for h in vwc["webhooks"]}
    assert set(hooks) == {"residency-inferencetier", "residency-routingpolicy"}
    for plural, hook in (("inferencetiers", hooks["residency-inferencetier"]),
                         ("routingpolicies", hooks["residency-routingpolicy"])):
        assert hook["clientConfig"]["url"].startswith("https://127.0.0.1:")
        assert base64.b64decode(hook["clientConfig"]["caBundle"]).startswith(b"-----BEGIN CERTIFICATE-----")
        assert hook["failurePolicy"] == "Ignore"
        assert hook["sideEffects"] == "None"
        (rule,) = hook["rules"]
        assert rule["apiGroups"] == ["tiered.dev"]
        assert rule["resources"] == [plural]
        assert sorted(rule["operations"]) == ["CREATE", "UPDATE"]


def test_webhook_rejects_cloud_tier_in_local_only_namespace_and_admits_local(make_ns: Callable[..., str],
                                                                             operator: Cluster) -> None:
    ns = make_ns(**{"tiered.dev/residency": "local-only"})
    rejected = apply(operator, cloud_tier(ns), check=False)
    assert rejected.returncode != 0
    assert "denied the request" in rejected.stderr
    assert "tiered.dev/residency=local-only" in rejected.stderr
    assert get(operator, "inferencetier", "gpt", ns) is None
    assert apply(operator, local_tier(ns), check=False).returncode == 0


def test_webhook_enforces_allowed_regions(make_ns: Callable[..., str], operator: Cluster) -> None:
    ns = make_ns(**{"tiered.dev/residency": "unrestricted", "tiered.dev/allowed-regions": "eu-west-1_eu-central-1"})
    rejected = apply(operator, cloud_tier(ns, "us", region="us-east-1"), check=False)
    assert rejected.returncode != 0
    assert "tiered.dev/allowed-regions" in rejected.stderr
    assert "us-east-1" in rejected.stderr
    assert apply(operator, cloud_tier(ns, "eu", region="eu-central-1"), check=False).returncode == 0


# --- residency class x {cloud tier, local tier, mixed policy} -----------------------------------------------------


@pytest.mark.parametrize("residency", ["restricted", "unrestricted", None])
def test_cloud_permitting_classes_produce_egress_conditions_and_router_config(
    make_ns: Callable[..., str], operator: Cluster, residency: str | None
) -> None:
    ns = make_ns(**({"tiered.dev/residency": residency} if residency else {}))
    populate(operator, ns)
    want = BASE_NETPOLS | {"slm-allow-cloud-gpt"}
    wait_for("network policies", lambda: netpol_names(operator, ns) == want or None)

    gpt = wait_for("gpt ResidencyCompliant", lambda: condition(operator, "inferencetier", "gpt", ns,
                                                                  "ResidencyCompliant"))
    assert gpt["status"] == "True"
    slm = wait_for("slm ResidencyCompliant", lambda: condition(operator, "inferencetier", "slm", ns,
                                                                  "ResidencyCompliant"))
    assert slm["status"] == "True"
    pol = wait_for("policy ResidencyCompliant", lambda: condition(operator, "routingpolicy", "hybrid", ns,
                                                                     "ResidencyCompliant"))
    assert pol["status"] == "True"

    config = wait_for("router config", lambda: router_config(operator, ns))
    assert [t.name for t in config.chain()] == ["slm", "gpt"]
    expected_class = residency or "restricted"
    assert config.residency.namespace_class.value == expected_class
    gpt_tier = config.tier("gpt")
    assert gpt_tier is not None
    if expected_class == "restricted":
        assert gpt_tier.pii_forbidden is True

    egress = wait_for("slm EgressRestricted", lambda: condition(operator, "inferencetier", "slm", ns,
                                                                   "EgressRestricted"))
    assert egress["status"] == "True"
    assert egress["reason"] == "NetworkPoliciesApplied"
    assert CIDR in egress["message"]
    assert "cilium.io/v2 CiliumNetworkPolicy" in egress["message"]


def test_local_only_relabel_revokes_cloud_everywhere_within_10s_and_back(
    make_ns: Callable[..., str], operator: Cluster
) -> None:
    ns = make_ns(**{"tiered.dev/residency": "unrestricted"})
    populate(operator, ns)
    wait_for("cloud egress before relabel", lambda: "slm-allow-cloud-gpt" in netpol_names(operator, ns))
    wait_for("gpt in router config before relabel",
             lambda: (c := router_config(operator, ns)) is not None and c.tier("gpt") is not None)

    started = time.monotonic()
    label_ns(operator, ns, **{"tiered.dev/residency": "local-only"})
    wait_for("cloud egress revoked", lambda: netpol_names(operator, ns) == BASE_NETPOLS)
    gpt = wait_for("gpt forbidden", lambda: (c := condition(operator, "inferencetier", "gpt", ns,
                                                             "ResidencyCompliant")) and c["status"] == "False" and c)
    assert gpt["reason"] == "ResidencyForbidden"
    assert "tiered.dev/residency=local-only" in gpt["message"]
    pol = wait_for("policy non-compliant", lambda: (c := condition(operator, "routingpolicy", "hybrid", ns,
                                                                   "ResidencyCompliant")) and c["status"] == "False"
                   and c)
    assert "gpt" in pol["message"]
    elapsed = time.monotonic() - started
    assert elapsed < SETTLE, f"re-evaluation took {elapsed:.1f}s"

    # The webhook now refuses what the label forbids, but lets the operator and users touch metadata.
    rejected = apply(operator, policy(ns, ["slm", "gpt"], name="another"), check=False)
    assert rejected.returncode != 0
    assert "tiered.dev/residency=local-only" in rejected.stderr
    assert apply(operator, policy(ns, ["slm"], name="local"), check=False).returncode == 0
    assert operator.kubectl("annotate", "inferencetier", "gpt", "-n", ns, "example.com/note=kept",
                            check=False).returncode == 0
    edited = operator.kubectl("patch", "inferencetier", "gpt", "-n", ns, "--type=merge", "-p",
                              '{"spec":{"cloud":{"model":"bigger"}}}', check=False)
    assert edited.returncode != 0
    assert "tiered.dev/residency=local-only" in edited.stderr

    # And back: restricted permits the cloud tier again, for requests without PII.
    label_ns(operator, ns, **{"tiered.dev/residency": "restricted"})
    wait_for("cloud egress restored", lambda: "slm-allow-cloud-gpt" in netpol_names(operator, ns))
    wait_for("gpt compliant again", lambda: (c := condition(operator, "inferencetier", "gpt", ns,
                                                             "ResidencyCompliant")) and c["status"] == "True")


def test_local_only_relabel_drops_the_cloud_tier_from_the_router_config_within_10s(
    make_ns: Callable[..., str], operator: Cluster
) -> None:
    """The router must never even learn of a forbidden tier (apply_residency in the ConfigMap builder)."""
    ns = make_ns(**{"tiered.dev/residency": "unrestricted"})
    populate(operator, ns)
    wait_for("gpt in router config before relabel",
             lambda: (c := router_config(operator, ns)) is not None and c.tier("gpt") is not None)
    started = time.monotonic()
    label_ns(operator, ns, **{"tiered.dev/residency": "local-only"})
    config = wait_for("gpt dropped from router config",
                      lambda: (c := router_config(operator, ns)) is not None and c.tier("gpt") is None and c)
    assert time.monotonic() - started < SETTLE
    assert [t.name for t in config.chain()] == ["slm"]
    assert config.residency.namespace_class.value == "local-only"
    policy_cm = wait_for("gpt dropped from the policy config",
                         lambda: (c := router_config(operator, ns, "hybrid-policy")) is not None
                         and c.tier("gpt") is None and c)
    assert time.monotonic() - started < SETTLE
    assert [t.name for t in policy_cm.chain()] == ["slm"]

    label_ns(operator, ns, **{"tiered.dev/residency": "restricted"})
    config = wait_for("gpt back in router config",
                      lambda: (c := router_config(operator, ns)) is not None and c.tier("gpt") is not None and c)
    gpt_tier = config.tier("gpt")
    assert gpt_tier is not None and gpt_tier.pii_forbidden is True


def test_region_label_added_later_revokes_the_tier_outside_it(make_ns: Callable[..., str], operator: Cluster) -> None:
    ns = make_ns(**{"tiered.dev/residency": "unrestricted"})
    populate(operator, ns)
    wait_for("cloud egress", lambda: "slm-allow-cloud-gpt" in netpol_names(operator, ns))
    label_ns(operator, ns, **{"tiered.dev/allowed-regions": "us-east-1"})
    wait_for("cloud egress revoked", lambda: netpol_names(operator, ns) == BASE_NETPOLS)
    gpt = wait_for("gpt not allowed", lambda: (c := condition(operator, "inferencetier", "gpt", ns,
                                                               "ResidencyCompliant")) and c["status"] == "False" and c)
    assert "region" in gpt["message"].lower()


# --- NetworkPolicies, field by field -----------------------------------------------------------------------------


def test_network_policies_field_by_field(make_ns: Callable[..., str], operator: Cluster) -> None:
    ns = make_ns()
    populate(operator, ns)
    want = BASE_NETPOLS | {"slm-allow-cloud-gpt"}
    wait_for("network policies", lambda: netpol_names(operator, ns) == want or None)
    tier_uid = get(operator, "inferencetier", "slm", ns)["metadata"]["uid"]  # type: ignore[index]
    ours = {"matchLabels": {"app.kubernetes.io/managed-by": "tiered-operator"},
            "matchExpressions": [{"key": "tiered.dev/component", "operator": "In", "values": ["slm", "router"]}]}
    expected = {
        "tiered-base": {
            "podSelector": ours,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}],
                         "ports": [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 9090},
                                   {"protocol": "TCP", "port": 8080}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"podSelector": {"matchExpressions": [{"key": "tiered.dev/tier", "operator": "Exists"}]}}],
                 "ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8000}]},
            ],
        },
        "slm-allow-cloud-gpt": {
            "podSelector": {"matchLabels": {"tiered.dev/component": "slm", "tiered.dev/tier": "slm"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": CIDR}}], "ports": [{"protocol": "TCP", "port": 443}]}],
        },
    }  # fmt: skip
    for name, spec in expected.items():
        obj = get(operator, "networkpolicy", name, ns, "--show-managed-fields")
        assert obj is not None, name
        assert obj["spec"] == spec, name
        meta = obj["metadata"]
        assert meta["labels"]["tiered.dev/component"] == "network"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "tiered-operator"
        managers = {m["manager"] for m in meta["managedFields"] if m["operation"] == "Apply"}
        assert managers == {"tiered-operator"}
    allowance = get(operator, "networkpolicy", "slm-allow-cloud-gpt", ns)
    assert allowance is not None and allowance["metadata"]["labels"]["tiered.dev/tier"] == "slm"
    assert allowance["metadata"]["ownerReferences"] == [{"apiVersion": "tiered.dev/v1alpha1", "kind": "InferenceTier",
                                                         "name": "slm", "uid": tier_uid, "controller": True,
                                                         "blockOwnerDeletion": True}]  # fmt: skip


def test_base_policy_goes_with_the_last_local_tier_of_the_namespace(
    make_ns: Callable[..., str], operator: Cluster
) -> None:
    ns = make_ns()
    apply(operator, local_tier(ns))
    apply(operator, local_tier(ns, "other"))
    wait_for("base policy", lambda: netpol_names(operator, ns) == BASE_NETPOLS or None)
    operator.kubectl("delete", "inferencetier", "slm", "-n", ns)
    time.sleep(2)
    assert netpol_names(operator, ns) == BASE_NETPOLS  # "other" still needs it
    operator.kubectl("delete", "inferencetier", "other", "-n", ns)
    wait_for("base policy deleted", lambda: netpol_names(operator, ns) == set() or None)


def test_steady_state_pass_writes_nothing(make_ns: Callable[..., str], operator: Cluster) -> None:
    """An event that changes nothing residency cares about runs a pass that issues no write."""
    ns = make_ns()
    populate(operator, ns)
    want = BASE_NETPOLS | {"slm-allow-cloud-gpt"}
    wait_for("network policies", lambda: netpol_names(operator, ns) == want or None)
    wait_for("egress condition", lambda: condition(operator, "inferencetier", "slm", ns, "EgressRestricted"))
    wait_for("policy residency", lambda: condition(operator, "routingpolicy", "hybrid", ns, "ResidencyCompliant"))
    time.sleep(2)  # let the other reconcilers settle too

    def versions() -> dict[str, str]:
        out = operator.kubectl("get", "networkpolicies", "-n", ns, "-o", "json")
        rvs = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in json.loads(out.stdout)["items"]}
        rvs["egress-condition"] = json.dumps(condition(operator, "inferencetier", "slm", ns, "EgressRestricted"))
        return rvs

    before = versions()
    operator.kubectl("label", "inferencetier", "slm", "-n", ns, "example.com/touched=yes")  # an event, no change
    time.sleep(3)
    assert versions() == before


def test_deleted_network_policy_is_restored(make_ns: Callable[..., str], operator: Cluster) -> None:
    ns = make_ns(**{"tiered.dev/residency": "local-only"})
    apply(operator, local_tier(ns))
    wait_for("network policies", lambda: netpol_names(operator, ns) == BASE_NETPOLS or None)
    operator.kubectl("delete", "networkpolicy", "tiered-base", "-n", ns)
    wait_for("default deny restored", lambda: "tiered-base" in netpol_names(operator, ns))


# --- Pod Security ---------------------------------------------------------------------------------------------------


def test_operator_generated_pods_are_admitted_under_pod_security_restricted(
    make_ns: Callable[..., str], operator: Cluster
) -> None:
    ns = make_ns(**{"pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest"})
    apply(operator, local_tier(ns))

    def running() -> list[str] | None:
        out = operator.kubectl("get", "pods", "-n", ns, "-l", "tiered.dev/tier=slm", "-o", "json")
        pods = json.loads(out.stdout)["items"]
        phases = [p["status"].get("phase") for p in pods]
        return phases if phases and all(p == "Running" for p in phases) else None

    wait_for("tier pods running", running, timeout=45)
    events = json.loads(operator.kubectl("get", "events", "-n", ns, "-o", "json").stdout)["items"]
    failed = [e["message"] for e in events if e.get("reason") == "FailedCreate"]
    assert failed == []


# --- Cilium, found by API discovery ---------------------------------------------------------------------------------

CILIUM_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "ciliumnetworkpolicies.cilium.io"},
    "spec": {
        "group": "cilium.io",
        "names": {"kind": "CiliumNetworkPolicy", "plural": "ciliumnetworkpolicies", "singular": "ciliumnetworkpolicy",
                  "listKind": "CiliumNetworkPolicyList", "shortNames": ["cnp"]},
        "scope": "Namespaced",
        "versions": [{"name": "v2", "served": True, "storage": True,
                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}],
    },
}


def test_fqdn_policies_appear_when_the_cluster_serves_cilium_and_status_says_so(
    make_ns: Callable[..., str], operator: Cluster
) -> None:
    """Without the API: plain NetworkPolicies, said in status. With it (a CRD of Cilium's shape): toFQDNs rules."""
    ns = make_ns()
    populate(operator, ns)
    before = wait_for("egress condition", lambda: condition(operator, "inferencetier", "slm", ns, "EgressRestricted"))
    assert before["reason"] == "NetworkPoliciesApplied"
    apply(operator, CILIUM_CRD)
    try:
        operator.kubectl("wait", "--for=condition=Established", "--timeout=30s",
                         "crd/ciliumnetworkpolicies.cilium.io")
        cnp = wait_for("CiliumNetworkPolicy applied", lambda: get(operator, "ciliumnetworkpolicy", "slm-fqdn-gpt", ns),
                       timeout=20)
        assert cnp["spec"]["endpointSelector"] == {"matchLabels": {"tiered.dev/component": "slm",
                                                                   "tiered.dev/tier": "slm"}}
        assert cnp["spec"]["egress"][1] == {"toFQDNs": [{"matchName": "llm.example.com"}],
                                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
        after = wait_for("egress condition says FQDN", lambda: (c := condition(
            operator, "inferencetier", "slm", ns, "EgressRestricted")) and c["reason"] == "FQDNPoliciesApplied" and c)
        assert "CiliumNetworkPolicy" in after["message"]
        label_ns(operator, ns, **{"tiered.dev/residency": "local-only"})
        wait_for("FQDN rule revoked", lambda: get(operator, "ciliumnetworkpolicy", "slm-fqdn-gpt", ns) is None)
    finally:
        operator.kubectl("delete", "crd", "ciliumnetworkpolicies.cilium.io", "--wait=false", check=False)
