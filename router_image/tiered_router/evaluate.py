"""`tiered-router eval`: measure a RoutingPolicy's routes on labelled utterances.

"Out of scope to default" counts utterances whose decided tier is the policy's defaultTier, whether no route
passed its threshold or a route that itself points at the default tier (e.g. a route of out-of-scope examples)
won - the same outcome for the request.

The policy is a RoutingPolicy manifest exactly as a user writes it; only its routing fields matter here, so tiers
are stand-ins. Reported: in-scope accuracy, per-route precision/recall, the share of out-of-scope utterances sent
to the default tier, and decision latency p50/p99: the router's whole decide() pipeline as it runs per request - PII
scan for every entity (action keepLocal, so a finding changes the tier, never the route measured), residency,
classification, budget.
The data path is a JSONL file of ``{"text", "route"}`` (route null = out of scope) or the healthcare CSV.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classify import RouteClassifier
from .config import RouterConfig, parse_config
from .decision import RoutingRequest, decide, estimate_tokens
from .encoders import load_encoder


@dataclass(frozen=True)
class Sample:
    """One labelled utterance: `routes` empty means out of scope (should go to the default tier)."""

    text: str
    routes: frozenset[str]


def _encoder_spec(value: Any) -> dict[str, Any]:
    """The CRD's `classifier.encoder` ({type, path}) in the router schema's form ({kind, path})."""
    if value is None:
        return {"kind": "builtin"}
    if isinstance(value, str):
        return {"kind": value}
    out = {"kind": value.get("type", value.get("kind", "builtin"))}
    if value.get("path"):
        out["path"] = value["path"]
    return out


def config_from_policy(manifest: dict[str, Any]) -> RouterConfig:
    """A RouterConfig for evaluating a RoutingPolicy manifest's routes (tiers become local stand-ins)."""
    spec = manifest.get("spec", manifest)
    tier_names: list[str] = []
    for ref in spec.get("tiers", []):
        tier_names.append(ref if isinstance(ref, str) else ref["name"])
    routes = []
    for route in spec.get("routes", []):
        if route["tier"] not in tier_names:
            tier_names.append(route["tier"])
        route = dict(route)
        if route.get("threshold") is not None:
            route["threshold"] = float(route["threshold"])
        routes.append(route)
    default = spec.get("defaultTier") or (tier_names[0] if tier_names else "default")
    if default not in tier_names:
        tier_names.append(default)
    crd_classifier = spec.get("classifier") or {}
    classifier: dict[str, Any] = {"encoder": _encoder_spec(crd_classifier.get("encoder"))}
    threshold = crd_classifier.get("threshold")
    if threshold is not None:
        classifier["defaultThreshold"] = "auto" if threshold == "auto" else float(threshold)
    if crd_classifier.get("targetOutOfScopeRate") is not None:
        classifier["targetOutOfScopeRate"] = float(crd_classifier["targetOutOfScopeRate"])
    if crd_classifier.get("defaultExamples"):
        classifier["defaultExamples"] = crd_classifier["defaultExamples"]
    return parse_config(
        {
            "policy": manifest.get("metadata", {}).get("name", "policy"),
            "tiers": [{"name": n, "kind": "local", "baseURL": "http://127.0.0.1:9/v1", "model": n} for n in tier_names],
            "defaultTier": default,
            "routes": routes,
            "classifier": classifier,
            # Every PII entity scanned (the router's default) so the decision latency includes the scan; keepLocal
            # only narrows the tiers, and every stand-in tier is local, so findings never change what is measured.
            "residency": {"namespaceClass": "unrestricted", "pii": {"action": "keepLocal"}},
        }
    )


def load_samples(path: Path, split: str | None = "test") -> list[Sample]:
    """JSONL `{text, route}` (route null = out of scope) or the healthcare-routing CSV (rows of `split`)."""
    if path.suffix == ".csv":
        out = []
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                if split and row.get("split") != split:
                    continue
                routes = {row["expected_route"]} if row.get("expected_route") else set()
                routes |= {r.strip() for r in re.split(r"[|;]", row.get("alternate_routes") or "") if r.strip()}
                out.append(Sample(row["utterance"], frozenset(routes)))
        return out
    samples = []
    for line in path.read_text().splitlines():
        if line.strip():
            obj = json.loads(line)
            samples.append(Sample(obj["text"], frozenset([obj["route"]]) if obj.get("route") else frozenset()))
    return samples


def evaluate(config: RouterConfig, samples: list[Sample], classifier: RouteClassifier | None = None) -> dict[str, Any]:
    """Metrics for `samples` under `config`'s routes."""
    clf = classifier or RouteClassifier(config, load_encoder(config.classifier.encoder))
    preds: list[str | None] = []
    tiers: list[str] = []
    route_tier = {r.name: r.tier for r in config.routes}
    latencies: list[float] = []
    for s in samples:
        request = RoutingRequest(text=s.text, model="auto", input_tokens=estimate_tokens(s.text))
        t0 = time.perf_counter()
        d = decide(config, clf, request)
        latencies.append(time.perf_counter() - t0)
        route = d.classification.route if d.classification is not None else d.route
        preds.append(route)
        tiers.append(route_tier[route] if route is not None else config.default_tier)
    in_scope = [(s, p) for s, p in zip(samples, preds, strict=True) if s.routes]
    oos = [t for s, t in zip(samples, tiers, strict=True) if not s.routes]
    per_route: dict[str, dict[str, float | int]] = {}
    for r in config.routes:
        tp = sum(1 for s, p in zip(samples, preds, strict=True) if p == r.name and r.name in s.routes)
        predicted = sum(1 for p in preds if p == r.name)
        actual = sum(1 for s in samples if r.name in s.routes)
        per_route[r.name] = {
            "precision": round(tp / predicted, 4) if predicted else 0.0,
            "recall": round(tp / actual, 4) if actual else 0.0,
            "support": actual,
        }
    lat = np.array(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "samples": len(samples),
        "in_scope": len(in_scope),
        "out_of_scope": len(oos),
        "in_scope_accuracy": round(sum(1 for s, p in in_scope if p in s.routes) / len(in_scope), 4)
        if in_scope
        else None,
        "oos_to_default": round(sum(1 for t in oos if t == config.default_tier) / len(oos), 4) if oos else None,
        "decision_p50_ms": round(float(np.percentile(lat, 50)), 4),
        "decision_p99_ms": round(float(np.percentile(lat, 99)), 4),
        "encoder": clf.encoder.name,
        "classifier_method": clf.method.value,
        "per_route": per_route,
    }


def threshold_curve(
    clf: RouteClassifier, config: RouterConfig, samples: list[Sample], thresholds: list[float]
) -> list[dict[str, float]]:
    """In-scope accuracy and out-of-scope→default on `samples` at each threshold, applied to every route that
    sets no threshold of its own (the classifier's rule; keywords and maxInputTokens are not applied here)."""
    names = [r.name for r in clf.routes]
    to_default = np.array([r.tier == config.default_tier for r in clf.routes])
    own = np.array([r.threshold is not None for r in clf.routes])
    fixed = np.array(clf.thresholds, dtype=np.float64)
    scored = [clf._score_values(s.text) for s in samples]
    scores = np.array([v for v, _ in scored], dtype=np.float64).reshape(len(samples), len(names))
    default = np.array([d for _, d in scored], dtype=np.float64)
    best = scores.argmax(axis=1) if len(names) else np.zeros(len(samples), dtype=np.int64)
    top = scores[np.arange(len(samples)), best] if len(names) else np.zeros(len(samples))
    gold_in = np.array([bool(s.routes) for s in samples])
    hit = np.array([names[b] in s.routes if names else False for b, s in zip(best, samples, strict=True)])
    out = []
    for th in thresholds:
        need = np.where(own, fixed, th)[best] if len(names) else np.zeros(len(samples))
        routed = (top >= need) & (top > default)
        lands_default = ~routed | to_default[best] if len(names) else np.ones(len(samples), dtype=bool)
        out.append({
            "threshold": round(th, 4),
            "in_scope": round(float((routed & hit)[gold_in].mean()), 4) if gold_in.any() else 0.0,
            "oos_to_default": round(float(lands_default[~gold_in].mean()), 4) if (~gold_in).any() else 0.0,
        })  # fmt: skip
    return out


def calibration_report(clf: RouteClassifier, config: RouterConfig, samples: list[Sample] | None) -> dict[str, Any]:
    """`tiered-router calibrate`: the held-out curve of the policy's own examples, the chosen (auto) threshold,
    and, with labelled data, the same thresholds measured on it."""
    cal = clf.calibration
    report: dict[str, Any] = {
        "policy": config.policy,
        "encoder": clf.encoder.name,
        "classifier_method": clf.method.value,
        "routes": [
            {"route": r.name, "tier": r.tier, "threshold": round(t, 4), "source": src}
            for r, t, src in zip(clf.routes, clf.thresholds, clf.threshold_sources, strict=True)
        ],
    }
    if cal is None:
        return report
    report["calibration"] = cal.summary()
    report["held_out_curve"] = [
        {"threshold": p.threshold, "in_scope": round(p.in_scope, 4), "oos_to_default": round(p.out_of_scope, 4)}
        for p in cal.curve
    ]
    if samples is not None:
        thresholds = [p.threshold for p in cal.curve] or [cal.threshold]
        curve = threshold_curve(clf, config, samples, sorted({*thresholds, round(cal.threshold, 4)}))
        report["data"] = {
            "samples": len(samples),
            "curve": curve,
            "at_threshold": next(c for c in curve if c["threshold"] == round(cal.threshold, 4)),
        }
    return report


def format_calibration(report: dict[str, Any]) -> str:
    """Human-readable form of `calibration_report`."""
    lines = [f"policy {report['policy']}, encoder {report['encoder']} ({report['classifier_method']})"]
    cal = report.get("calibration")
    if cal is None:
        lines.append("no route uses threshold auto: nothing to calibrate")
    else:
        lines.append(
            f"auto threshold {cal['threshold']} ({cal['basis']}; target out-of-scope→default "
            f"{cal['targetOutOfScopeRate']}; {cal['inScopeExamples']} in-scope and {cal['outOfScopeExamples']} "
            f"out-of-scope examples, each scored without itself, and {cal.get('unseenTopicExamples', 0)} in-scope "
            "examples scored without their route, as out of scope)"
        )
        data = {c["threshold"]: c for c in report.get("data", {}).get("curve", [])}
        head = f"{'threshold':>9s}  {'held-out in-scope':>17s} {'out-of-scope→default':>20s}"
        if data:
            head += f"  {'data in-scope':>13s} {'out-of-scope→default':>20s}"
        lines.append(head)
        for p in report["held_out_curve"]:
            mark = "  <- chosen" if p["threshold"] == cal["threshold"] else ""
            row = f"{p['threshold']:>9.4f}  {p['in_scope']:>17.3f} {p['oos_to_default']:>20.3f}"
            if (d := data.get(p["threshold"])) is not None:
                row += f"  {d['in_scope']:>13.3f} {d['oos_to_default']:>20.3f}"
            lines.append(row + mark)
    lines.append("routes: " + ", ".join(f"{r['route']} {r['threshold']} ({r['source']})" for r in report["routes"]))
    return "\n".join(lines)


def format_report(result: dict[str, Any]) -> str:
    """Human-readable form of `evaluate`'s result."""
    lines = [
        f"samples {result['samples']} (in scope {result['in_scope']}, out of scope {result['out_of_scope']}), "
        f"encoder {result['encoder']} ({result.get('classifier_method', 'knn')})",
        f"in-scope accuracy     {result['in_scope_accuracy']}",
        f"out-of-scope→default  {result['oos_to_default']}",
        f"decision latency      p50 {result['decision_p50_ms']} ms, p99 {result['decision_p99_ms']} ms",
        f"{'route':24s} {'precision':>9s} {'recall':>7s} {'support':>7s}",
    ]
    for name, m in result["per_route"].items():
        lines.append(f"{name:24s} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['support']:>7d}")
    return "\n".join(lines)
