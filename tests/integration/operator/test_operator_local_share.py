"""status.localShare: the real router in front of two stand-in upstreams (one behind a local tier, one behind a cloud
tier), scraped by a real Prometheus; the budget loop reads the router's request counter and writes the share of
answered requests that local tiers served."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

AUTOSCALE_TESTS = Path(__file__).resolve().parents[1] / "autoscale"
sys.path.insert(0, str(AUTOSCALE_TESTS))

from prometheus_process import PrometheusProcess, RouterProcess, free_port, wait_until  # noqa: E402

from tiered_operator import labels  # noqa: E402
from tiered_operator.api.inferencetier import InferenceTier  # noqa: E402
from tiered_operator.api.routingpolicy import RoutingPolicy  # noqa: E402
from tiered_operator.autoscale import promql  # noqa: E402
from tiered_operator.autoscale.prometheus import PrometheusMetrics, PrometheusSettings  # noqa: E402
from tiered_operator.handlers.autoscale import AutoscalerKube, evaluate_budget  # noqa: E402
from tiered_operator.kube import Kube  # noqa: E402
from tiered_operator.reconcile.router_config import NamespacePolicy, compile_policy  # noqa: E402
from tiered_operator.settings import OperatorSettings  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def _upstream(tmp_path: Path, name: str, started: list[subprocess.Popen[bytes]]) -> str:
    port_file = tmp_path / f"{name}.port"
    started.append(subprocess.Popen([sys.executable, str(AUTOSCALE_TESTS / "standin_openai_upstream.py"),
                                     str(port_file), "0"]))
    wait_until(lambda: port_file.exists() and port_file.read_text().strip() != "", 15, f"{name} port")
    return f"http://127.0.0.1:{int(port_file.read_text())}/v1"


def test_budget_loop_writes_the_local_share_from_the_routers_counter(
    crds_installed: Any, namespace: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    prometheus_binary = shutil.which("prometheus")
    assert prometheus_binary is not None, "the prometheus binary is missing (apt-get install prometheus)"
    cluster = crds_installed
    local_url, cloud_url = _upstream(tmp_path, "local", processes), _upstream(tmp_path, "cloud", processes)
    objects = [
        {"apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
         "metadata": {"name": "slm", "namespace": namespace},
         "spec": {"backend": "local", "local": {"runtime": "llamacpp",
                                                "model": {"source": "pvc://models/tiny.gguf"}}}},
        {"apiVersion": labels.API_VERSION, "kind": labels.KIND_INFERENCE_TIER,
         "metadata": {"name": "gpt", "namespace": namespace},
         "spec": {"backend": "cloud", "cloud": {"provider": "openai-compatible", "baseURL": cloud_url,
                                                 "model": "gpt-standin", "apiKeySecretRef": {"name": "gpt-key"}}}},
        {"apiVersion": labels.API_VERSION, "kind": labels.KIND_ROUTING_POLICY,
         "metadata": {"name": "hybrid", "namespace": namespace},
         "spec": {"tiers": ["slm", "gpt"], "defaultTier": "slm",
                  "routes": [{"name": "hard", "tier": "gpt", "keywords": ["prove"],
                              "examples": ["prove that the square root of two is irrational"]}]}},
    ]
    cluster.kubectl("apply", "--server-side", "--field-manager=tiered-tests", "-f", "-",
                    input="\n---\n".join(json.dumps(o) for o in objects))

    def stored(kind: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        return out

    # The operator's own compile of the stored objects; the local tier's Service address resolves (as cluster DNS
    # would) to the stand-in behind it.
    tiers = {n: InferenceTier.from_k8s(stored("inferencetier", n)) for n in ("slm", "gpt")}
    compiled = compile_policy(RoutingPolicy.from_k8s(stored("routingpolicy", "hybrid")), tiers,
                              NamespacePolicy.from_labels({}), OperatorSettings())
    assert compiled.text is not None, compiled.error
    config = json.loads(compiled.text)
    for tier in config["tiers"]:
        if tier["kind"] == "local":
            tier["baseURL"] = local_url
    config_path = tmp_path / "router.json"
    config_path.write_text(json.dumps(config))
    port = free_port()
    log = (tmp_path / "router.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "tiered_router", "serve", "--config", str(config_path), "--host", "127.0.0.1",
         "--port", str(port), "--poll-seconds", "0.5"], stdout=log, stderr=subprocess.STDOUT,
    )
    processes.append(process)
    router = RouterProcess(process, port, config_path)
    wait_until(router.ready, 30, "router ready")
    prom = PrometheusProcess(prometheus_binary, tmp_path / "prometheus", [router.address], namespace=namespace)
    (tmp_path / "prometheus").mkdir()
    prom.start()
    try:
        prom.wait_for('count(up{job="tiered-router"} == 1)', lambda v: v == 1, timeout=15)

        def send(text: str, tier: str) -> None:
            status, headers = router.chat(text)
            assert status == 200 and headers.get("x-tiered-tier") == tier, (status, headers)

        # One request each creates the series; a scrape must see them before counting (increase() needs a start).
        send("hello there", "slm")
        send("please prove this for me", "gpt")
        served_all = promql.served_query(namespace, "hybrid", 3600)
        prom.wait_for(f'count({promql.ROUTER_METRICS.requests_total}{{namespace="{namespace}"}})', lambda v: v == 2)
        for _ in range(6):
            send("hello there, how are you", "slm")
        for _ in range(2):
            send("prove that this holds", "gpt")
        prom.wait_for(served_all, lambda v: v >= 7.5, timeout=20)

        api = kubernetes.config.new_client_from_config(config_file=str(cluster.operator_kubeconfig))
        kube = AutoscalerKube.sharing(Kube(api_client=api, reporting_instance="local-share-test"))
        source = PrometheusMetrics(PrometheusSettings(url=prom.url, timeout_seconds=2.0))
        evaluate_budget(stored("routingpolicy", "hybrid"), source, kube, datetime.datetime.now(datetime.UTC))
        share = stored("routingpolicy", "hybrid")["status"].get("localShare")
        assert share is not None
        assert abs(float(share) - 6 / 8) <= 0.08, share  # 6 of the 8 counted answers came from the local tier
        printed = cluster.kubectl("get", "routingpolicy", "hybrid", "-n", namespace).stdout
        assert share in printed  # the LOCAL-SHARE printer column is no longer empty
        # the threshold the router derived at load (threshold auto; no out-of-scope examples: the fallback)
        assert stored("routingpolicy", "hybrid")["status"].get("routeThresholds") == [
            {"route": "hard", "threshold": "0.5", "source": "auto"}
        ]

        # Without Prometheus the loop cannot measure: the share written last stays as it is.
        evaluate_budget(stored("routingpolicy", "hybrid"), None, kube, datetime.datetime.now(datetime.UTC))
        assert stored("routingpolicy", "hybrid")["status"].get("localShare") == share
    finally:
        prom.stop()
