"""Prometheus for the demo: the scrape config it runs with, and the few HTTP API reads the summary needs.

The demo runs the Debian `prometheus` binary itself on 127.0.0.1 with a config in its state directory (1 s
scrapes of the router, the SLM server and the cloud stand-in). Targets carry `namespace="tiered-demo"`, the
label the operator's PromQL selects on (in a cluster the scrape config adds it from the pod's namespace).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

ROUTER_JOB = "tiered-router"
SLM_JOB = "tiered-slm"
STANDIN_JOB = "cloud-standin"


def scrape_config(namespace: str, targets: Mapping[str, str], interval: str = "1s") -> str:
    """prometheus.yml: one job per component (job name → `host:port`), all labelled with the namespace."""
    doc = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "static_configs": [{"targets": [target], "labels": {"namespace": namespace}}],
            }
            for job, target in targets.items()
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def pod_scrape_config(targets_dir: str, static: Mapping[str, str], namespace: str, interval: str = "1s") -> str:
    """prometheus.yml for pods on a cluster: the router and model-server jobs read their targets from the file_sd
    files tiered_dev.demo.podtargets keeps in `targets_dir` (the pods manifests/monitoring/podmonitor.yaml
    selects, labelled with their namespace), plus static jobs (job name → `host:port`) for what runs outside the
    cluster (the cloud stand-in), labelled with the demo's `namespace` as the summary's queries select."""
    jobs: list[dict[str, Any]] = [
        {"job_name": job, "metrics_path": "/metrics",
         "file_sd_configs": [{"files": [f"{targets_dir}/{job}.json"], "refresh_interval": "5s"}]}
        for job in (ROUTER_JOB, SLM_JOB)
    ]
    jobs += [{"job_name": job, "static_configs": [{"targets": [target], "labels": {"namespace": namespace}}]}
             for job, target in static.items()]
    doc = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if shutil.which("/usr/bin/prometheus") else None
    )


def install_prometheus(progress: Any) -> str:
    """apt-get install prometheus when it is missing (root only), and stop the service the package may start:
    the demo runs its own instance on loopback and must not leave a system Prometheus behind."""
    found = prometheus_binary()
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("Prometheus is not installed and apt-get is unavailable: install `prometheus` (>= 2.40)")
    progress("installing the Debian package `prometheus` (apt-get) ...")
    env_args = ["env", "DEBIAN_FRONTEND=noninteractive"]
    subprocess.run([*env_args, "apt-get", "update"], check=False, timeout=600, capture_output=True)
    subprocess.run([*env_args, "apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
                   check=True, timeout=900, capture_output=True)
    # The package may start its system service; the demo runs its own instance and leaves none behind.
    for stop in (["systemctl", "stop", "prometheus"], ["service", "prometheus", "stop"]):
        if shutil.which(stop[0]):
            subprocess.run(stop, check=False, timeout=60, capture_output=True)
    found = prometheus_binary()
    if not found:
        raise RuntimeError("apt-get installed prometheus but the binary is not on PATH")
    return found


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Prometheus:
    """A thin client of the Prometheus HTTP API (stdlib only; every call has a timeout)."""

    url: str
    timeout: float = 10.0

    def _get(self, path: str, params: Mapping[str, str]) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=self.timeout) as resp:
                payload = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PrometheusError(f"{path} {params}: {exc}") from exc
        if payload.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {payload.get('error')}")
        return payload["data"]

    def instant(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data.get("resultType") == "scalar":
            return [({}, float(data["result"][1]))]
        return [(dict(r["metric"]), float(r["value"][1])) for r in data.get("result", [])]

    def range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        data = self._get(
            "/api/v1/query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return [
            (dict(r["metric"]), [(float(t), float(v)) for t, v in r.get("values", [])])
            for r in data.get("result", [])
        ]

    def targets(self) -> list[dict[str, Any]]:
        """The active targets as the API lists them (labels, health, lastScrape, ...)."""
        data = self._get("/api/v1/targets", {"state": "active"})
        return list(data.get("activeTargets", []))

    def target_health(self) -> dict[str, str]:
        """job → health of its targets ("up" only when every target of the job is up)."""
        health: dict[str, str] = {}
        for t in self.targets():
            job = t["labels"].get("job", "?")
            state = t.get("health", "unknown")
            health[job] = state if health.get(job, "up") == "up" else health[job]
        return health

    def last_scrape_after(self, job: str, ts: float) -> bool:
        """Whether every target of the job has been scraped after unix time `ts` (so counters include all
        requests)."""
        scrapes = [_rfc3339_seconds(str(t.get("lastScrape", ""))) for t in self.targets()
                   if t["labels"].get("job") == job]
        return bool(scrapes) and min(scrapes) > ts


def _rfc3339_seconds(text: str) -> float:
    import datetime

    if not text or text.startswith("0001"):
        return 0.0
    # Prometheus writes nanoseconds; Python parses at most microseconds.
    head, _, rest = text.partition(".")
    frac = ""
    tz = "Z"
    if rest:
        digits = "".join(ch for ch in rest if ch.isdigit())
        frac = "." + digits[:6]
        tz = rest[len(digits):] or "Z"
    stamp = datetime.datetime.fromisoformat(head + frac + (tz if tz != "Z" else "+00:00"))
    return stamp.timestamp()


def by_label(samples: list[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    """{label value: sample value}, NaN dropped."""
    return {m.get(label, ""): v for m, v in samples if not math.isnan(v)}
