"""`tiered-router pii-eval`: how well the PII scan keeps labelled values from reaching a cloud tier.

Each row of the JSONL file is one request, built exactly as the router builds it from a client's body (request.py:
every forwarded string, keys included) and decided by the router's own pipeline (decision.py) under the given router
config, or, without one, the default `restricted` configuration: a local tier, a cloud default tier, all seven
entities, `pii.action: keepLocal`, strict mode as the namespace class implies.

A value *leaks* when its row's decision could send the body to a cloud tier: a cloud tier is in the decided chain
and the body is not redacted, or it is redacted but one of the value's written pieces survives redaction. Recall is
the share of values that do not leak, per entity and per disguise class. A row without values is a false positive
when the scan found something in it (the request would be kept local, or redacted, for nothing).

Row format (one JSON object per line):

    {"id": "r1",                                  # optional, echoed in `leaks`
     "body": {"model": "auto", "messages": [...]}, # a chat or completions request body; or, instead of "body":
                                                   #   "messages": [...]  /  "prompt": "..."  /  "text": "..."
     "path": "/v1/chat/completions",               # optional; inferred from the body ("prompt" -> completions)
     "values": [                                   # the planted values; [] or absent for a PII-free row
       {"entity": "creditCard",                    # creditCard|usSsn|iban|email|phone|ipAddress|apiKey
                                                   #   (the RoutingPolicy names CREDIT_CARD, SSN, ... work too)
        "disguise": "split-user-turns",            # any label; recall is reported per label ("-" if absent)
        "written": ["4111 1111", "1111 1111"]}]}   # optional: the value as it appears in the body, for the
                                                   #   redaction check (a string or a list of pieces)
"""

from __future__ import annotations

import json
import statistics
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PiiEntity, RouterConfig, TierKind, parse_config
from .decision import Classification, Reason, RoutingRequest, decide, estimate_tokens
from .pii import redact, scan, scan_segments
from .request import BadRequest, classification_text, parse_body, redact_body

API_NAMES = {"EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "creditCard", "IBAN": "iban", "SSN": "usSsn",
             "IP_ADDRESS": "ipAddress", "API_KEY": "apiKey"}  # fmt: skip


class PiiEvalError(ValueError):
    """A row that cannot be evaluated; the message names the line."""


@dataclass(frozen=True)
class Label:
    entity: str
    disguise: str
    written: tuple[str, ...] = ()


@dataclass(frozen=True)
class Row:
    id: str
    kind: str  # chat | completion
    raw: bytes
    values: tuple[Label, ...] = field(default=())


def _entity(name: Any, line: int) -> str:
    name = API_NAMES.get(str(name), str(name))
    if name not in {e.value for e in PiiEntity}:
        raise PiiEvalError(f"line {line}: unknown entity {name!r}; use one of {[e.value for e in PiiEntity]}")
    return name


def parse_row(obj: Any, line: int) -> Row:
    if not isinstance(obj, dict):
        raise PiiEvalError(f"line {line}: a row must be a JSON object")
    if "body" in obj:
        body = obj["body"]
    elif "messages" in obj:
        body = {"model": "auto", "messages": obj["messages"]}
    elif "prompt" in obj:
        body = {"model": "auto", "prompt": obj["prompt"]}
    elif "text" in obj:
        body = {"model": "auto", "messages": [{"role": "user", "content": obj["text"]}]}
    else:
        raise PiiEvalError(f"line {line}: a row needs 'body', 'messages', 'prompt' or 'text'")
    if not isinstance(body, dict):
        raise PiiEvalError(f"line {line}: 'body' must be a JSON object")
    path = obj.get("path") or ("/v1/completions" if "prompt" in body and "messages" not in body else "")
    kind = "completion" if str(path).endswith("/completions") and "chat" not in str(path) else "chat"
    labels = []
    for v in obj.get("values") or []:
        if not isinstance(v, dict) or "entity" not in v:
            raise PiiEvalError(f"line {line}: each value needs at least an 'entity'")
        written = v.get("written", ())
        written = (written,) if isinstance(written, str) else tuple(str(w) for w in written)
        labels.append(Label(_entity(v["entity"], line), str(v.get("disguise") or "-"), written))
    return Row(str(obj.get("id", line)), kind, json.dumps(body).encode(), tuple(labels))


def load_rows(path: Path) -> list[Row]:
    rows = []
    with path.open() as fh:
        for n, text in enumerate(fh, 1):
            if text.strip():
                try:
                    obj = json.loads(text)
                except ValueError as exc:
                    raise PiiEvalError(f"line {n}: not valid JSON: {exc}") from None
                rows.append(parse_row(obj, n))
    return rows


def default_config(namespace_class: str = "restricted", strict: bool | None = None) -> RouterConfig:
    """The configuration the issue's acceptance is measured in: restricted, every entity, keepLocal, cloud default."""
    pii: dict[str, Any] = {"action": "keepLocal"}
    if strict is not None:
        pii["strict"] = strict
    return parse_config(
        {
            "policy": "pii-eval",
            "tiers": [
                {"name": "local", "kind": "local", "baseURL": "http://127.0.0.1:9/v1", "model": "local"},
                {"name": "cloud", "kind": "cloud", "baseURL": "http://127.0.0.1:9/v1", "model": "cloud"},
            ],
            "defaultTier": "cloud",
            "residency": {"namespaceClass": namespace_class, "pii": pii},
        }
    )


class _DefaultRoute:
    """Every request to the default tier: the residency outcome is what is measured, not the route."""

    def classify(self, text: str, input_tokens: int) -> Classification:
        return Classification(None, 0.0, None, 0.0, Reason.NO_ROUTE_MATCHED)


def _fold(text: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if unicodedata.category(ch) == "Nd":
            ch = str(unicodedata.digit(ch))
        if ch.isascii() and ch.isalnum():
            out.append(ch.lower())
    return "".join(out)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def evaluate_pii(rows: list[Row], config: RouterConfig) -> dict[str, Any]:
    """Recall per entity and disguise, false positives on value-free rows, scan and decision latency."""
    pii_cfg = config.residency.pii
    strict = config.residency.pii_strict
    cloud = {t.name for t in config.tiers if t.kind is TierKind.CLOUD}
    classifier = _DefaultRoute()
    per_entity: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])  # values, kept
    per_disguise: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    scan_us: list[float] = []
    decide_us: list[float] = []
    clean = flagged = invalid = 0
    leaks: list[dict[str, Any]] = []
    for row in rows:
        try:
            parsed = parse_body(row.raw, row.kind)
        except BadRequest as exc:
            invalid += 1
            if len(leaks) < 200:
                leaks.append({"id": row.id, "error": str(exc)})
            continue
        t0 = time.perf_counter()
        findings = scan_segments(parsed.segments, pii_cfg.entities, strict)
        scan_us.append((time.perf_counter() - t0) * 1e6)
        req = RoutingRequest(
            text=parsed.pii_text or parsed.text,
            model="auto",
            input_tokens=estimate_tokens(parsed.text),
            route_text=classification_text(parsed),
            segments=parsed.segments,
        )
        t0 = time.perf_counter()
        decision = decide(config, classifier, req)
        decide_us.append((time.perf_counter() - t0) * 1e6)
        if not row.values:
            clean += 1
            flagged += bool(findings)
            continue
        reaches_cloud = any(t in cloud for t in decision.chain)
        surviving: str = ""
        if reaches_cloud and decision.redact:
            body = redact_body(parsed, lambda s: redact(s, scan(s, pii_cfg.entities, strict)))
            surviving = _fold(json.dumps(body, ensure_ascii=False))
        for label in row.values:
            if not reaches_cloud:
                leaked = False
            elif decision.redact and label.written:
                leaked = any(len(_fold(w)) >= 4 and _fold(w) in surviving for w in label.written)
            else:
                leaked = True
            for counts, key in ((per_entity, label.entity), (per_disguise, label.disguise)):
                counts[key][0] += 1
                counts[key][1] += not leaked
            if leaked and len(leaks) < 200:
                leaks.append({"id": row.id, "entity": label.entity, "disguise": label.disguise})
    values = sum(v for v, _ in per_entity.values())
    kept = sum(k for _, k in per_entity.values())

    def table(d: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
        return {k: {"values": v, "leaked": v - c, "recall": round(c / v, 5)} for k, (v, c) in sorted(d.items())}

    return {
        "config": {
            "namespaceClass": config.residency.namespace_class.value,
            "strict": strict,
            "action": pii_cfg.action.value,
            "entities": [e.value for e in pii_cfg.entities],
        },
        "rows": len(rows),
        "invalid_rows": invalid,
        "values": values,
        "leaked": values - kept,
        "recall": round(kept / values, 5) if values else None,
        "leaks_per_10k_values": round((values - kept) * 10_000 / values, 2) if values else None,
        "per_entity": table(per_entity),
        "per_disguise": table(per_disguise),
        "rows_without_values": clean,
        "false_positives": flagged,
        "false_positive_rate": round(flagged / clean, 5) if clean else None,
        "scan_us": {"p50": round(statistics.median(scan_us), 1), "p99": round(_pct(scan_us, 0.99), 1)}
        if scan_us
        else None,
        "decide_us": {"p50": round(statistics.median(decide_us), 1), "p99": round(_pct(decide_us, 0.99), 1)}
        if decide_us
        else None,
        "leaks": leaks[:50],
    }


def format_report(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"config: {c['namespaceClass']}, strict {c['strict']}, action {c['action']}, {len(c['entities'])} entities",
        f"rows {result['rows']}, values {result['values']}, leaked {result['leaked']} "
        f"(recall {result['recall']}, {result['leaks_per_10k_values']} per 10,000 values)",
        f"rows without values {result['rows_without_values']}, false positives {result['false_positives']} "
        f"(rate {result['false_positive_rate']})",
        f"scan µs p50 {result['scan_us']['p50']} p99 {result['scan_us']['p99']}; "
        f"decide µs p50 {result['decide_us']['p50']} p99 {result['decide_us']['p99']}"
        if result["scan_us"]
        else "no rows scanned",
    ]
    for title, key in (("entity", "per_entity"), ("disguise", "per_disguise")):
        lines.append(f"{title:24s} {'values':>7s} {'leaked':>7s} {'recall':>8s}")
        for name, m in result[key].items():
            lines.append(f"{name:24s} {m['values']:>7d} {m['leaked']:>7d} {m['recall']:>8.4f}")
    return "\n".join(lines)
