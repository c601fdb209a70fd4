"""RBAC matrix of the operator's ServiceAccount, checked against the real API server with `kubectl auth can-i`.

NEEDED is derived from the code: every Kubernetes client call in the operator (kube.py, handlers/, __main__.py)
and what kopf itself does for the handlers it registers (watches, finalizer patches, events, peering, the managed
admission webhook). `test_operator_code_calls_only_what_the_matrix_lists` fails when the code starts calling
something the matrix does not list, so the matrix cannot silently go stale. FORBIDDEN is what a compromised
operator must not be able to do. The CLI (`tiered`, run with the user's own credentials), the dev cluster and the
demo are not the operator and are not scanned.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from reliability_helpers import REPO

pytestmark = pytest.mark.integration

SA = "system:serviceaccount:tiered-system:tiered-operator"
WEBHOOK_CONFIG = "tiered-operator.tiered.dev"
OPERATOR_SOURCES = [REPO / "operator/tiered_operator/kube.py", REPO / "operator/tiered_operator/__main__.py",
                    *sorted((REPO / "operator/tiered_operator/handlers").glob("*.py"))]  # fmt: skip


@dataclass(frozen=True)
class Access:
    """One RBAC question: may the operator `verb` `resource` (group, optional subresource/name) here?"""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    name: str = ""
    namespaced: bool = True
    why: str = ""

    def args(self, namespace: str) -> list[str]:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        if self.name:
            res += f"/{self.name}"
        out = ["auth", "can-i", self.verb, res, f"--as={SA}"]
        if self.subresource:
            out.append(f"--subresource={self.subresource}")
        out += ["-n", namespace] if self.namespaced else []
        return out

    def key(self) -> tuple[str, str, str, str]:
        return (self.verb, self.group, self.resource + (f"/{self.subresource}" if self.subresource else ""), self.name)

    def __str__(self) -> str:
        return " ".join(k for k in self.key() if k)


def _many(verbs: str, group: str, resource: str, why: str, **kw: Any) -> list[Access]:
    return [Access(v, group, resource, why=why, **kw) for v in verbs.split()]


TIERED = "tiered.dev"
NEEDED: list[Access] = [
    *_many("list watch patch", TIERED, "inferencetiers", "kopf watches; finalizer of autoscaled tiers"),
    Access("get", TIERED, "inferencetiers", why="autoscale.AutoscalerKube.cloud_tiers, index audit"),
    Access("get", TIERED, "routingpolicies", why="index audit: confirm a policy is gone"),
    *[Access("get", g, r, why="index audit: confirm a child is gone")
      for g, r in (("apps", "deployments"), ("", "services"), ("", "configmaps"),
                   ("networking.k8s.io", "networkpolicies"), ("policy", "poddisruptionbudgets"))],
    *[Access("list", g, r, namespaced=False, why="index audit: one cluster-wide metadata LIST per kind")
      for g, r in ((TIERED, "inferencetiers"), (TIERED, "routingpolicies"), ("apps", "deployments"),
                   ("", "services"), ("", "configmaps"), ("networking.k8s.io", "networkpolicies"),
                   ("policy", "poddisruptionbudgets"))],
    *_many("list watch patch", TIERED, "routingpolicies", "kopf watches; finalizer (budget daemon)"),
    Access("patch", TIERED, "inferencetiers", "status", why="Kube.apply_status (reconciler, autoscaler)"),
    Access("patch", TIERED, "routingpolicies", "status", why="Kube.apply_status, budget loop"),
    Access("update", TIERED, "inferencetiers", "finalizers", why="ownerReferences blockOwnerDeletion"),
    Access("update", TIERED, "routingpolicies", "finalizers", why="ownerReferences blockOwnerDeletion"),
    *_many("list watch create patch delete", "apps", "deployments", "index + SSA + cloud switch"),
    Access("get", "apps", "deployments", "scale", why="AutoscalerKube.deployment_replicas"),
    Access("patch", "apps", "deployments", "scale", why="Kube.scale_deployment"),
    *_many("list watch create patch delete", "", "services", "index + SSA + cloud switch"),
    *_many("list watch create patch delete", "", "configmaps", "index + SSA (router config)"),
    *_many("list watch create patch delete", "networking.k8s.io", "networkpolicies", "residency network rules"),
    *_many("list watch create patch delete", "policy", "poddisruptionbudgets", "gateway routers"),
    *_many("list watch", "", "pods", "why a tier is not ready: the pod index"),
    *_many("list watch", "", "events", "why a tier is not ready: kubelet Warning events about our pods"),
    *_many("list watch create patch delete", "cilium.io", "ciliumnetworkpolicies", "FQDN egress where Cilium runs"),
    Access("get", "", "secrets", why="Kube.get_secret: cloud tier key validation"),
    Access("create", "", "events", why="Kube.event and kopf's own events"),
    *_many("get list watch patch create", "kopf.dev", "kopfpeerings", "kopf peering, ensure_peering, resync loop"),
    *_many("get list watch", "", "namespaces", "residency labels", namespaced=False),
    *_many("list watch", "apiextensions.k8s.io", "customresourcedefinitions", "kopf scanning", namespaced=False),
    Access("create", "admissionregistration.k8s.io", "validatingwebhookconfigurations", namespaced=False,
           why="kopf creates its managed webhook configuration"),
    Access("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", name=WEBHOOK_CONFIG,
           namespaced=False, why="kopf keeps caBundle/url current"),
    Access("create", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", namespaced=False,
           why="kopf's mutating configuration manager creates its (empty) configuration too"),
    Access("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", name=WEBHOOK_CONFIG,
           namespaced=False, why="kopf's mutating configuration manager"),
    *_many("get list watch patch create", "kopf.dev", "clusterkopfpeerings", "kopf peering, resync loop",
           namespaced=False),
]  # fmt: skip

FORBIDDEN: list[Access] = [
    *_many("list watch create update patch delete deletecollection", "", "secrets", "secrets beyond one get"),
    *_many("get create update patch delete deletecollection", "", "pods", "pods: list/watch only"),
    Access("create", "", "pods", "exec"),
    Access("create", "", "pods", "attach"),
    Access("create", "", "pods", "portforward"),
    Access("get", "", "pods", "log"),
    Access("create", "", "serviceaccounts"),
    Access("create", "", "serviceaccounts", "token"),
    *_many("create update patch delete", "", "namespaces", "", namespaced=False),
    *_many("create update patch delete", "", "nodes", "", namespaced=False),
    Access("patch", "", "nodes", "status", namespaced=False),
    *_many("create update patch delete escalate bind", "rbac.authorization.k8s.io", "clusterroles", "",
           namespaced=False),
    *_many("create update patch delete", "rbac.authorization.k8s.io", "clusterrolebindings", "", namespaced=False),
    *_many("create update patch delete bind escalate", "rbac.authorization.k8s.io", "roles", ""),
    *_many("create update patch delete", "rbac.authorization.k8s.io", "rolebindings", ""),
    *_many("create update patch delete", "apiextensions.k8s.io", "customresourcedefinitions", "",
           namespaced=False),
    *_many("create update delete deletecollection", TIERED, "inferencetiers", "users own the CRs"),
    *_many("create update delete deletecollection", TIERED, "routingpolicies", "users own the CRs"),
    Access("update", "apps", "deployments"),
    Access("deletecollection", "apps", "deployments"),
    *_many("create delete", "apps", "daemonsets", ""),
    *_many("create delete", "apps", "statefulsets", ""),
    *_many("create delete", "batch", "jobs", ""),
    Access("delete", "admissionregistration.k8s.io", "validatingwebhookconfigurations", namespaced=False),
    Access("patch", "admissionregistration.k8s.io", "validatingwebhookconfigurations", name="some-other-webhook",
           namespaced=False),
    Access("delete", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", namespaced=False),
    Access("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", name="some-other-webhook",
           namespaced=False),
    Access("impersonate", "", "users", namespaced=False),
    Access("impersonate", "", "serviceaccounts"),
    Access("create", "certificates.k8s.io", "certificatesigningrequests", namespaced=False),
    Access("create", "", "persistentvolumes", namespaced=False),
    Access("delete", "", "events"),
    Access("get", "", "services", "proxy"),
    Access("create", "", "services", "proxy"),
    Access("*", "*", "*", namespaced=False),
]  # fmt: skip


def subject_access_review(cluster: Any, access: Access, namespace: str) -> str:
    """The same question as a SubjectAccessReview: for groups this API server does not serve (cilium.io here),
    where `kubectl auth can-i` cannot resolve the resource and answers 'no' without asking RBAC."""
    attrs: dict[str, str] = {"verb": access.verb, "group": access.group, "resource": access.resource}
    attrs |= {k: v for k, v in (("subresource", access.subresource), ("name", access.name)) if v}
    if access.namespaced:
        attrs["namespace"] = namespace
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": SA, "groups": ["system:serviceaccounts", "system:serviceaccounts:tiered-system",
                                              "system:authenticated"], "resourceAttributes": attrs}}  # fmt: skip
    result = cluster.kubectl("create", "-f", "-", "-o", "jsonpath={.status.allowed}", input=json.dumps(review))
    return "yes" if result.stdout.strip() == "true" else "no"


def can_i(cluster: Any, checks: list[Access], namespace: str) -> dict[Access, str]:
    """The API server's answer ('yes'/'no') for each check, asked in parallel (each is one kubectl process)."""

    def ask(access: Access) -> str:
        result = cluster.kubectl(*access.args(namespace), check=False)
        if "doesn't have a resource type" in result.stderr:
            return subject_access_review(cluster, access, namespace)
        return result.stdout.strip() or result.stderr.strip()

    with ThreadPoolExecutor(max_workers=6) as pool:
        return dict(zip(checks, pool.map(ask, checks), strict=True))


# --- what the code calls -----------------------------------------------------------------------------------------

TYPED_CALLS: dict[str, tuple[str, str, str]] = {
    "read_namespaced_secret": ("get", "", "secrets"),
    "read_namespace": ("get", "", "namespaces"),
    "patch_namespaced_deployment": ("patch", "apps", "deployments"),
    "delete_namespaced_deployment": ("delete", "apps", "deployments"),
    "read_namespaced_deployment_scale": ("get", "apps", "deployments/scale"),
    "patch_namespaced_deployment_scale": ("patch", "apps", "deployments/scale"),
    "patch_namespaced_service": ("patch", "", "services"),
    "delete_namespaced_service": ("delete", "", "services"),
    "patch_namespaced_config_map": ("patch", "", "configmaps"),
    "delete_namespaced_config_map": ("delete", "", "configmaps"),
    "create_namespaced_event": ("create", "", "events"),
    # the index audit (Reconciler.audit_indexes): cluster-wide metadata LISTs, then a GET per missing uid
    "list_deployment_for_all_namespaces": ("list", "apps", "deployments"),
    "list_service_for_all_namespaces": ("list", "", "services"),
    "list_config_map_for_all_namespaces": ("list", "", "configmaps"),
    "read_namespaced_deployment": ("get", "apps", "deployments"),
    "read_namespaced_service": ("get", "", "services"),
    "read_namespaced_config_map": ("get", "", "configmaps"),
    "patch_namespaced_network_policy": ("patch", "networking.k8s.io", "networkpolicies"),
    "delete_namespaced_network_policy": ("delete", "networking.k8s.io", "networkpolicies"),
    "read_namespaced_network_policy": ("get", "networking.k8s.io", "networkpolicies"),
    "list_network_policy_for_all_namespaces": ("list", "networking.k8s.io", "networkpolicies"),
    "patch_namespaced_pod_disruption_budget": ("patch", "policy", "poddisruptionbudgets"),
    "delete_namespaced_pod_disruption_budget": ("delete", "policy", "poddisruptionbudgets"),
    "read_namespaced_pod_disruption_budget": ("get", "policy", "poddisruptionbudgets"),
    "list_pod_disruption_budget_for_all_namespaces": ("list", "policy", "poddisruptionbudgets"),
}
# Generic calls whose resource is an argument: the plurals each is used with (read from the call sites).
CUSTOM_CALLS: dict[str, list[tuple[str, str, str]]] = {
    "get_namespaced_custom_object": [("get", TIERED, "inferencetiers"), ("get", TIERED, "routingpolicies"),
                                     ("get", "kopf.dev", "kopfpeerings")],
    "get_cluster_custom_object": [("get", "kopf.dev", "clusterkopfpeerings")],
    "list_cluster_custom_object": [("list", TIERED, "inferencetiers"), ("list", TIERED, "routingpolicies")],
    "patch_namespaced_custom_object": [("patch", "cilium.io", "ciliumnetworkpolicies"),
                                       ("create", "cilium.io", "ciliumnetworkpolicies")],
    "patch_namespaced_custom_object_status": [("patch", TIERED, "inferencetiers/status"),
                                              ("patch", TIERED, "routingpolicies/status")],
    "delete_namespaced_custom_object": [("delete", "cilium.io", "ciliumnetworkpolicies")],
    "create_namespaced_custom_object": [("create", "kopf.dev", "kopfpeerings")],
    "create_cluster_custom_object": [("create", "kopf.dev", "clusterkopfpeerings")],
    "get_api_resources": [],  # discovery: allowed to every authenticated user
}  # fmt: skip
API_CLASSES = (kubernetes.client.CoreV1Api, kubernetes.client.AppsV1Api, kubernetes.client.CustomObjectsApi,
               kubernetes.client.NetworkingV1Api, kubernetes.client.PolicyV1Api,
               kubernetes.client.RbacAuthorizationV1Api,
               kubernetes.client.ApiextensionsV1Api, kubernetes.client.AdmissionregistrationV1Api)  # fmt: skip
CALL = re.compile(r"\.((?:read|list|create|patch|replace|delete|get|connect)_[a-z0-9_]+)\b")


def client_calls() -> dict[str, list[str]]:
    """Kubernetes client methods the operator's code refers to -> files."""
    found: dict[str, list[str]] = {}
    for path in OPERATOR_SOURCES:
        for name in CALL.findall(path.read_text()):
            if any(hasattr(cls, name) for cls in API_CLASSES):
                found.setdefault(name, []).append(path.name)
    return found


def test_operator_code_calls_only_what_the_matrix_lists() -> None:
    calls = client_calls()
    assert "read_namespaced_secret" in calls and "patch_namespaced_deployment" in calls  # the scan works
    unknown = sorted(set(calls) - set(TYPED_CALLS) - set(CUSTOM_CALLS))
    assert unknown == [], f"operator code calls {unknown} ({[calls[u] for u in unknown]}): add them to the matrix"
    needed = {(a.verb, a.group, a.key()[2]) for a in NEEDED}
    for name in calls:
        wanted = [TYPED_CALLS[name]] if name in TYPED_CALLS else CUSTOM_CALLS[name]
        missing = [w for w in wanted if w not in needed]
        assert missing == [], f"{name} needs {missing}, not in NEEDED"


def _granted(rule_docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    out = set()
    for doc in rule_docs:
        if doc.get("kind") != "ClusterRole":
            continue
        for rule in doc["rules"]:
            for group in rule.get("apiGroups", []):
                for res in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        for name in rule.get("resourceNames") or [""]:
                            out.add((verb, group, res, name))
    return out


def test_cluster_role_grants_no_write_beyond_what_is_needed() -> None:
    """Reads beyond NEEDED are tolerated (listed in docs/reliability.md); a write nobody calls is not."""
    docs = list(yaml.safe_load_all((REPO / "manifests/rbac/clusterrole.yaml").read_text()))
    granted = _granted(docs)
    needed = {a.key() for a in NEEDED}
    # a name-scoped grant is covered by an unnamed need of the same verb, and vice versa
    needed_loose = needed | {(v, g, r, "") for v, g, r, _ in needed}
    extra = {g for g in granted if g not in needed and (g[0], g[1], g[2], "") not in needed_loose}
    extra_writes = sorted(e for e in extra if e[0] not in ("get", "list", "watch"))
    assert extra_writes == [], f"ClusterRole grants writes the operator never makes: {extra_writes}"


def test_operator_identity_can_do_everything_it_needs(cluster: Any, namespace: str) -> None:
    answers = can_i(cluster, NEEDED, namespace)
    denied = [f"{a} ({a.why}): {ans}" for a, ans in answers.items() if ans != "yes"]
    assert denied == [], denied


def test_operator_identity_cannot_do_anything_dangerous(cluster: Any, namespace: str) -> None:
    answers = can_i(cluster, FORBIDDEN, namespace)
    allowed = [f"{a}: {ans}" for a, ans in answers.items() if ans != "no"]
    assert allowed == [], allowed
    # the same identity in another namespace and in kube-system: still no writes to secrets, no pods
    sys_checks = [Access("list", "", "secrets"), Access("create", "", "pods"), Access("create", "", "pods", "exec")]
    assert set(can_i(cluster, sys_checks, "kube-system").values()) == {"no"}


def test_operator_kubeconfig_is_the_service_account(cluster: Any) -> None:
    """The token the operator runs with (operator.kubeconfig) is the identity checked above, not an admin."""
    result = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                             kubeconfig=Path(cluster.operator_kubeconfig))  # fmt: skip
    assert result.stdout.strip() == SA
    own = cluster.kubectl("auth", "can-i", "create", "clusterrolebindings",
                          kubeconfig=Path(cluster.operator_kubeconfig), check=False)  # fmt: skip
    assert own.stdout.strip() == "no"
