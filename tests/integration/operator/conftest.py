"""Fixtures for the operator's integration tests (see operator_harness.py for the helpers).

peering_crds     kopf's peering CRDs from manifests/operator, installed once per session
kube             admin-side kubectl helpers bound to the test's namespace
operators        a factory starting `python -m tiered_operator` processes with the operator's own identity
real_node        the real node's name (realnode/conftest.py gives those tests a cluster with one)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import Kube, OperatorFactory, install_crds


@pytest.fixture(scope="session")
def peering_crds(cluster: Any) -> Any:
    """Our CRDs (the kustomization in crds/) and kopf's peering CRDs, Established."""
    return install_crds(cluster)


@pytest.fixture
def kube(peering_crds: Any, namespace: str) -> Kube:
    return Kube(peering_crds, namespace)


@pytest.fixture
def real_node(kube: Kube) -> str:
    """The name of the cluster's real node (`tiered dev up --node real`; realnode/conftest.py starts one)."""
    nodes = kube.run("get", "nodes", "-l", "tiered.dev/node=real", "-o", "name").stdout.split()
    if not nodes:
        pytest.fail("the cluster has no real node: tests that need one live in realnode/, whose conftest starts "
                    "one", pytrace=False)
    return nodes[0].removeprefix("node/")


@pytest.fixture
def operators(peering_crds: Any, namespace: str, tmp_path: Path, kube: Kube) -> Iterator[OperatorFactory]:
    factory = OperatorFactory(peering_crds, namespace, tmp_path)
    yield factory
    # Delete our objects while an operator still runs, so kopf removes its finalizers and the namespace can go.
    alive = [op for op in factory.started if op.process.poll() is None]
    if alive:
        kube.run(
            "delete",
            "inferencetiers,routingpolicies",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=30s",
            check=False,
        )
    for op in factory.started:
        op.stop()
    if not alive:
        for kind in ("inferencetiers", "routingpolicies"):
            for obj in kube.items(kind):
                kube.run(
                    "patch",
                    kind,
                    obj["metadata"]["name"],
                    "-n",
                    namespace,
                    "--type=merge",
                    "-p",
                    '{"metadata":{"finalizers":null}}',
                    check=False,
                )
