"""Render docs/api.md (the CRD reference) from the generated CRDs, so the reference can never drift."""

from __future__ import annotations

import json
from typing import Any

from tiered_operator.api.schema import JSON

DECISIONS = """\
## Design decisions

- **Single source of truth.** The pydantic models in `operator/tiered_operator/api/` define the schema. The CRDs in
  `crds/` and this page are generated (`make crds`); a unit test fails when either is stale. Cross-field rules are
  `CelRule` objects: one CEL expression for the API server, one Python predicate for `model_validate`, one message
  for both, so the operator rejects exactly what the API server rejects, with the same words.
- **No floats in spec.** Money is a decimal string of US dollars (`pricing.inputUSDPerMillion: "2.50"`,
  `budget.monthlyUSD: "500"`; at most 6 decimals, never negative) — readable, exact when parsed with
  `decimal.Decimal`, and validated by a CEL `matches` rule that says what was expected. Similarity thresholds are
  decimal strings between "0" and "1" (`"0.65"`, at most 3 decimals). Latencies are integer milliseconds,
  `autoscaling.tolerance` is an integer percent. Status decimals (`localShare`, `monthToDateUSD`, `avoidedUSD`)
  are strings as well.
- **Human error messages.** Strings with a format (model source, sha256, URLs, durations, regions, DNS names,
  money) are checked with CEL `self.matches(...)` and a message instead of a bare `pattern`, so users read
  "model source must be pvc://<claim>/<path>, https://<host>/<path> or hf://<org>/<repo>/<file>" rather than a
  regular expression.
- **Downloads need a checksum.** `sha256` is required for `https://` and `hf://` model (and draft model) sources;
  optional for `pvc://`, where the volume is already trusted.
- **Quantization.** `model.quantization` is the type of the stored weights (GGUF types for `gguf`; `gptq`/`awq`
  with `bits` for `safetensors` on vLLM). `model.quantizeOnLoad` is the GGUF type the llama.cpp server converts to at
  start (cached); the effective type is shown in `status.quantization` and the QUANT column. `llamacpp` requires
  `gguf`.
- **Replicas at `spec.replicas`** (not under `local`) because the scale subresource needs a fixed path; it is
  ignored for cloud tiers. `status.selector` carries the pods' label selector (`tiered.dev/tier=<name>`), and
  `status.readyDisplay` the "ready/desired" text shown in the READY column. MODEL and QUANT columns read status
  (`status.model`, `status.quantization`) because a printer column cannot choose between `local` and `cloud`.
- **`fallback.triggers`, not `fallback.on`.** YAML 1.1 (used by kubectl's decoder) reads a bare `on:` key as the
  boolean `true`, which would turn the field name into "true"; `triggers: [5xx, timeout, connect]` avoids that trap.
- **Lists.** `tiers` is an ordered set (`x-kubernetes-list-type: set`: order is the fallback order, duplicates are
  rejected); `routes` is a map list keyed by `name`, and a CEL rule reports duplicate names in plain words;
  conditions are a map list keyed by `type`.
- **Status is strict.** Unknown status fields are pruned; the operator writes only fields declared here (kopf's own
  progress must go to annotations, not status).
- **PII entity names** are UPPER_SNAKE in the API (`EMAIL`, `CREDIT_CARD`, ...); the operator maps them to the
  router's config names when it renders the router ConfigMap (reconcile/router_config.py).
- **API key.** `cloud.apiKeySecretRef` is required (`key` defaults to `api-key`); the Secret lives in the tier's
  namespace.
"""


def _type_of(schema: JSON) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    type_ = schema.get("type", "any")
    if type_ == "array":
        return f"[]{_type_of(schema.get('items', {}))}"
    if type_ == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"map[string]{_type_of(schema['additionalProperties'])}"
    if schema.get("format"):
        return f"{type_} ({schema['format']})"
    return str(type_)


def _constraints(schema: JSON) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    items = schema.get("items")
    if isinstance(items, dict) and "enum" in items:
        parts.append("items: " + ", ".join(f"`{v}`" for v in items["enum"]))
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ):
        if key in schema:
            parts.append(f"{label} {schema[key]}")
    if "pattern" in schema:
        parts.append(f"pattern `{schema['pattern']}`")
    if schema.get("x-kubernetes-list-type") == "set":
        parts.append("unique")
    for rule in schema.get("x-kubernetes-validations", []):
        if rule["rule"].startswith("self.matches(") or rule["rule"] == "isCIDR(self)":
            parts.append(rule["message"])
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(schema: JSON, path: str, out: list[str], rules: list[tuple[str, JSON]]) -> None:
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        child = f"{path}.{name}"
        default = json.dumps(prop["default"]) if "default" in prop else ""
        out.append(
            f"| `{child}` | {_type_of(prop)} | {'yes' if name in required else ''} | "
            f"{_cell(f'`{default}`') if default else ''} | {_cell(prop.get('description', ''))} | "
            f"{_cell(_constraints(prop))} |"
        )
        _collect(prop, child, out, rules)


def _collect(prop: JSON, path: str, out: list[str], rules: list[tuple[str, JSON]]) -> None:
    for rule in prop.get("x-kubernetes-validations", []):
        if not (rule["rule"].startswith("self.matches(") or rule["rule"] == "isCIDR(self)"):
            rules.append((path, rule))
    if prop.get("type") == "object" and "properties" in prop:
        _rows(prop, path, out, rules)
    items = prop.get("items")
    if isinstance(items, dict) and items.get("type") == "object":
        for rule in items.get("x-kubernetes-validations", []):
            rules.append((f"{path}[]", rule))
        _rows(items, f"{path}[]", out, rules)


def _kind_section(crd: JSON) -> list[str]:
    spec = crd["spec"]
    version = spec["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    names = spec["names"]
    lines = [
        f"## {names['kind']}",
        "",
        root.get("description", ""),
        "",
        f"- apiVersion: `{spec['group']}/{version['name']}`, namespaced",
        f"- short name: `{names['shortNames'][0]}`, category: `{names['categories'][0]}`",
        f"- subresources: {', '.join(sorted(version['subresources']))}",
    ]
    scale = version["subresources"].get("scale")
    if scale:
        lines.append(
            f"- scale: `{scale['specReplicasPath']}` ↔ `{scale['statusReplicasPath']}`, "
            f"selector `{scale['labelSelectorPath']}`"
        )
    lines += ["", "Printer columns (`kubectl get`; priority 1 only with `-o wide`):", ""]
    lines += ["| Column | JSONPath | Type | Priority |", "|---|---|---|---|"]
    for col in version["additionalPrinterColumns"]:
        lines.append(
            f"| {col['name'].upper()} | `{_cell(col['jsonPath'])}` | {col['type']} | {col.get('priority', 0)} |"
        )
    for part in ("spec", "status"):
        sub = root["properties"][part]
        lines += [
            "",
            f"### {names['kind']}.{part}",
            "",
            sub.get("description", ""),
            "",
            "| Field | Type | Required | Default | Description | Constraints |",
            "|---|---|---|---|---|---|",
        ]
        rules: list[tuple[str, JSON]] = []
        _collect(sub, part, lines, rules)
        if rules:
            lines += [
                "",
                f"Cross-field rules on {names['kind']}.{part} (CEL, enforced by the API server and "
                "by the pydantic models):",
                "",
            ]
            lines += ["| On | Message | CEL |", "|---|---|---|"]
            for where, rule in rules:
                lines.append(f"| `{where}` | {_cell(rule['message'])} | `{_cell(rule['rule'])}` |")
    lines.append("")
    return lines


def render_api_reference(crds: dict[str, Any]) -> str:
    """docs/api.md: decisions, then one section per kind with every field, default, constraint and rule."""
    lines = [
        "<!-- Generated by `python -m tiered_operator.api.crdgen` from operator/tiered_operator/api/. "
        "DO NOT EDIT; run `make crds`. -->",
        "",
        "# tiered.dev/v1alpha1 API reference",
        "",
        "Two namespaced kinds: **InferenceTier** (`itier`) and **RoutingPolicy** (`rpol`), both in the `tiered` "
        "category (`kubectl get tiered`). Samples: `manifests/samples/`.",
        "",
        DECISIONS,
    ]
    for crd in crds.values():
        lines += _kind_section(crd)
    return "\n".join(lines).rstrip("\n") + "\n"
