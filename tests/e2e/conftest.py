"""The real node of the end-to-end tests: one per test session, shared by every test that needs it.

The session's first real-node test brings it up the way a user does (`python -m tiered_dev.demo up`: control plane,
real node, images, the operator in-cluster, the demo's data plane as pods); the last one (test_realnode_teardown.py)
runs `tiered dev down` and compares the host with a snapshot taken here before anything started. If a test in
between fails, the fixture still stops the node at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from realnode_support import REPO, RealNodeSession

from tiered_dev import devcluster
from tiered_dev.devcluster import hoststate, node

DEMO_REQUESTS = 48


@pytest.fixture(scope="session")
def real_node() -> Iterator[RealNodeSession]:
    holder = node.lock_holder()
    if holder is not None:
        pytest.fail(f"a real node already runs on this machine (state directory {holder}); the real-node tests "
                    f"need the machine's one real node: stop it with `tiered dev down --state-dir {holder}`",
                    pytrace=False)
    state = REPO / ".dev-e2e-realnode"
    if state.exists():  # a previous session's files (its node is down: the lock is free)
        mounted = [m for m in hoststate.take().mounts if m.startswith(str(state) + "/")]
        if mounted:
            pytest.fail(f"{state} still has mounts from an earlier real node ({mounted[:3]}): run "
                        f"`tiered dev down --state-dir {state}`", pytrace=False)
        shutil.rmtree(state)
    session = RealNodeSession(state=state, before=hoststate.take())
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "up", "--requests", str(DEMO_REQUESTS)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1500, check=False)
    session.demo_seconds = time.monotonic() - started
    session.demo_output = result.stdout
    try:
        if result.returncode != 0:
            pytest.fail(f"`make demo` on the real node failed:\n{result.stdout[-6000:]}\n{result.stderr[-4000:]}",
                        pytrace=False)
        session.cluster = devcluster.up(state, progress=lambda _m: None)
        yield session
    finally:
        if devcluster.node_mode(state) == "real" or any(devcluster.status(state).values()):
            subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "down"],
                           cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
