"""manifests/monitoring/: the rules are valid and fire when (and only when) a tier burns its latency SLO.

Uses promtool from the Debian `prometheus` package: `promtool check` for syntax and `promtool test rules` to run
the alerts over synthetic series, so the burn-rate arithmetic is checked by Prometheus itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "manifests" / "monitoring"
RULES = MONITORING / "prometheus" / "tiered-rules.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (Debian bookworm)", pytrace=False)
    return found


def _rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return loaded


def test_prometheusrule_carries_exactly_the_plain_rules() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"] == _rules()


def test_kustomization_ships_one_scrape_object_only() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["podmonitor.yaml", "prometheusrule.yaml"]  # not servicemonitor.yaml too


def test_monitors_scrape_the_ports_the_operator_builds() -> None:
    from tiered_operator.api.inferencetier import InferenceTier
    from tiered_operator.reconcile.deployment import RouterSidecar, build_deployment
    from tiered_operator.reconcile.service import build_service
    from tiered_operator.settings import OperatorSettings

    tier = InferenceTier.from_k8s({
        "metadata": {"name": "slm", "namespace": "team-a", "uid": "0"},
        "spec": {"backend": "local", "local": {"runtime": "llamacpp", "model": {"source": "pvc://m/t.gguf"}}},
    })
    service_ports = {p["name"] for p in build_service(tier, OperatorSettings())["spec"]["ports"]}
    deployment = build_deployment(tier, RouterSidecar(), OperatorSettings())
    container_ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
    }
    pod_monitor = yaml.safe_load((MONITORING / "podmonitor.yaml").read_text())
    service_monitor = yaml.safe_load((MONITORING / "servicemonitor.yaml").read_text())
    # A PodMonitor names container ports, a ServiceMonitor names Service ports.
    assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} == {"http", "slm"} <= container_ports
    assert {"metrics", "slm"} <= service_ports
    assert {e["port"] for e in service_monitor["spec"]["endpoints"]} == {"metrics", "slm"}


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_plain_scrape_config_passes_promtool_check(promtool: str, tmp_path: Path) -> None:
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    # Debian's Prometheus is built without Kubernetes service discovery; check everything else (relabelling,
    # rule files) with a static target in its place.
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    config["rule_files"] = [str(RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _histogram(name: str, tier: str, latency: str, per_minute: int = 60) -> list[dict[str, str]]:
    """Input series: every request of `tier` takes `latency` seconds (one of the listed bucket bounds)."""
    series = []
    for le in ("0.05", "0.1", "0.2", "0.3", "+Inf"):
        counted = le == "+Inf" or float(le) >= float(latency)
        values = f"0+{per_minute}x60" if counted else "0+0x60"
        series.append({"series": f'{name}_bucket{{namespace="team-a",tier="{tier}",le="{le}"}}', "values": values})
    return series


def _expected(alert: str, tier: str, slo_metric: str) -> dict[str, Any]:
    rule = next(r for g in _rules()["groups"] for r in g["rules"] if r.get("alert") == alert)
    labels = {"namespace": "team-a", "tier": tier, "slo_metric": slo_metric}

    def render(text: str) -> str:
        return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)

    return {
        "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
        "exp_annotations": {k: render(v) for k, v in rule["annotations"].items()},
    }


def test_burn_rate_alerts_fire_for_slow_tiers_only(promtool: str, tmp_path: Path) -> None:
    e2e, ttft = "tiered_router_request_latency_seconds", "tiered_router_ttft_seconds"
    slo = "tiered_inferencetier_slo_latency_p95_ms"
    series = [
        *_histogram(e2e, "slow", "0.3"),  # every request 3x the objective: burns fast
        *_histogram(e2e, "healthy", "0.05"),
        *_histogram(e2e, "streaming", "0.3"),  # slow end to end, but its objective is on TTFT...
        *_histogram(ttft, "streaming", "0.05"),  # ...which is fine
        *_histogram(e2e, "slowstart", "0.05"),
        *_histogram(ttft, "slowstart", "0.2"),  # TTFT objective breached
        {"series": f'{slo}{{namespace="team-a",tier="slow",backend="local"}}', "values": "100x60"},
        {"series": f'{slo}{{namespace="team-a",tier="healthy",backend="local"}}', "values": "100x60"},
        {"series": f'{slo}{{namespace="team-a",tier="streaming",backend="local",slo_metric="ttft"}}',
         "values": "100x60"},
        {"series": f'{slo}{{namespace="team-a",tier="slowstart",backend="local",slo_metric="ttft"}}',
         "values": "100x60"},
    ]
    spec = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "30m",
                        "alertname": "TieredLatencySLOBurnFast",
                        "exp_alerts": [
                            _expected("TieredLatencySLOBurnFast", "slow", "e2e"),
                            _expected("TieredLatencySLOBurnFast", "slowstart", "ttft"),
                        ],
                    },
                    {
                        "eval_time": "30m",
                        "alertname": "TieredLatencySLOBurnMedium",
                        "exp_alerts": [
                            _expected("TieredLatencySLOBurnMedium", "slow", "e2e"),
                            _expected("TieredLatencySLOBurnMedium", "slowstart", "ttft"),
                        ],
                    },
                    # The slow-burn alert needs its condition for an hour before it fires.
                    {"eval_time": "30m", "alertname": "TieredLatencySLOBurnSlow", "exp_alerts": []},
                ],
            }
        ],
    }
    path = tmp_path / "slo_test.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
