"""Read manifests/grafana/tiered-dashboard.json as Grafana would: its panels, its PromQL, its variables.

Shared by tests/unit/gitops (structure, metric names) and tests/integration/gitops (every query against a real
Prometheus); the integration side loads this file by path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from tiered_router.metrics import RouterMetrics

REPO = Path(__file__).resolve().parents[3]
GRAFANA_DIR = REPO / "manifests" / "grafana"
DASHBOARD_PATH = GRAFANA_DIR / "tiered-dashboard.json"
KSM_CONFIG_PATH = GRAFANA_DIR / "kube-state-metrics-tiered.yaml"

# What Grafana substitutes for its built-in variables when the dashboard shows the last hour.
GRAFANA_BUILTINS = {"__rate_interval": "1m", "__range": "1h", "__interval": "15s"}
_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "inf", "nan",
    # aggregation operators (may be followed by `by (...)` rather than by their parenthesis)
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
}


@dataclass(frozen=True)
class Query:
    """One PromQL expression of the dashboard and where it lives (panel title / variable name, refId)."""

    where: str
    expr: str


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_PATH.read_text()))


def panel_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every target expression of every panel (rows' nested panels included)."""
    queries = []
    for panel in _all_panels(dashboard):
        for target in panel.get("targets", []):
            queries.append(Query(f"{panel['title']} / {target['refId']}", target["expr"]))
    return queries


def _all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return _all_panels(dashboard)


def variable_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Query variables as PromQL: Grafana's `label_values(selector, label)` asks for `group by (label) (selector)`."""
    queries = []
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        text = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
        if not match:
            raise ValueError(f"variable {variable['name']}: unsupported query {text!r}")
        queries.append(Query(f"variable {variable['name']}", f"group by ({match[2]}) ({match[1]})"))
    return queries


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $var / ${var} by `values` or Grafana's built-ins; KeyError names a variable nobody defines."""
    merged = {**GRAFANA_BUILTINS, **values}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in merged:
            raise KeyError(f"undefined dashboard variable ${name} in {expr!r}")
        return merged[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords or label names."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # range selectors
    text = re.sub(r"\boffset\s+-?[0-9a-z]+", "offset", text)  # offset durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end():].lstrip()
        if word.lower() in _PROMQL_WORDS or following.startswith("("):
            continue
        if re.fullmatch(r"\d+(\.\d+)?(e\d+)?", word):
            continue
        names.add(word)
    return names


def router_series_names() -> set[str]:
    """Every series name a router's /metrics can expose (counters get _total, histograms _bucket/_sum/_count)."""
    registry = CollectorRegistry()
    RouterMetrics(registry)
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def ksm_config() -> dict[str, Any]:
    return dict(yaml.safe_load(KSM_CONFIG_PATH.read_text()))


def ksm_series_names() -> set[str]:
    """The series kube-state-metrics exports with manifests/grafana/kube-state-metrics-tiered.yaml."""
    names: set[str] = set()
    for resource in ksm_config()["spec"]["resources"]:
        prefix = resource.get("metricNamePrefix", "kube_customresource")
        names.update(f"{prefix}_{metric['name']}" for metric in resource["metrics"])
    return names
