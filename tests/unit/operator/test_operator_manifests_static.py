"""manifests/operator and manifests/rbac as files: restricted pod, liveness on kopf's endpoint, no wildcards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_operator_deployment_is_restricted_and_probed_on_kopfs_health_endpoint() -> None:
    (dep,) = _docs(MANIFESTS / "operator" / "deployment.yaml")
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 2 and pod["serviceAccountName"] == "tiered-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    assert any(e["name"] == "POD_ID" for e in c["env"])  # kopf's peering identity


def test_cluster_role_has_no_wildcards_and_reads_secrets_one_by_one() -> None:
    (role,) = _docs(MANIFESTS / "rbac" / "clusterrole.yaml")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert [r["verbs"] for r in secret_rules] == [["get"]]
    # pods are read (list/watch: why a tier is not ready), never written, exec'd into, or read for logs
    pod_rules = [r for r in role["rules"] if any(res.startswith("pods") for res in r["resources"])]
    assert [(r["resources"], r["verbs"]) for r in pod_rules] == [(["pods"], ["list", "watch"])]


def test_base_kustomization_lists_crds_rbac_and_operator() -> None:
    (kustomization,) = _docs(MANIFESTS / "kustomization.yaml")
    assert kustomization["resources"] == ["../crds", "rbac", "operator"]
    (rbac,) = _docs(MANIFESTS / "rbac" / "kustomization.yaml")
    assert set(rbac["resources"]) == {
        "namespace.yaml",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
    }
