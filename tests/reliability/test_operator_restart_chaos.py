"""Operator chaos, second half: the API server, etcd, and both are SIGKILLed and restarted while the real operator
runs and tiers are created, edited and deleted around each outage. Watches must resume (the operator acts on
every change made after the restart) within 30 s of the API server being ready again, nothing may be lost (the
namespace converges to exactly the desired objects) and the operator must ride it out without restarting.

Runs on a control plane of its own in a temporary directory (own ports, etcd data, PKI): killing the shared `.dev`
one would break every other test using it. bench/reliability/operator_restart_chaos.py runs more rounds.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_chaos import OperatorRunner, check_converged, tier
from operator_restart_chaos import (
    RESUME_LIMIT_S,
    api_ready,
    fresh_control_plane,
    run_restart_chaos,
    snapshot,
    wait_until,
)

from tiered_dev import devcluster
from tiered_dev.devcluster.cluster import start_component

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devcluster.Cluster]:
    with fresh_control_plane(tmp_path_factory.mktemp("restart-chaos") / "cp") as cluster:
        yield cluster


@pytest.mark.timeout(900)
def test_watches_resume_and_nothing_is_lost_when_apiserver_and_etcd_restart(
    own_cluster: Any, tmp_path: Path
) -> None:
    own_cluster.kubectl("create", "namespace", "restart-chaos")
    result = run_restart_chaos(own_cluster, "restart-chaos", tmp_path, n_tiers=8, rounds=1, down_s=5.0)
    report = result.as_json()
    assert [r.phase for r in result.rounds] == ["apiserver", "etcd", "both"], report
    for r in result.rounds:
        assert r.operator_alive, f"the operator exited during the {r.phase} outage"
        assert r.resume_s is not None, f"{r.phase}: a change made after the restart was never acted on: {r.probes}"
        assert r.resume_s <= RESUME_LIMIT_S, f"{r.phase}: watches resumed after {r.resume_s:.1f}s: {r.probes}"
    assert result.problems == [], result.problems[:10]
    assert result.converged_s is not None
    # kopf rode out every outage in the one process started at the beginning
    assert result.operator_starts == 1
    assert result.operator_alive, f"operator exited with {result.operator_exit_code}"
    assert all(result.components_running.values()), result.components_running


@pytest.mark.timeout(300)
def test_child_deleted_while_the_operators_watch_is_down_is_recreated(own_cluster: Any, tmp_path: Path) -> None:
    """The race the chaos run hits by chance, made deterministic: a child Deployment is deleted after the API server
    is back but before the operator's Deployment watch has reconnected (here: the operator is SIGSTOPped across
    the restart, standing in for kopf's reconnect backoff). The reconnecting watch LISTs and never sees a DELETED
    event; the operator must still notice that the Deployment is gone and recreate it."""
    namespace = "watch-gap"
    own_cluster.kubectl("create", "namespace", namespace)
    operator = OperatorRunner(own_cluster, namespace, tmp_path)
    operator.start()
    try:
        own_cluster.kubectl("apply", "-n", namespace, "-f", "-",
                            input=yaml.safe_dump_all([tier("gap-0", 2048), tier("gap-1", 2048)]))  # fmt: skip
        desired = {"gap-0": 2048, "gap-1": 2048}
        wait_until(lambda: not check_converged(own_cluster, namespace, desired), 120, "both tiers Ready")
        victim = snapshot(own_cluster, namespace).owned("gap-0", "Deployment")[0]["metadata"]
        assert operator.process is not None
        operator.process.send_signal(signal.SIGSTOP)
        try:
            devcluster.stop_component(own_cluster.state_dir, "kube-apiserver", signal.SIGKILL)
            start_component(own_cluster.state_dir, "kube-apiserver")
            wait_until(lambda: api_ready(own_cluster), 120, "the API server's /readyz")
            own_cluster.kubectl("delete", "deployment", victim["name"], "-n", namespace, "--wait=true")
        finally:
            operator.process.send_signal(signal.SIGCONT)
        # Many resync periods (TIERED_RESYNC_SECONDS=5). Converged also needs the recreated Deployment's pods Ready,
        # which waits on kube-controller-manager's own watches reconnecting after the API server's SIGKILL: one CI
        # run saw the Deployment back (RolloutInProgress, 0/1 pods) but not Ready within 60 s.
        try:
            wait_until(lambda: not check_converged(own_cluster, namespace, desired), 120, "gap-0's Deployment back")
        except AssertionError:
            problems = check_converged(own_cluster, namespace, desired)
            status = (snapshot(own_cluster, namespace).tiers["gap-0"].get("status") or {}).get("conditions")
            pytest.fail(f"not converged 120 s after the operator resumed: {problems}; gap-0 conditions: {status}")
        assert operator.process.poll() is None
    finally:
        own_cluster.kubectl("delete", "inferencetiers", "--all", "-n", namespace, "--wait=true", "--timeout=60s",
                            check=False)  # fmt: skip
        operator.stop()
