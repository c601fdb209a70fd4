"""The operator's integration tests that need a real kubelet (KWOK fakes a pod's containers as running): for the
modules in this directory, `cluster` is a control plane with a real node (`tiered dev up --node real`), started in
a state directory of its own and stopped after each module, the host put back as it was.

With TIERED_DEV_DIR naming a state directory that already runs a real node, that one is used and left running.
Only one real node may exist on a machine: if another state directory's node runs, the tests fail and name it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from operator_harness import install_crds

from tiered_dev import devcluster
from tiered_dev.devcluster import Cluster, node

REPO = Path(__file__).resolve().parents[4]
STATE = REPO / ".dev-it-realnode"


def _state_dir() -> tuple[Path, bool]:
    """The state directory to use, and whether this module starts (and stops) its node."""
    given = os.environ.get("TIERED_DEV_DIR")
    if given and devcluster.node_mode(Path(given).resolve()) == "real" and all(
            devcluster.status(Path(given).resolve()).values()):
        return Path(given).resolve(), False
    return STATE, True


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    state, ours = _state_dir()
    holder = node.lock_holder()
    if ours and holder is not None and holder != str(state):
        pytest.fail(f"a real node already runs on this machine (state directory {holder}); these tests need the "
                    f"machine's one real node: stop it with `tiered dev down --state-dir {holder}`", pytrace=False)
    started = time.monotonic()
    try:
        handle = devcluster.up(state, progress=lambda _m: None, node_mode="real")
    except (devcluster.ComponentFailed, node.RealNodeError) as exc:
        devcluster.down(state) if ours else None
        pytest.fail(f"the control plane with a real node did not start: {exc}", pytrace=False)
    print(f"\ncontrol plane with a real node up in {time.monotonic() - started:.1f}s ({state})")
    try:
        yield handle
    finally:
        if ours:
            devcluster.down(state)


@pytest.fixture(scope="module")
def peering_crds(cluster: Cluster) -> Any:
    return install_crds(cluster)
