"""Benchmark: create N local InferenceTiers at once and time until every one reports Ready=True.

Runs the real operator (`python -m tiered_operator`, ServiceAccount identity) against the local control plane
(`tiered dev up`: API server, controller-manager, scheduler, KWOK). Writes bench/out/operator-tiers.json with
the time to all-Ready, percentiles of per-tier readiness, the operator's peak RSS and its write count.

    .venv/bin/python bench/operator/bench_200_tiers.py [--tiers 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from tiered_operator import devcluster

REPO = Path(__file__).resolve().parents[2]


def tier(name: str) -> dict[str, Any]:
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


def rss_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiers", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    cluster = devcluster.up(Path(os.environ.get("TIERED_DEV_DIR", REPO / ".dev")), progress=lambda _m: None)
    kubectl = cluster.kubectl
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-bench", "-k", str(REPO / "crds"))
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=tiered-bench",
        "-f",
        str(REPO / "manifests/operator/peering-crds.yaml"),
    )
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    log_path = REPO / "bench" / "out" / f"operator-{ns}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TIERED_RESYNC_SECONDS": "30"}
    with log_path.open("wb") as log:
        op = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiered_operator",
                "-n",
                ns,
                "--kubeconfig",
                str(cluster.operator_kubeconfig),
                "--standalone",
                "--liveness",
                "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        time.sleep(5)
        names = [f"t{i:03d}" for i in range(args.tiers)]
        docs = yaml.safe_dump_all([tier(n) for n in names])
        started = time.monotonic()
        kubectl("apply", "-n", ns, "-f", "-", input=docs, timeout=300)
        ready_at: dict[str, float] = {}
        peak_rss = 0
        while len(ready_at) < len(names) and time.monotonic() - started < args.timeout:
            items = json.loads(kubectl("get", "itier", "-n", ns, "-o", "json", timeout=120).stdout)["items"]
            now = time.monotonic() - started
            for item in items:
                conds = (item.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    ready_at.setdefault(item["metadata"]["name"], now)
            peak_rss = max(peak_rss, rss_kib(op.pid, "VmRSS"))
            time.sleep(1)
        elapsed = max(ready_at.values()) if len(ready_at) == len(names) else None
        times = sorted(ready_at.values())
        writes = len(re.findall(r"tiered_operator\.kube: write ", log_path.read_text(errors="replace")))
        result = {
            "tiers": args.tiers,
            "all_ready_seconds": round(elapsed, 1) if elapsed is not None else None,
            "ready": len(ready_at),
            "p50_ready_seconds": round(times[len(times) // 2], 1) if times else None,
            "p95_ready_seconds": round(times[int(len(times) * 0.95) - 1], 1) if times else None,
            "operator_rss_mib_peak_sampled": round(peak_rss / 1024, 1),
            "operator_vmhwm_mib": round(rss_kib(op.pid, "VmHWM") / 1024, 1),
            "operator_writes": writes,
            "writes_per_tier": round(writes / args.tiers, 1),
        }
        out = REPO / "bench" / "out" / "operator-tiers.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0 if elapsed is not None else 1
    finally:
        kubectl("delete", "itier", "--all", "-n", ns, "--wait=true", "--timeout=300s", check=False, timeout=320)
        op.terminate()
        op.wait(timeout=30)
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


if __name__ == "__main__":
    sys.exit(main())
