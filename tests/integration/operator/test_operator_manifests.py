"""manifests/: the kustomize base passes server-side dry-run, and the operator's RBAC is least privilege."""

from __future__ import annotations

from typing import Any

import pytest
from operator_harness import REPO

pytestmark = pytest.mark.integration

SA = "system:serviceaccount:tiered-system:tiered-operator"


def test_kustomize_base_passes_server_side_dry_run(peering_crds: Any) -> None:
    result = peering_crds.kubectl("apply", "-k", str(REPO / "manifests"), "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr
    for kind in (
        "customresourcedefinition.apiextensions.k8s.io/inferencetiers.tiered.dev",
        "clusterrole.rbac.authorization.k8s.io/tiered-operator",
        "deployment.apps/tiered-operator",
    ):
        assert kind in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("patch", "deployments.apps", True),
        ("patch", "deployments.apps/scale", True),
        ("watch", "configmaps", True),
        ("patch", "inferencetiers.tiered.dev/status", True),
        ("get", "secrets", True),
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("get", "pods", False),
        ("delete", "inferencetiers.tiered.dev", False),
        ("create", "clusterroles.rbac.authorization.k8s.io", False),
        ("create", "pods/exec", False),
    ],
)
def test_operator_service_account_has_exactly_what_it_needs(
    peering_crds: Any, verb: str, resource: str, allowed: bool
) -> None:
    result = peering_crds.kubectl("auth", "can-i", verb, resource, "--as", SA, "-n", "default", check=False)
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)
