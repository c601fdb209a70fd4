"""Every PromQL query of the Grafana dashboard, run by a real Prometheus against series it really scraped.

Prometheus (Debian's 2.42 binary) scrapes two real HTTP endpoints on 127.0.0.1:
- the router's metrics: the router's own `RouterMetrics` collectors (tiered_router.metrics) served by
  prometheus_client, fed with a known workload (local tier edge-q4, cloud tier frontier);
- the series kube-state-metrics exports with manifests/grafana/kube-state-metrics-tiered.yaml, computed from the
  InferenceTiers in the Argo CD testdata (objects read back from the API server; see custom_resource_state.py).
Each dashboard query (Grafana variables substituted as Grafana would) must parse and return data; a few panels are
also checked for the numbers the workload implies. No control plane is needed, so no `integration` marker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from custom_resource_state import CustomResourceStateCollector
from prometheus_client import CollectorRegistry, start_http_server
from real_prometheus import QueryResult, ScrapeTarget, instant_query, running_prometheus, wait_for_scrapes
from unit_modules import load_unit_module

from tiered_router.metrics import RouterMetrics

dash = load_unit_module("grafana_dashboard")
lua = load_unit_module("argocd_lua")

NAMESPACE = "demo"
LOCAL_TIER, CLOUD_TIER = "edge-q4", "frontier"
LOCAL_REQUESTS, CLOUD_REQUESTS = 30, 10
VARIABLES = {"namespace": NAMESPACE, "tier": ".*", "datasource": "prometheus"}
TIER_OBJECTS = [
    lua.HEALTH_DIR / lua.GROUP / "InferenceTier" / "testdata" / "healthy_local.yaml",
    lua.HEALTH_DIR / lua.GROUP / "InferenceTier" / "testdata" / "healthy_cloud.yaml",
]
DASHBOARD = dash.load_dashboard()
ALL_QUERIES = [*dash.panel_queries(DASHBOARD), *dash.variable_queries(DASHBOARD)]


def _declare_series(m: RouterMetrics) -> None:
    """Create every labelled series at zero, so the first scrape sees the counters before they move."""
    for tier in (LOCAL_TIER, CLOUD_TIER):
        m.requests.labels(tier, "smalltalk" if tier == LOCAL_TIER else "default", "ok")
        m.latency.labels(tier)
        m.ttft.labels(tier)
        m.cost.labels(tier)
        m.avoided.labels(tier)
        m.decisions.labels("route" if tier == LOCAL_TIER else "default", tier)
        m.upstream_errors.labels(tier, "timeout")
        m.in_flight.labels(tier)
    m.pii.labels("email", "keepLocal")
    m.fallbacks.labels(CLOUD_TIER, LOCAL_TIER, "timeout")


def _serve_workload(m: RouterMetrics) -> None:
    """What the routers record for 30 local and 10 cloud requests (3 with an e-mail address kept local)."""
    for _ in range(LOCAL_REQUESTS):
        m.requests.labels(LOCAL_TIER, "smalltalk", "ok").inc()
        m.latency.labels(LOCAL_TIER).observe(0.030)
        m.ttft.labels(LOCAL_TIER).observe(0.012)
        m.decisions.labels("route", LOCAL_TIER).inc()
        m.avoided.labels(LOCAL_TIER).inc(0.004)
    for _ in range(CLOUD_REQUESTS):
        m.requests.labels(CLOUD_TIER, "default", "ok").inc()
        m.latency.labels(CLOUD_TIER).observe(0.400)
        m.ttft.labels(CLOUD_TIER).observe(0.250)
        m.decisions.labels("default", CLOUD_TIER).inc()
        m.cost.labels(CLOUD_TIER).inc(0.005)
    m.pii.labels("email", "keepLocal").inc(3)
    m.fallbacks.labels(CLOUD_TIER, LOCAL_TIER, "timeout").inc(2)
    m.upstream_errors.labels(CLOUD_TIER, "timeout").inc(2)
    m.in_flight.labels(LOCAL_TIER).set(2)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    router_registry = CollectorRegistry()
    router_metrics = RouterMetrics(router_registry)
    _declare_series(router_metrics)
    ksm_registry = CollectorRegistry()
    objects = [yaml.safe_load(Path(p).read_text()) for p in TIER_OBJECTS]
    ksm_registry.register(CustomResourceStateCollector(dash.ksm_config(), objects))
    router_server, router_thread = start_http_server(0, addr="127.0.0.1", registry=router_registry)
    ksm_server, ksm_thread = start_http_server(0, addr="127.0.0.1", registry=ksm_registry)
    targets = [
        # Kubernetes service discovery would attach the router pod's namespace.
        ScrapeTarget("tiered-router", f"127.0.0.1:{router_server.server_port}", {"namespace": NAMESPACE}),
        ScrapeTarget("kube-state-metrics", f"127.0.0.1:{ksm_server.server_port}", {}),
    ]
    try:
        with running_prometheus(tmp_path_factory.mktemp("prometheus"), targets) as base_url:
            wait_for_scrapes(base_url, "tiered-router", samples=2)
            _serve_workload(router_metrics)
            wait_for_scrapes(base_url, "tiered-router", samples=4)
            wait_for_scrapes(base_url, "kube-state-metrics", samples=1)
            yield base_url
    finally:
        for server, thread in ((router_server, router_thread), (ksm_server, ksm_thread)):
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


def _query(base_url: str, expr: str, at: float | None = None) -> QueryResult:
    answer = instant_query(base_url, dash.substitute(expr, VARIABLES), at)
    assert answer.status == "success", f"{expr}\n-> {answer.error_type}: {answer.error}"
    return answer


def _by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def _panel_target(title: str, ref_id: str) -> str:
    panel = next(p for p in dash.all_panels(DASHBOARD) if p["title"] == title)
    return str(next(t["expr"] for t in panel["targets"] if t["refId"] == ref_id))


@pytest.mark.parametrize("query", ALL_QUERIES, ids=lambda q: q.where)
def test_dashboard_query_parses_and_returns_scraped_data(prometheus: str, query: Any) -> None:
    answer = _query(prometheus, query.expr)
    assert answer.result, f"{query.where}: no data for {query.expr}"


def test_prometheus_rejects_a_query_with_a_syntax_error(prometheus: str) -> None:
    """The check above can fail: a malformed expression is answered with bad_data, not with an empty result."""
    answer = instant_query(prometheus, dash.substitute(_panel_target("Local share", "A")[:-3], VARIABLES))
    assert (answer.status, answer.error_type) == ("error", "bad_data")


def test_local_share_is_the_fraction_of_requests_served_by_local_tiers(prometheus: str) -> None:
    [series] = _query(prometheus, _panel_target("Local share", "A")).result
    assert float(series["value"][1]) == pytest.approx(LOCAL_REQUESTS / (LOCAL_REQUESTS + CLOUD_REQUESTS), abs=0.01)


def test_latency_panel_shows_each_tiers_p95_next_to_its_slo(prometheus: str) -> None:
    p95 = _by(_query(prometheus, _panel_target("p95 latency per tier vs SLO", "A")).result, "tier")
    slo = _by(_query(prometheus, _panel_target("p95 latency per tier vs SLO", "B")).result, "tier")
    assert 25 < p95[LOCAL_TIER] <= 40  # every local request took 30 ms: the 25-40 ms bucket
    assert 300 < p95[CLOUD_TIER] <= 500
    assert slo == {LOCAL_TIER: 60.0}  # only the local tier has an SLO in its spec


def test_replicas_panel_shows_desired_and_ready_replicas_of_local_tiers(prometheus: str) -> None:
    desired = _by(_query(prometheus, _panel_target("Replicas per tier", "A")).result, "tier")
    ready = _by(_query(prometheus, _panel_target("Replicas per tier", "B")).result, "tier")
    assert desired == {LOCAL_TIER: 2.0}
    assert ready == {LOCAL_TIER: 2.0}


def test_spend_panel_adds_spent_and_avoided_into_the_all_cloud_baseline(prometheus: str) -> None:
    title = "Cloud spend vs all-cloud baseline"
    at = time.time()  # one evaluation instant: scrapes keep arriving between the three queries
    spent, avoided, baseline = (
        float(_query(prometheus, _panel_target(title, ref), at).result[0]["value"][1]) for ref in "ABC"
    )
    assert spent > 0 and avoided > 0
    assert baseline == pytest.approx(spent + avoided)
