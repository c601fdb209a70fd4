"""Operator chaos, second half: kill the API server, etcd, or both while the real operator runs and tiers change,
start them again, and measure how long the operator's watches take to act on changes made after the restart.

Shared by tests/reliability/test_operator_restart_chaos.py (CI size) and bench/reliability/operator_restart_chaos.py.
It needs a control plane of its own (`fresh_control_plane`: its own state directory, hence its own ports, etcd data
and PKI) because killing the shared `.dev` one would break everyone else's tests.

One round of one phase:
1. a burst of changes, then at once SIGKILL the component(s): an edit, a new tier, a deleted tier, a deleted child
   Deployment — the operator is mid-reconcile when the API goes away;
2. the component(s) stay down `down_s` (the Kubernetes API cannot be written meanwhile: with the API server down
   nothing answers, with etcd down every write fails, so no change can be made *during* the outage);
3. start them again (`start_component`, same ports and data) and wait for the API server's /readyz: t0;
4. at t0 a second burst (edit, new tier, deleted tier, deleted child); resume time = from t0 until the operator
   has acted on every change of that burst (new tier has its children and observedGeneration, edit observed,
   deleted tier's finalizer removed, child recreated). Only a working watch (or the periodic resync timer for the
   child, which kopf also only runs for objects its watch delivered) can do that.
At the end the namespace must hold exactly the desired objects (`operator_chaos.check_converged`: 0 orphans,
0 duplicates, every tier Ready at its generation) and the operator must still be the process started first.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from operator_chaos import MANAGED, OperatorRunner, check_converged, tier

from tiered_dev import devcluster
from tiered_dev.devcluster.cluster import start_component

PHASES: dict[str, tuple[str, ...]] = {
    "apiserver": ("kube-apiserver",),
    "etcd": ("etcd",),
    "both": ("kube-apiserver", "etcd"),
}
RESUME_LIMIT_S = 30.0
START_ORDER = ("etcd", "kube-apiserver")


@contextlib.contextmanager
def fresh_control_plane(state_dir: Path) -> Iterator[devcluster.Cluster]:
    """A control plane of our own (etcd, API server, controller-manager, scheduler, KWOK) in `state_dir`."""
    try:
        cluster = devcluster.up(state_dir, progress=lambda _msg: None)
        yield cluster
    finally:
        devcluster.down(state_dir)


@dataclass
class Snapshot:
    """The namespace's tiers and managed children, read in one kubectl call."""

    tiers: dict[str, dict[str, Any]]
    children: list[dict[str, Any]]

    def owned(self, tier_name: str, kind: str) -> list[dict[str, Any]]:
        t = self.tiers.get(tier_name)
        if t is None:
            return []
        uid = t["metadata"]["uid"]
        return [c for c in self.children if c["kind"] == kind and any(
            o.get("controller") and o.get("uid") == uid for o in c["metadata"].get("ownerReferences", []))]


def snapshot(cluster: Any, namespace: str) -> Snapshot:
    out = cluster.kubectl("get", "inferencetiers,deployments,services,configmaps", "-n", namespace, "-o", "json",
                          timeout=30).stdout  # fmt: skip
    items = json.loads(out)["items"]
    tiers = {i["metadata"]["name"]: i for i in items if i["kind"] == "InferenceTier"}
    managed = MANAGED.split("=", 1)
    children = [i for i in items if i["kind"] != "InferenceTier"
                and (i["metadata"].get("labels") or {}).get(managed[0]) == managed[1]]  # fmt: skip
    return Snapshot(tiers, children)


# --- what "the operator acted on a change" means (pure) ----------------------------------------------------------


def reconciled(snap: Snapshot, name: str) -> bool:
    """The operator has seen the tier's current generation and its children exist."""
    t = snap.tiers.get(name)
    if t is None or t["metadata"].get("deletionTimestamp"):
        return False
    observed = (t.get("status") or {}).get("observedGeneration")
    return observed == t["metadata"]["generation"] and all(
        snap.owned(name, kind) for kind in ("Deployment", "Service", "ConfigMap"))


def gone(snap: Snapshot, name: str) -> bool:
    return name not in snap.tiers


def child_replaced(snap: Snapshot, name: str, old_uid: str) -> bool:
    """The tier's Deployment exists again as a new object (not the one deleted)."""
    deployments = snap.owned(name, "Deployment")
    return bool(deployments) and all(d["metadata"]["uid"] != old_uid
                                     and not d["metadata"].get("deletionTimestamp") for d in deployments)


@dataclass
class Probe:
    """One change made after the restart, and when the operator had acted on it."""

    what: str
    done: Callable[[Snapshot], bool]
    seconds: float | None = None


@dataclass
class RoundResult:
    phase: str
    round: int
    down_s: float
    restart_to_ready_s: float
    resume_s: float | None
    probes: dict[str, float | None]
    operator_alive: bool

    def as_json(self) -> dict[str, Any]:
        return {"phase": self.phase, "round": self.round, "down_s": self.down_s,
                "restart_to_apiserver_ready_s": round(self.restart_to_ready_s, 2),
                "resume_s": None if self.resume_s is None else round(self.resume_s, 2),
                "probes_s": {k: None if v is None else round(v, 2) for k, v in self.probes.items()},
                "operator_alive": self.operator_alive}  # fmt: skip


@dataclass
class RestartChaosResult:
    tiers_initial: int
    rounds: list[RoundResult] = field(default_factory=list)
    tiers_desired: int = 0
    converged_s: float | None = None
    problems: list[str] = field(default_factory=list)
    operator_starts: int = 0
    operator_alive: bool = False
    operator_exit_code: int | None = None
    components_running: dict[str, bool] = field(default_factory=dict)
    convergence_trace: list[tuple[float, int, int, list[str]]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        resumes = [r.resume_s for r in self.rounds if r.resume_s is not None]
        return {
            "tiers_initial": self.tiers_initial, "tiers_desired": self.tiers_desired,
            "rounds": [r.as_json() for r in self.rounds],
            "resume_s_max": round(max(resumes), 2) if resumes else None,
            "resume_limit_s": RESUME_LIMIT_S,
            "converged_after_last_round_s": None if self.converged_s is None else round(self.converged_s, 2),
            "problems": self.problems, "operator_starts": self.operator_starts,
            "operator_alive_at_end": self.operator_alive, "operator_exit_code": self.operator_exit_code,
            "components_running_at_end": self.components_running,
            "convergence_trace": [{"t_s": round(t, 1), "differences": n, "children_of_deleted_tiers": o,
                                   "first": first} for t, n, o, first in self.convergence_trace],
        }  # fmt: skip


# --- the run -----------------------------------------------------------------------------------------------------


def api_ready(cluster: Any) -> bool:
    result = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
    return result.returncode == 0 and result.stdout.strip() == "ok"


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if check():
                return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class Churn:
    """Applies changes and keeps the desired state (tier name -> contextLength) in step."""

    def __init__(self, cluster: Any, namespace: str, rng: random.Random) -> None:
        self.cluster, self.namespace, self.rng = cluster, namespace, rng
        self.desired: dict[str, int] = {}
        self.operations = 0

    def k(self, *args: str, input: str | None = None) -> str:
        self.operations += 1
        return str(self.cluster.kubectl(*args, "-n", self.namespace, input=input, timeout=60).stdout)

    def apply(self, name: str, ctx: int) -> None:
        self.k("apply", "-f", "-", input=yaml.safe_dump(tier(name, ctx)))
        self.desired[name] = ctx

    def create_many(self, names: list[str]) -> None:
        self.k("apply", "-f", "-", input=yaml.safe_dump_all([tier(n, 2048) for n in names]))
        self.desired.update({n: 2048 for n in names})
        self.operations += len(names) - 1

    def edit(self, name: str) -> None:
        choices = [c for c in (1024, 2048, 4096, 8192) if c != self.desired[name]]
        self.apply(name, self.rng.choice(choices))

    def delete(self, name: str) -> None:
        self.k("delete", "inferencetier", name, "--wait=false")
        self.desired.pop(name)

    def delete_child(self, snap: Snapshot, name: str) -> str:
        """Delete the tier's Deployment (as a user or a buggy tool might); returns the deleted object's uid."""
        deployment = snap.owned(name, "Deployment")[0]
        self.k("delete", "deployment", deployment["metadata"]["name"], "--wait=false")
        return str(deployment["metadata"]["uid"])

    def pick(self, count: int, exclude: set[str]) -> list[str]:
        return self.rng.sample(sorted(set(self.desired) - exclude), count)

    def burst(self, tag: str) -> list[Probe]:
        """Edit one tier, create one, delete one, delete another's Deployment; the probes tell when each is done."""
        snap = snapshot(self.cluster, self.namespace)
        settled = {n for n in self.desired if reconciled(snap, n)}
        edit, drop, orphan = self.pick(3, exclude=set(self.desired) - settled)
        new = f"{tag}-new"
        old_uid = self.delete_child(snap, orphan)
        self.edit(edit)
        self.apply(new, 4096)
        self.delete(drop)
        return [
            Probe(f"child Deployment of {orphan} deleted -> recreated", lambda s: child_replaced(s, orphan, old_uid)),
            Probe(f"tier {edit} edited -> observed", lambda s: reconciled(s, edit)),
            Probe(f"tier {new} created -> children + status", lambda s: reconciled(s, new)),
            Probe(f"tier {drop} deleted -> finalizer removed, gone", lambda s: gone(s, drop)),
        ]


def _measure(cluster: Any, namespace: str, probes: list[Probe], t0: float, timeout: float) -> None:
    while time.monotonic() - t0 < timeout and any(p.seconds is None for p in probes):
        with contextlib.suppress(Exception):
            snap = snapshot(cluster, namespace)
            now = time.monotonic() - t0
            for p in probes:
                if p.seconds is None and p.done(snap):
                    p.seconds = now
        time.sleep(0.2)


def run_round(cluster: Any, namespace: str, churn: Churn, operator: OperatorRunner, phase: str, number: int,
              down_s: float, measure_timeout: float = 90) -> RoundResult:  # fmt: skip
    components = PHASES[phase]
    state_dir = cluster.state_dir
    churn.burst(f"pre-{phase}-{number}")  # the operator is busy with these when the API goes away
    for name in components:
        devcluster.stop_component(state_dir, name, signal.SIGKILL)
    time.sleep(down_s)
    restart = time.monotonic()
    for name in START_ORDER:
        if name in components:
            start_component(state_dir, name)
    wait_until(lambda: api_ready(cluster), 120, "the API server's /readyz after the restart")
    t0 = time.monotonic()
    probes = churn.burst(f"post-{phase}-{number}")
    _measure(cluster, namespace, probes, t0, measure_timeout)
    times = [p.seconds for p in probes]
    resume = max(t for t in times if t is not None) if all(t is not None for t in times) else None
    alive = operator.process is not None and operator.process.poll() is None
    return RoundResult(phase, number, down_s, t0 - restart, resume, {p.what: p.seconds for p in probes}, alive)


def run_restart_chaos(cluster: Any, namespace: str, log_dir: Path, n_tiers: int, rounds: int = 1,
                      phases: tuple[str, ...] = ("apiserver", "etcd", "both"), down_s: float = 5.0, seed: int = 7,
                      converge_timeout: float = 180) -> RestartChaosResult:  # fmt: skip
    rng = random.Random(seed)
    churn = Churn(cluster, namespace, rng)
    operator = OperatorRunner(cluster, namespace, log_dir)
    result = RestartChaosResult(tiers_initial=n_tiers)
    operator.start()
    try:
        churn.create_many([f"tier-{i}" for i in range(n_tiers)])
        wait_until(lambda: not check_converged(cluster, namespace, churn.desired), 180, "the initial tiers Ready")
        for number in range(rounds):
            for phase in phases:
                result.rounds.append(run_round(cluster, namespace, churn, operator, phase, number, down_s))
        started = time.monotonic()
        problems = check_converged(cluster, namespace, churn.desired)
        while problems and time.monotonic() - started < converge_timeout:
            if not result.convergence_trace or time.monotonic() - started - result.convergence_trace[-1][0] >= 5:
                orphans = sum(1 for p in problems if p.startswith("orphan"))  # left for Kubernetes' garbage collector
                result.convergence_trace.append((time.monotonic() - started, len(problems), orphans, problems[:3]))
            time.sleep(1.0)
            problems = check_converged(cluster, namespace, churn.desired)
        result.converged_s = time.monotonic() - started if not problems else None
        result.problems = problems
        result.tiers_desired = len(churn.desired)
        return result
    finally:
        result.operator_starts = operator.starts
        result.operator_alive = operator.process is not None and operator.process.poll() is None
        result.operator_exit_code = operator.process.poll() if operator.process is not None else None
        result.components_running = devcluster.status(cluster.state_dir)
        cluster.kubectl("delete", "inferencetiers", "--all", "-n", namespace, "--wait=true", "--timeout=60s",
                        check=False)  # fmt: skip
        operator.stop()
