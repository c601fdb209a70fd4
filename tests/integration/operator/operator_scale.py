"""Scale run shared by tests/integration/operator/test_operator_scale.py and bench/operator/bench_scale.py.

N local InferenceTiers are created at once in a fresh namespace; the real operator (`python -m tiered_operator`)
runs under a ServiceAccount of its own (`tiered-scale-<id>`, bound to the operator's ClusterRole), so the API
server can attribute requests to it:

- **API requests of the operator, by verb and resource, counted by the API server.** One APF FlowSchema per
  (verb, resource) matches only that ServiceAccount (same priority level as the default for service accounts,
  `workload-low`); `apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}` then counts them. Two
  catch-alls (reads, writes) take the rest, so the totals are complete.
- **Where the time goes**, from the objects' own timestamps (1 s resolution): tier created → its Deployment
  created (operator), Deployment created → Available (controller-manager, scheduler, KWOK: the cluster),
  Deployment Available → tier Ready (operator).
- **Steady state**: after every tier is Ready (and EgressRestricted: residency converged too) and a settle period,
  a window in which the operator's write requests (create/update/patch/delete, server-side count) must be 0.

The dev control plane is sized for the test suite, not for 1,000 tiers: its service range is a /24 (254 ClusterIPs)
and its one KWOK node holds 500 pods. The run adds a ServiceCIDR and KWOK nodes as needed (both kept).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
OPERATOR_NAMESPACE = "tiered-system"
OPERATOR_CLUSTER_ROLE = "tiered-operator"
PRIORITY_LEVEL = "workload-low"
"""The priority level the default `service-accounts` FlowSchema gives the operator's ServiceAccount."""
READ_VERBS = ("get", "list", "watch")
WRITE_VERBS = ("create", "patch", "update", "delete")
COUNTED_RESOURCES = (
    "inferencetiers",
    "inferencetiers/status",
    "routingpolicies",
    "routingpolicies/status",
    "deployments",
    "deployments/scale",
    "services",
    "configmaps",
    "networkpolicies",
    "events",
    "namespaces",
    "secrets",
)
METRIC = re.compile(r'^apiserver_flowcontrol_dispatched_requests_total\{flow_schema="([^"]+)",[^}]*\} (\S+)$')


def tier_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": name},
        "spec": {
            "backend": "local",
            "local": {
                "model": {
                    "source": "https://models.example.com/m.gguf",
                    "sha256": "0" * 64,
                    "format": "gguf",
                    "quantization": "Q8_0",
                },
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
            },
        },
    }


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], 1),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 1),
        "max": round(ordered[-1], 1),
    }


# --- the operator's own identity and the API server's count of its requests --------------------------------------


def flow_schemas(run_id: str, service_account: str) -> list[dict[str, Any]]:
    """One FlowSchema per (verb, resource) for the ServiceAccount, then catch-alls: reads, discovery GETs (non-resource
    URLs such as /apis/cilium.io/v2), and everything else (counted as writes)."""
    subject = {"kind": "ServiceAccount", "serviceAccount": {"name": service_account, "namespace": OPERATOR_NAMESPACE}}
    out: list[dict[str, Any]] = []

    def schema(name: str, precedence: int, rule: dict[str, Any]) -> None:
        out.append(
            {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": name, "labels": {"tiered.dev/scale-run": run_id}},
                "spec": {
                    "priorityLevelConfiguration": {"name": PRIORITY_LEVEL},
                    "matchingPrecedence": precedence,
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [{"subjects": [subject], **rule}],
                },
            }
        )

    any_scope = {"apiGroups": ["*"], "clusterScope": True, "namespaces": ["*"]}
    precedence = 1000
    for resource in COUNTED_RESOURCES:
        for verb in (*READ_VERBS, *WRITE_VERBS):
            precedence += 1
            name = f"ts-{run_id}-{verb}-{resource.replace('/', '-')}"
            schema(name, precedence, {"resourceRules": [{"verbs": [verb], "resources": [resource], **any_scope}]})
    schema(f"ts-{run_id}-other-read", 1990, {"resourceRules": [{"verbs": list(READ_VERBS), "resources": ["*"],
                                                                 **any_scope}]})
    schema(f"ts-{run_id}-get-nonresource", 1991, {"nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["*"]}]})
    schema(
        f"ts-{run_id}-other-write",
        1992,
        {
            "resourceRules": [{"verbs": ["*"], "resources": ["*"], **any_scope}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        },
    )
    return out


def parse_counts(metrics: str, run_id: str) -> dict[str, int]:
    """`verb resource` → requests dispatched, from the API server's /metrics, for this run's FlowSchemas."""
    prefix = f"ts-{run_id}-"
    counts: dict[str, int] = {}
    for line in metrics.splitlines():
        match = METRIC.match(line)
        if match and match.group(1).startswith(prefix):
            verb, _, resource = match.group(1)[len(prefix):].partition("-")
            resource = resource.replace("-status", "/status").replace("-scale", "/scale")
            counts[f"{verb} {resource}"] = counts.get(f"{verb} {resource}", 0) + int(float(match.group(2)))
    return counts


def diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(keys) if after.get(k, 0) != before.get(k, 0)}


def writes_of(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.split(" ", 1)[0] not in READ_VERBS and k != "other read")


def reads_of(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.split(" ", 1)[0] in READ_VERBS or k == "other read")


@dataclass
class Identity:
    """A ServiceAccount of the run's own, bound to the operator's ClusterRole, with APF FlowSchemas counting it."""

    cluster: Any
    run_id: str
    kubeconfig: Path

    @property
    def service_account(self) -> str:
        return f"tiered-scale-{self.run_id}"

    @classmethod
    def create(cls, cluster: Any, run_id: str, directory: Path) -> Identity:
        ident = cls(cluster, run_id, directory / f"operator-{run_id}.kubeconfig")
        sa = ident.service_account
        docs = [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": OPERATOR_NAMESPACE}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": sa},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": OPERATOR_CLUSTER_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": OPERATOR_NAMESPACE}],
            },
            *flow_schemas(run_id, sa),
        ]
        try:
            cluster.kubectl("apply", "--server-side", "--field-manager=tiered-scale", "-f", "-",
                            input=yaml.safe_dump_all(docs))
            token = cluster.kubectl("create", "token", sa, "-n", OPERATOR_NAMESPACE,
                                    "--duration=7200s").stdout.strip()
        except Exception:
            ident.delete()  # whatever part of the apply went through
            raise
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "dev", "cluster": {"server": cluster.server,
                                                      "certificate-authority": str(cluster.state_dir / "pki/ca.crt")}}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "dev", "context": {"cluster": "dev", "user": sa}}],
            "current-context": "dev",
        }
        ident.kubeconfig.write_text(yaml.safe_dump(config))
        ident.kubeconfig.chmod(0o600)
        return ident

    def counts(self) -> dict[str, int]:
        return parse_counts(self.cluster.kubectl("get", "--raw", "/metrics", timeout=60).stdout, self.run_id)

    def delete(self) -> None:
        kubectl = self.cluster.kubectl
        kubectl("delete", "flowschemas", "-l", f"tiered.dev/scale-run={self.run_id}", "--wait=false", check=False)
        kubectl("delete", "clusterrolebinding", self.service_account, "--wait=false", check=False)
        kubectl("delete", "serviceaccount", self.service_account, "-n", OPERATOR_NAMESPACE, "--wait=false",
                check=False)
        self.kubeconfig.unlink(missing_ok=True)


# --- the run ------------------------------------------------------------------------------------------------------

SERVICE_CIDR = "10.96.0.0/16"
"""The dev control plane's service range is a /24 (254 ClusterIPs for the whole cluster); 1,000 tiers need 1,000
Services. A ServiceCIDR (networking.k8s.io/v1, no restart needed) adds room; it is kept for later runs."""


PODS_PER_NODE = 500


def ensure_pod_capacity(cluster: Any, pods: int) -> list[str]:
    """Fake nodes (managed by the dev cluster's KWOK, like its own `kwok-node-0` of 500 pods) until the cluster
    holds `pods` more pods than run now; returns the nodes made. They are kept: deleting a node evicts whatever
    another test scheduled there meanwhile, and an idle fake node costs a lease update every 40 s."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    capacity = sum(int((n.get("status") or {}).get("allocatable", {}).get("pods", 0)) for n in nodes)
    running = len(cluster.kubectl("get", "pods", "-A", "--no-headers", "--field-selector=status.phase!=Succeeded",
                                  check=False).stdout.splitlines())
    made: list[str] = []
    while capacity - running < pods:
        name = f"tiered-scale-node-{len(nodes) + len(made)}"
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "tiered.dev/scale-node": "true"},
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": str(PODS_PER_NODE)},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": str(PODS_PER_NODE)},
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(node))
        made.append(name)
        capacity += PODS_PER_NODE
    return made


def ensure_service_range(cluster: Any) -> None:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
           "metadata": {"name": "tiered-scale", "labels": {"app.kubernetes.io/part-of": "tiered"}},
           "spec": {"cidrs": [SERVICE_CIDR]}}
    cluster.kubectl("apply", "--server-side", "--field-manager=tiered-scale", "-f", "-", input=json.dumps(doc))


def _rss_kib(pid: int, field_name: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


@dataclass
class ScaleResult:
    tiers: int
    create_seconds: float = 0.0
    all_ready_seconds: float | None = None
    ready: int = 0
    phases: dict[str, Any] = field(default_factory=dict)
    requests_to_ready: dict[str, int] = field(default_factory=dict)
    """The operator's requests from the first create until every tier is Ready and EgressRestricted (converged)."""
    reconciles_to_ready: int | None = None
    steady_seconds: float = 0.0
    steady_requests: dict[str, int] = field(default_factory=dict)
    steady_writes: int | None = None
    operator_rss_mib_peak: float = 0.0
    operator_vmhwm_mib: float = 0.0
    operator_cpu_seconds: float = 0.0
    cpu_seconds_to_ready: dict[str, float] = field(default_factory=dict)
    converged_seconds: float | None = None
    cleanup_seconds: float | None = None
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        reqs = self.requests_to_ready
        reconciles = self.reconciles_to_ready
        operator_requests = sum(reqs.values())
        return {
            "tiers": self.tiers,
            "create_seconds": round(self.create_seconds, 1),
            "all_ready_seconds": self.all_ready_seconds,
            "ready": self.ready,
            "phases": self.phases,
            "requests_to_ready": reqs,
            "requests_to_ready_total": operator_requests,
            "writes_to_ready": writes_of(reqs),
            "reads_to_ready": reads_of(reqs),
            "requests_per_tier": round(operator_requests / self.tiers, 2),
            "writes_per_tier": round(writes_of(reqs) / self.tiers, 2),
            "reconciles_to_ready": reconciles,
            "requests_per_reconcile": round(operator_requests / reconciles, 3) if reconciles else None,
            "steady_seconds": self.steady_seconds,
            "steady_requests": self.steady_requests,
            "steady_writes": self.steady_writes,
            "operator_rss_mib_peak": self.operator_rss_mib_peak,
            "operator_vmhwm_mib": self.operator_vmhwm_mib,
            "operator_cpu_seconds": self.operator_cpu_seconds,
            "cpu_seconds_to_ready": self.cpu_seconds_to_ready,
            "residency_converged_seconds": self.converged_seconds,
            "cleanup_seconds": self.cleanup_seconds,
            "load_average_at_start": self.load_average,
            "notes": self.notes,
        }


STATS_LINE = re.compile(r"operator stats: reconciles=(\d+)")


def _reconciles(log_path: Path) -> int | None:
    found = STATS_LINE.findall(log_path.read_text(errors="replace"))
    return int(found[-1]) if found else None


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _control_plane_cpu(cluster: Any) -> dict[str, float]:
    """CPU seconds used so far by each control-plane process (pids from the dev cluster's state.json)."""
    try:
        pids = json.loads((cluster.state_dir / "state.json").read_text()).get("pids") or {}
    except (OSError, ValueError):
        return {}
    return {name: _cpu_seconds(int(pid)) for name, pid in pids.items()}


def _admin_client(cluster: Any) -> Any:
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig))


def _create_all(api: Any, namespace: str, names: list[str], threads: int = 8) -> None:
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(api)
    errors: list[BaseException] = []

    def worker(chunk: list[str]) -> None:
        try:
            for name in chunk:
                custom.create_namespaced_custom_object("tiered.dev", "v1alpha1", namespace, "inferencetiers",
                                                       tier_manifest(name), _preload_content=False)
        except BaseException as exc:
            errors.append(exc)

    chunks = [names[i::threads] for i in range(threads)]
    pool = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def _list(api: Any, namespace: str, kind: str) -> list[dict[str, Any]]:
    import kubernetes

    if kind == "deployments":
        rsp = kubernetes.client.AppsV1Api(api).list_namespaced_deployment(namespace, _preload_content=False)
    else:
        rsp = kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(
            "tiered.dev", "v1alpha1", namespace, kind, _preload_content=False
        )
    return list(json.loads(rsp.data)["items"])


def _delete_all(api: Any, namespace: str, timeout: float) -> float | None:
    """Delete every tier with one deletecollection while the operator runs (it removes its finalizers); seconds
    until none is left, or None on timeout."""
    import kubernetes

    custom = kubernetes.client.CustomObjectsApi(api)
    started = time.monotonic()
    custom.delete_collection_namespaced_custom_object("tiered.dev", "v1alpha1", namespace, "inferencetiers",
                                                      _preload_content=False)
    while time.monotonic() - started < timeout:
        if not _list(api, namespace, "inferencetiers"):
            return round(time.monotonic() - started, 1)
        time.sleep(2)
    return None


def _phases(tiers: list[dict[str, Any]], deployments: list[dict[str, Any]], t0_wall: float) -> dict[str, Any]:
    """Per tier: created → Deployment created (operator) → Deployment Available (cluster) → tier Ready (operator),
    from the objects' own timestamps (seconds resolution)."""
    by_owner = {d["metadata"]["name"]: d for d in deployments}
    op_create, cluster_ready, op_report = [], [], []
    children_done, pods_done, ready_done = 0.0, 0.0, 0.0
    for tier in tiers:
        name = tier["metadata"]["name"]
        created = _ts(tier["metadata"].get("creationTimestamp"))
        dep = by_owner.get(name)
        ready = _ts((_cond(tier, "Ready") or {}).get("lastTransitionTime"))
        if dep is None or created is None or ready is None:
            continue
        dep_created = _ts(dep["metadata"].get("creationTimestamp"))
        available = _ts((_cond(dep, "Available") or {}).get("lastTransitionTime"))
        if dep_created is None or available is None:
            continue
        op_create.append(dep_created - created)
        cluster_ready.append(available - dep_created)
        op_report.append(max(0.0, ready - available))
        children_done = max(children_done, dep_created - t0_wall)
        pods_done = max(pods_done, available - t0_wall)
        ready_done = max(ready_done, ready - t0_wall)
    return {
        "all_deployments_created_seconds": round(children_done, 1),
        "all_deployments_available_seconds": round(pods_done, 1),
        "last_tier_ready_seconds": round(ready_done, 1),
        "tier_created_to_deployment_created": percentiles(op_create),
        "deployment_created_to_available": percentiles(cluster_ready),
        "deployment_available_to_tier_ready": percentiles(op_report),
        "note": "timestamps have 1 s resolution; the first and last phases are the operator's, the middle one the "
        "cluster's (controller-manager, scheduler, KWOK)",
    }


def run_scale(
    cluster: Any,
    namespace: str,
    tiers: int,
    work_dir: Path,
    steady_seconds: float = 60.0,
    settle_seconds: float = 10.0,
    timeout: float = 900.0,
    resync_seconds: int = 30,
    extra_env: dict[str, str] | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ScaleResult:
    """Create `tiers` tiers in `namespace` (which must exist and be empty), wait for all Ready, observe the steady
    state, then delete everything (while the operator still runs, so finalizers are removed)."""
    run_id = uuid.uuid4().hex[:6]
    result = ScaleResult(tiers=tiers, load_average=os.getloadavg())
    ensure_service_range(cluster)
    ensure_pod_capacity(cluster, tiers + 20)
    ident = Identity.create(cluster, run_id, work_dir)
    api = _admin_client(cluster)
    log_path = work_dir / f"operator-scale-{namespace}.log"
    env = {
        **os.environ,
        "TIERED_RESYNC_SECONDS": str(resync_seconds),
        "TIERED_STATS_SECONDS": "5",
        **(extra_env or {}),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    cmd = [sys.executable, "-m", "tiered_operator", "-n", namespace, "--kubeconfig", str(ident.kubeconfig),
           "--standalone", "--liveness", ""]
    with log_path.open("wb") as log:
        op = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    peak = 0
    try:
        deadline = time.monotonic() + 60
        while "tiered-operator configured" not in log_path.read_text(errors="replace"):
            if op.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"operator did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        time.sleep(2)  # watches established
        names = [f"t{i:04d}" for i in range(tiers)]
        before = ident.counts()
        cpu_before = _cpu_seconds(op.pid)
        plane_before = _control_plane_cpu(cluster)
        t0, t0_wall = time.monotonic(), time.time()
        _create_all(api, namespace, names)
        result.create_seconds = time.monotonic() - t0
        progress(f"created {tiers} tiers in {result.create_seconds:.1f}s")
        items: list[dict[str, Any]] = []
        last_report = 0.0
        poll = max(2.0, tiers / 200)  # listing 1,000 tiers costs the API server too
        while time.monotonic() - t0 < timeout:
            items = _list(api, namespace, "inferencetiers")
            result.ready = sum(1 for i in items if (_cond(i, "Ready") or {}).get("status") == "True")
            peak = max(peak, _rss_kib(op.pid, "VmRSS"))
            if op.poll() is not None:
                raise RuntimeError(f"operator exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            if result.ready == tiers and result.all_ready_seconds is None:
                result.all_ready_seconds = round(time.monotonic() - t0, 1)
                plane = _control_plane_cpu(cluster)
                result.cpu_seconds_to_ready = {
                    "operator": round(_cpu_seconds(op.pid) - cpu_before, 1),
                    **{k: round(v - plane_before.get(k, 0.0), 1) for k, v in plane.items()},
                }
            egress = sum(1 for i in items if (_cond(i, "EgressRestricted") or {}).get("status") == "True")
            if result.all_ready_seconds is not None and egress == tiers:
                result.converged_seconds = round(time.monotonic() - t0, 1)
                result.requests_to_ready = diff(ident.counts(), before)
                result.reconciles_to_ready = _reconciles(log_path)
                break
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                progress(f"{time.monotonic() - t0:.0f}s: {result.ready}/{tiers} Ready")
            time.sleep(poll)
        progress(f"all Ready after {result.all_ready_seconds}s" if result.all_ready_seconds else "timed out")
        deployments = _list(api, namespace, "deployments")
        result.phases = _phases(items, deployments, t0_wall)
        # settle, then the steady-state window
        time.sleep(settle_seconds)
        steady_before = ident.counts()
        steady_t0 = time.monotonic()
        while time.monotonic() - steady_t0 < steady_seconds:
            peak = max(peak, _rss_kib(op.pid, "VmRSS"))
            time.sleep(2)
        result.steady_seconds = round(time.monotonic() - steady_t0, 1)
        result.steady_requests = diff(ident.counts(), steady_before)
        result.steady_writes = writes_of(result.steady_requests)
        result.operator_rss_mib_peak = round(peak / 1024, 1)
        result.operator_vmhwm_mib = round(_rss_kib(op.pid, "VmHWM") / 1024, 1)
        result.operator_cpu_seconds = round(_cpu_seconds(op.pid) - cpu_before, 1)
        return result
    finally:
        result.cleanup_seconds = _delete_all(api, namespace, timeout=600)
        progress(f"deleted in {result.cleanup_seconds}s" if result.cleanup_seconds is not None else "delete timed out")
        if op.poll() is None:
            op.send_signal(signal.SIGTERM)
            try:
                op.wait(timeout=30)
            except subprocess.TimeoutExpired:
                op.kill()
        ident.delete()
