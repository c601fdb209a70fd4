"""The Grafana dashboard: valid JSON, the panels a platform team needs, only metric names that really exist.

Metric names are imported from the router's metrics module (and the kube-state-metrics config next to the
dashboard), so renaming a metric without updating the dashboard fails here. The queries themselves are run
against a real Prometheus in tests/integration/gitops/test_grafana_queries.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_dashboard import (
    DASHBOARD_PATH,
    GRAFANA_DIR,
    KSM_CONFIG_PATH,
    all_panels,
    ksm_series_names,
    load_dashboard,
    metric_names,
    panel_queries,
    router_series_names,
    substitute,
    variable_queries,
)

from tiered_router import metrics

DASHBOARD = load_dashboard()
PANELS = {panel["title"]: panel for panel in all_panels(DASHBOARD)}
DEFINED_VARIABLES = {v["name"]: "x" for v in DASHBOARD["templating"]["list"]}

# Panel title -> series its queries must select (router names built from the router's own constants).
REQUIRED_PANELS: dict[str, set[str]] = {
    "p95 latency per tier vs SLO": {f"{metrics.REQUEST_LATENCY}_bucket", "tiered_inferencetier_slo_latency_p95_ms"},
    "Time to first token p95 per tier vs SLO": {f"{metrics.TTFT}_bucket"},
    "Local share": {f"{metrics.REQUESTS}_total", "tiered_inferencetier_info"},
    "Local share over time": {f"{metrics.REQUESTS}_total", "tiered_inferencetier_info"},
    "Cloud spend vs all-cloud baseline": {f"{metrics.COST_USD}_total", f"{metrics.AVOIDED_USD}_total"},
    "Spend and avoided spend (USD per hour)": {f"{metrics.COST_USD}_total", f"{metrics.AVOIDED_USD}_total"},
    "PII detections": {f"{metrics.PII_DETECTIONS}_total"},
    "PII findings kept local": {f"{metrics.PII_DETECTIONS}_total"},
    "Fallbacks and upstream errors": {f"{metrics.FALLBACKS}_total", f"{metrics.UPSTREAM_ERRORS}_total"},
    "Replicas per tier": {"tiered_inferencetier_spec_replicas", "tiered_inferencetier_status_ready_replicas"},
}


def _panel_series(panel: dict[str, Any]) -> set[str]:
    return set().union(*(metric_names(t["expr"]) for t in panel["targets"]))


def test_dashboard_identity_and_schema() -> None:
    assert DASHBOARD["uid"] == "tiered-overview"
    assert isinstance(DASHBOARD["schemaVersion"], int) and DASHBOARD["schemaVersion"] >= 36
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} == {"datasource", "namespace", "tier"}
    assert DASHBOARD_PATH.read_text().endswith("\n")


@pytest.mark.parametrize("title", sorted(REQUIRED_PANELS))
def test_required_panel_selects_the_right_series(title: str) -> None:
    assert title in PANELS, f"no panel titled {title!r}"
    assert REQUIRED_PANELS[title] <= _panel_series(PANELS[title])


def test_every_series_in_the_dashboard_is_exported_by_the_router_or_kube_state_metrics() -> None:
    known = router_series_names() | ksm_series_names()
    for query in [*panel_queries(DASHBOARD), *variable_queries(DASHBOARD)]:
        unknown = metric_names(query.expr) - known
        assert not unknown, f"{query.where}: {sorted(unknown)} is exported by nothing (router: {metrics.__file__})"


def test_every_variable_used_is_defined_and_every_target_uses_the_datasource_variable() -> None:
    for query in panel_queries(DASHBOARD):
        substitute(query.expr, DEFINED_VARIABLES)  # KeyError on an undefined $variable
    for panel in all_panels(DASHBOARD):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_panel_ids_are_unique_and_panels_do_not_overlap() -> None:
    panels = all_panels(DASHBOARD)
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        columns = range(grid["x"], grid["x"] + grid["w"])
        mine = {(x, y) for x in columns for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_metric_name_extraction_ignores_functions_labels_and_keywords() -> None:
    expr = (
        'sum by (tier, le) (rate(a_bucket{tier=~"x|y", job="b_total"}[5m])) / on (tier) group_left() '
        "max by (tier) (c_info) and ignoring (x) d offset 5m > bool 0.5"
    )
    assert metric_names(expr) == {"a_bucket", "c_info", "d"}


def _kubectl() -> str:
    cached = sorted(Path.home().glob(".cache/tiered/controlplane/*/bin/kubectl"))
    found = shutil.which("kubectl") or (str(cached[-1]) if cached else None)
    if not found:
        pytest.fail("kubectl is needed to render manifests/grafana with kustomize")
    return str(found)


def test_kustomization_ships_the_dashboard_and_the_kube_state_metrics_config_verbatim() -> None:
    rendered = subprocess.run(
        [_kubectl(), "kustomize", str(GRAFANA_DIR)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    config_maps = {d["metadata"]["name"]: d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ConfigMap"}
    dashboard_cm = config_maps["tiered-grafana-dashboard"]
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_cm["data"] == {DASHBOARD_PATH.name: DASHBOARD_PATH.read_text()}
    ksm_cm = config_maps["tiered-kube-state-metrics"]
    assert ksm_cm["data"] == {KSM_CONFIG_PATH.name: KSM_CONFIG_PATH.read_text()}
