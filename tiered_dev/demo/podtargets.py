"""Pod discovery for the demo's Prometheus: the tier pods' scrape targets, written as file_sd JSON.

Debian's prometheus 2.42 is built without Kubernetes service discovery (`kubernetes_sd_configs` is "not found in
type config.ScrapeConfig"), so this small process does what manifests/monitoring/podmonitor.yaml asks of
prometheus-operator: every Running pod labelled `app.kubernetes.io/part-of=tiered` with a `tiered.dev/component`
of slm or router, each container port named `http` (the router) or `slm` (the model server) one target, labelled
with the pod's namespace and name. It lists the pods every `--interval` seconds and rewrites a file only when its
targets change; Prometheus picks a changed file up by itself.

    python -m tiered_dev.demo.podtargets --kubeconfig K --out-dir D

In every namespace, as the PodMonitor's `namespaceSelector: any`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tiered_dev.demo import prom

log = logging.getLogger("tiered_dev.demo.podtargets")

PORT_JOBS = {"http": prom.ROUTER_JOB, "slm": prom.SLM_JOB}
"""Container port name → Prometheus job (the PodMonitor's two podMetricsEndpoints)."""
COMPONENTS = ("slm", "router")


def pod_targets(pods: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """file_sd groups per job, from pods as the API returns them (dicts), in a stable order."""
    groups: dict[str, list[dict[str, Any]]] = {job: [] for job in PORT_JOBS.values()}
    for pod in sorted(pods, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"].get("name", ""))):
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        labels = meta.get("labels") or {}
        if labels.get("app.kubernetes.io/part-of") != "tiered" or labels.get("tiered.dev/component") not in COMPONENTS:
            continue
        ip = status.get("podIP")
        if status.get("phase") != "Running" or not ip or meta.get("deletionTimestamp"):
            continue
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                job = PORT_JOBS.get(port.get("name", ""))
                if job is None:
                    continue
                groups[job].append({
                    "targets": [f"{ip}:{port['containerPort']}"],
                    "labels": {"namespace": meta.get("namespace", ""), "pod": meta.get("name", ""),
                               "container": container.get("name", "")},
                })
    return groups


def target_file(out_dir: Path, job: str) -> Path:
    return out_dir / f"{job}.json"


def write_if_changed(path: Path, groups: list[dict[str, Any]]) -> bool:
    text = json.dumps(groups, indent=1, sort_keys=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def _list_pods(api: Any) -> list[dict[str, Any]]:
    result = api.list_pod_for_all_namespaces(label_selector="app.kubernetes.io/part-of=tiered", _request_timeout=10)
    return [api.api_client.sanitize_for_serialization(p) for p in result.items]


def run(kubeconfig: str, out_dir: Path, interval: float) -> None:
    from kubernetes import client, config

    api = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    out_dir.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            groups = pod_targets(_list_pods(api))
        except Exception as exc:  # the API server restarting, a timeout: keep the last targets, try again
            log.warning("listing pods failed: %s", exc)
        else:
            for job, job_groups in groups.items():
                if write_if_changed(target_file(out_dir, job), job_groups):
                    log.info("%s: %s", job, ", ".join(g["targets"][0] for g in job_groups) or "no targets")
        time.sleep(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiered_dev.demo.podtargets", description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args.kubeconfig, args.out_dir, args.interval)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
