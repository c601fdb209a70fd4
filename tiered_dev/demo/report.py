"""The demo's summary: computed from measurements only (Prometheus counters, response headers, the stand-in).

Counters are read from Prometheus just before and just after the workload (after one more scrape), and the
summary uses the differences, so a re-run against still-running processes reports its own traffic only.
Everything here is pure; `up.py` does the reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tiered_dev.demo import standin
from tiered_dev.demo.driver import Outcome
from tiered_dev.demo.workload import KIND_IN_SCOPE, KIND_OOS, KIND_PII
from tiered_router import metrics as m

Vector = dict[tuple[tuple[str, str], ...], float]
"""A Prometheus instant vector: sorted label pairs → value."""


def counter_queries(namespace: str) -> dict[str, str]:
    """The counters the summary is made of, summed over router/stand-in instances.

    `last_over_time(...[3s])` keeps only series scraped in the last 3 s (scrapes are 1 s apart): after a restart,
    Prometheus still returns a stopped process's last sample for 5 minutes, which must not count as "before".
    """
    ns = f'namespace="{namespace}"'

    def live(metric: str) -> str:
        return f"last_over_time({metric}{{{ns}}}[3s])"

    return {
        "requests": f"sum by (tier, outcome) ({live(m.REQUESTS + '_total')})",
        "cost": f"sum by (tier) ({live(m.COST_USD + '_total')})",
        "avoided": f"sum by (tier) ({live(m.AVOIDED_USD + '_total')})",
        "tokens": f"sum by (tier, direction) ({live(m.TOKENS + '_total')})",
        "decisions": f"sum by (reason, tier) ({live(m.DECISIONS + '_total')})",
        "pii": f"sum by (entity) ({live(m.PII_DETECTIONS + '_total')})",
        "fallbacks": f"sum({live(m.FALLBACKS + '_total')})",
        "spillovers": f"sum by (cause) ({live(m.SPILLOVERS + '_total')})",
        "standin_requests": f"sum({live(standin.REQUESTS + '_total')})",
        "standin_pii": f"sum({live(standin.PII_REQUESTS + '_total')})",
        "standin_unauthorized": f"sum({live(standin.UNAUTHORIZED + '_total')})",
    }


def p95_query(namespace: str, window_s: int) -> str:
    """p95 (ms) per tier over the workload window, from the router's latency histogram."""
    return (
        "1000 * histogram_quantile(0.95, sum by (le, tier) "
        f'(increase({m.REQUEST_LATENCY}_bucket{{namespace="{namespace}"}}[{window_s}s])))'
    )


def to_vector(samples: Sequence[tuple[Mapping[str, str], float]]) -> Vector:
    return {tuple(sorted(m.items())): v for m, v in samples}


def delta(start: Vector, end: Vector) -> Vector:
    """end - start per series; a series absent at the start counted from 0 (counters are created on first use)."""
    return {k: v - start.get(k, 0.0) for k, v in end.items()}


def total(vec: Vector, **match: str) -> float:
    return sum(v for k, v in vec.items() if all(dict(k).get(name) == value for name, value in match.items()))


def group(vec: Vector, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in vec.items():
        key = dict(k).get(label, "")
        out[key] = out.get(key, 0.0) + v
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (client-side cross-check)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class DemoInputs:
    """Everything measured during one run."""

    namespace: str
    tier_kinds: Mapping[str, str]
    """tier name → local | cloud (from the router config the operator wrote)."""
    outcomes: Sequence[Outcome]
    counters: Mapping[str, Vector]
    """name (see counter_queries) → delta over the workload."""
    p95_ms: Mapping[str, float]
    """tier → p95 from Prometheus over the workload window."""
    pii_values_in_standin_log: int
    """How many of the generated PII values occur anywhere in the stand-in's received log."""
    standin_log_entries: int
    workload_seconds: float


def summarize(inp: DemoInputs) -> dict[str, Any]:
    """The summary the demo prints and writes to summary.json."""
    c = inp.counters
    served = group({k: v for k, v in c["requests"].items() if dict(k).get("outcome") == "success"}, "tier")
    local = sum(v for t, v in served.items() if inp.tier_kinds.get(t) == "local")
    all_served = sum(served.values())
    cost = group(c["cost"], "tier")
    avoided = group(c["avoided"], "tier")
    spend = sum(cost.values())
    baseline = spend + sum(avoided.values())

    outcomes = list(inp.outcomes)
    ok = [o for o in outcomes if o.status == 200]
    by_kind: dict[str, int] = {}
    for o in outcomes:
        by_kind[o.item.kind] = by_kind.get(o.item.kind, 0) + 1
    pii = [o for o in outcomes if o.item.kind == KIND_PII]
    pii_local = [o for o in pii if o.status == 200 and inp.tier_kinds.get(o.tier or "") == "local"]
    pii_cloud = [o for o in pii if inp.tier_kinds.get(o.tier or "") == "cloud"]
    in_scope = [o for o in outcomes if o.item.kind == KIND_IN_SCOPE and o.status == 200]
    oos = [o for o in outcomes if o.item.kind == KIND_OOS and o.status == 200]
    spilled = [o for o in ok if o.spilled_from]
    client_p95 = {
        t: percentile([o.latency_s * 1000 for o in ok if o.tier == t], 0.95) for t in sorted(inp.tier_kinds)
    }
    decisions = group(c["decisions"], "reason")
    samples: dict[str, dict[str, str]] = {}
    for o in sorted(ok, key=lambda o: o.item.kind == KIND_PII):  # prefer prompts without (synthetic) PII
        if o.tier and o.text and o.tier not in samples:
            samples[o.tier] = {"prompt": o.item.text[:80], "answer": o.text}
    return {
        "namespace": inp.namespace,
        "workload_seconds": round(inp.workload_seconds, 1),
        "requests": {
            "sent": len(outcomes),
            "ok": len(ok),
            "errors": len(outcomes) - len(ok),
            "by_kind": by_kind,
            "error_samples": sorted({o.error or f"HTTP {o.status}" for o in outcomes if o.status != 200})[:5],
        },
        "tiers": {
            t: {
                "kind": inp.tier_kinds[t],
                "requests_prometheus": round(served.get(t, 0.0)),
                "requests_client": sum(1 for o in ok if o.tier == t),
                "p95_ms_prometheus": _round(inp.p95_ms.get(t)),
                "p95_ms_client": _round(client_p95.get(t)),
                "spend_usd": cost.get(t, 0.0),
            }
            for t in sorted(inp.tier_kinds)
        },
        "local_share": (local / all_served) if all_served else None,
        "local_share_client": (sum(1 for o in ok if inp.tier_kinds.get(o.tier or "") == "local") / len(ok))
        if ok else None,
        "spend_usd": spend,
        "all_cloud_usd": baseline,
        "saved_pct": (100.0 * (baseline - spend) / baseline) if baseline > 0 else None,
        "tokens": {f"{dict(k).get('tier')}/{dict(k).get('direction')}": round(v) for k, v in c["tokens"].items()},
        "decisions": {k: round(v) for k, v in sorted(decisions.items())},
        "fallbacks": round(total(c["fallbacks"])),
        "routing": {
            "in_scope_served": len(in_scope),
            "in_scope_on_expected_tier": sum(1 for o in in_scope if o.item.expected_tier in (o.tier, o.spilled_from)),
            "oos_served": len(oos),
            "oos_on_default_tier": sum(1 for o in oos if o.tier == o.item.expected_tier),
        },
        "pii": {
            "sent": len(pii),
            "served_local": len(pii_local),
            "served_cloud": len(pii_cloud),
            "router_detections": {k: round(v) for k, v in sorted(group(c["pii"], "entity").items())},
            "kept_local_decisions": round(decisions.get("PiiKeptLocal", 0.0)),
            "standin_pii_requests": round(total(c["standin_pii"])),
            "generated_values_in_standin_log": inp.pii_values_in_standin_log,
        },
        "spillover": {
            "requests": len(spilled),
            "by_cause": {k: round(v) for k, v in sorted(group(c.get("spillovers", {}), "cause").items())},
            "pii": sum(1 for o in spilled if o.item.kind == KIND_PII),
        },
        "sample_answers": samples,
        "standin": {
            "requests": round(total(c["standin_requests"])),
            "unauthorized": round(total(c["standin_unauthorized"])),
            "log_entries": inp.standin_log_entries,
        },
    }


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 1)


def _usd(value: float) -> str:
    return f"${value:.6f}"


def format_summary(s: Mapping[str, Any], local_tier: str, cloud_tier: str) -> str:
    """The human-readable block printed at the end of `demo up`."""
    lines: list[str] = []
    req = s["requests"]
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(req["by_kind"].items()))
    lines.append(f"Workload: {req['sent']} requests ({kinds}) in {s['workload_seconds']}s; "
                 f"{req['ok']} answered 200, {req['errors']} errors")
    for sample in req["error_samples"]:
        lines.append(f"  error: {sample}")
    share = s["local_share"]
    share_client = s["local_share_client"]
    lines.append(
        "Local share: "
        + (f"{100 * share:.1f}%" if share is not None else "n/a")
        + " of answered requests served by local tiers (Prometheus: tiered_router_requests_total)"
        + (f"; response headers agree: {100 * share_client:.1f}%" if share_client is not None else "")
    )
    lines.append("Per tier (p95 from Prometheus histogram_quantile over the workload window; client-side p95 beside):")
    lines.append(f"  {'TIER':<16}{'KIND':<7}{'REQUESTS':>9}{'P95 (prom)':>13}{'P95 (client)':>14}{'SPEND':>14}")
    for name, t in s["tiers"].items():
        p95 = f"{t['p95_ms_prometheus']:.0f} ms" if t["p95_ms_prometheus"] is not None else "n/a"
        p95c = f"{t['p95_ms_client']:.0f} ms" if t["p95_ms_client"] is not None else "n/a"
        lines.append(f"  {name:<16}{t['kind']:<7}{t['requests_prometheus']:>9}{p95:>13}{p95c:>14}"
                     f"{_usd(t['spend_usd']):>14}")
    saved = s["saved_pct"]
    lines.append(
        f"Cloud spend: {_usd(s['spend_usd'])} vs {_usd(s['all_cloud_usd'])} if every request had gone to the cloud "
        f"tier's price (router cost + avoided-cost counters)" + (f": {saved:.1f}% avoided" if saved is not None else "")
    )
    r = s["routing"]
    lines.append(
        f"Routing: {r['in_scope_on_expected_tier']}/{r['in_scope_served']} in-scope CLINC150 test utterances on "
        f"their domain's tier (or spilled from it); {r['oos_on_default_tier']}/{r['oos_served']} out-of-scope ones "
        f"on the default tier ({cloud_tier}); fallbacks: {s['fallbacks']}"
    )
    sp = s.get("spillover") or {}
    if sp.get("requests"):
        causes = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sp["by_cause"].items()) or "see the router's log"
        lines.append(
            f"Spillover: {sp['requests']} requests routed to {local_tier} went to {cloud_tier} while {local_tier} was "
            f"busy (tiered_router_spillovers_total by cause: {causes}); {sp['pii']} of them carried PII."
        )
    p = s["pii"]
    detections = ", ".join(f"{k} {v}" for k, v in p["router_detections"].items()) or "none"
    lines.append(
        f"PII: {p['sent']} PII-bearing requests sent; {p['served_local']} served by {local_tier} (local), "
        f"{p['served_cloud']} by the cloud tier. Router detections: {detections}; "
        f"{p['kept_local_decisions']} would have gone to the cloud and were kept local (PiiKeptLocal)."
    )
    st = s["standin"]
    lines.append(
        f"Cloud stand-in received {st['requests']} requests: {p['standin_pii_requests']} with PII by its own "
        f"detector; {p['generated_values_in_standin_log']} of the generated PII values appear in its received log "
        f"({st['log_entries']} entries); {st['unauthorized']} refused for a wrong API key."
    )
    for tier, sample in s.get("sample_answers", {}).items():
        lines.append(f"Sample answer from {tier}: {sample['prompt']!r} -> {sample['answer']!r}")
    return "\n".join(lines)
