"""Evaluate a kube-state-metrics custom-resource-state config against InferenceTier objects, as series.

No kube-state-metrics binary is available here (it would have to be built from Go sources), so the dashboard test
serves the series kube-state-metrics would export for manifests/grafana/kube-state-metrics-tiered.yaml, computed
from real objects: the config's paths are resolved on InferenceTiers read back from the API server (the Argo CD
testdata), so a path that does not exist in the CRD's shape produces no series and the dashboard query that
needs it returns nothing. Only the config features our file uses are implemented: resource-level
labelsFromPath, metricNamePrefix, Gauge (path, nilIsZero) and Info (labelsFromPath).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_MISSING = object()


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    value: float


def _resolve(obj: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _labels(obj: dict[str, Any], labels_from_path: dict[str, list[str]]) -> dict[str, str]:
    labels = {}
    for label, path in labels_from_path.items():
        value = _resolve(obj, path)
        if value is not _MISSING and value is not None:
            labels[label] = str(value)
    return labels


def series_for(config: dict[str, Any], objects: list[dict[str, Any]]) -> list[Series]:
    """The series kube-state-metrics would export for `objects` under `config`."""
    result = []
    for resource in config["spec"]["resources"]:
        gvk = resource["groupVersionKind"]
        prefix = resource.get("metricNamePrefix", "kube_customresource")
        common = {
            "customresource_group": gvk["group"],
            "customresource_version": gvk["version"],
            "customresource_kind": gvk["kind"],
        }
        for obj in objects:
            if obj.get("kind") != gvk["kind"] or obj.get("apiVersion") != f"{gvk['group']}/{gvk['version']}":
                continue
            base = {**common, **_labels(obj, resource.get("labelsFromPath", {}))}
            for metric in resource["metrics"]:
                each = metric["each"]
                name = f"{prefix}_{metric['name']}"
                if each["type"] == "Gauge":
                    value = _resolve(obj, each["gauge"]["path"])
                    if value is _MISSING or value is None:
                        if not each["gauge"].get("nilIsZero"):
                            continue
                        value = 0
                    labels = {**base, **_labels(obj, each["gauge"].get("labelsFromPath", {}))}
                    result.append(Series(name, labels, float(value)))
                elif each["type"] == "Info":
                    labels = {**base, **_labels(obj, each["info"].get("labelsFromPath", {}))}
                    result.append(Series(name, labels, 1.0))
                else:
                    raise ValueError(f"{name}: metric type {each['type']} is not supported by this evaluator")
    return result


class CustomResourceStateCollector(Collector):
    """A prometheus_client collector serving `series_for(config, objects)` (all as gauges, as KSM does)."""

    def __init__(self, config: dict[str, Any], objects: list[dict[str, Any]]) -> None:
        self._series = series_for(config, objects)

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[Series]] = {}
        for series in self._series:
            by_name.setdefault(series.name, []).append(series)
        for name, members in by_name.items():
            label_names = sorted({key for s in members for key in s.labels})
            family = GaugeMetricFamily(name, f"kube-state-metrics custom resource state: {name}", labels=label_names)
            for s in members:
                family.add_metric([s.labels.get(key, "") for key in label_names], s.value)
            yield family
