"""Figures of the real node (docs/realnode.md), measured in one run and written to bench/realnode/figures.json:

- `--cold-build`: the node's binaries built from scratch (empty Go build cache and binary cache in a temporary
  directory; the module cache stays, its download is network, not build), per `go build` target;
- cached `tiered dev up --node real` from a fresh state directory (binaries and images cached), and `dev down`;
- `make demo` from a fresh state directory (`python -m tiered_dev.demo up`);
- SLM pod creation → Ready (the pod's Ready condition time minus its creation time, for every slm-edge pod);
- resident memory of the node's programs (containerd, shims, kubelet, kube-proxy, kube-router, CoreDNS, pause),
  idle after `dev up` and after the demo;
- whether `dev down` left the host as it was (hoststate diff against a snapshot taken before).

Needs the machine's one real node (none may be running) and root. Takes a few minutes (plus ~25 with --cold-build).

    flock /tmp/tiered-bench.lock .venv/bin/python bench/realnode/figures.py [--cold-build] [--requests 48]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from tiered_dev import devcluster
from tiered_dev.devcluster import build, hoststate, node

REPO = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("figures.json")
NODE_PROGRAMS = ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "kube-router", "coredns", "pause")


def node_memory_mib() -> dict[str, float]:
    rss: dict[str, float] = defaultdict(float)
    for proc in psutil.process_iter(["name", "memory_info"]):
        name = proc.info["name"] or ""
        name = "containerd-shim-runc-v2" if name.startswith("containerd-shim") else name
        if name in NODE_PROGRAMS and proc.info["memory_info"] is not None:
            rss[name] += proc.info["memory_info"].rss / 2**20
    out = {k: round(v, 1) for k, v in sorted(rss.items())}
    out["total"] = round(sum(rss.values()), 1)
    return out


def cold_build() -> dict[str, Any]:
    """Build every node binary into a temporary cache with an empty Go build cache; seconds per target."""
    with tempfile.TemporaryDirectory(prefix="tiered-cold-") as tmp:
        env = {"GOCACHE": f"{tmp}/gocache", "TIERED_CACHE_DIR": f"{tmp}/cache"}
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        lines: list[str] = []
        started = time.monotonic()
        try:
            build.ensure_node_binaries(progress=lambda m: lines.append(m))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        total = time.monotonic() - started
    targets = {}
    for line in lines:
        if "] done in " in line:
            name = line.split("]", 1)[0].removeprefix("[build ")
            targets[name] = float(line.rsplit("done in ", 1)[1].rstrip("s"))
    return {"total_seconds": round(total, 1), "targets_seconds": targets}


def pod_ready_seconds(cluster: devcluster.Cluster, namespace: str, tier: str) -> list[float]:
    result = cluster.kubectl("get", "pods", "-n", namespace, "-l", f"tiered.dev/tier={tier}", "-o", "json")
    out = []
    for pod in json.loads(result.stdout)["items"]:
        created = datetime.datetime.fromisoformat(pod["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        for cond in pod["status"].get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready = datetime.datetime.fromisoformat(cond["lastTransitionTime"].replace("Z", "+00:00"))
                out.append((ready - created).total_seconds())
    return sorted(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-build", action="store_true")
    parser.add_argument("--requests", type=int, default=48)
    args = parser.parse_args()
    if node.lock_holder():
        print(f"a real node runs ({node.lock_holder()}); stop it first", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()}
    if args.cold_build:
        figures["cold_build"] = cold_build()
        print("cold build:", figures["cold_build"], flush=True)
    build.ensure_node_binaries()
    state = Path(tempfile.mkdtemp(prefix="tiered-figures-")) / "dev"
    before = hoststate.take()
    try:
        started = time.monotonic()
        cluster = devcluster.up(state, progress=lambda _m: None, node_mode="real")
        figures["dev_up_real_cached_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(10)
        figures["node_memory_mib_idle"] = node_memory_mib()
        print("dev up:", figures["dev_up_real_cached_seconds"], figures["node_memory_mib_idle"], flush=True)
        started = time.monotonic()
        demo = subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "up",
                               "--requests", str(args.requests)], cwd=REPO, capture_output=True, text=True,
                              timeout=1800, check=False)
        figures["make_demo_on_running_node_seconds"] = round(time.monotonic() - started, 1)
        figures["demo_ok"] = demo.returncode == 0
        figures["slm_pod_ready_seconds"] = pod_ready_seconds(cluster, "tiered-demo", "slm-edge")
        figures["node_memory_mib_after_demo"] = node_memory_mib()
        print("demo:", figures["make_demo_on_running_node_seconds"], figures["slm_pod_ready_seconds"], flush=True)
    finally:
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "down"], cwd=REPO,
                       capture_output=True, text=True, timeout=600, check=False)
        figures["down_seconds"] = round(time.monotonic() - started, 1)
        left = hoststate.diff(before, hoststate.take(), roots=[str(state)])
        figures["host_differences_after_down"] = [str(d) for d in left]
        shutil.rmtree(state.parent, ignore_errors=True)
    # make demo from nothing: control plane, node and demo in one fresh state directory.
    state = Path(tempfile.mkdtemp(prefix="tiered-figures-")) / "dev"
    try:
        started = time.monotonic()
        demo = subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "up",
                               "--requests", str(args.requests)], cwd=REPO, capture_output=True, text=True,
                              timeout=1800, check=False)
        figures["make_demo_fresh_state_seconds"] = round(time.monotonic() - started, 1)
        figures["make_demo_fresh_ok"] = demo.returncode == 0
    finally:
        subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "down"], cwd=REPO,
                       capture_output=True, text=True, timeout=600, check=False)
        shutil.rmtree(state.parent, ignore_errors=True)
    figures["loadavg_end"] = os.getloadavg()
    OUT.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
