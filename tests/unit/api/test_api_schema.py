"""The generated CRDs are structural, documented, and carry every cross-field rule the models enforce."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from tiered_operator import labels
from tiered_operator.api import ApiModel, CelRule, InferenceTierSpec, RoutingPolicySpec
from tiered_operator.api.common import matching
from tiered_operator.api.crdgen import build_crd
from tiered_operator.api.schema import iter_properties, structural_problems, structural_schema

KINDS = ("InferenceTier", "RoutingPolicy")


def _root(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _prop(kind: str, dotted: str) -> dict[str, Any]:
    node = _root(kind)
    for part in dotted.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


# --- post-processing, on small synthetic models --------------------------------------------------------------


class _Inner(BaseModel):
    """Inner docs."""

    n: int = Field(gt=0, description="n")


class _Outer(BaseModel):
    """Outer docs."""

    inner: _Inner | None = Field(default=None, description="Field docs win over the type's docstring.")
    tags: list[str] = Field(default_factory=list, description="tags", json_schema_extra={"uniqueItems": True})
    qty: int | str = Field(description="quantity")
    fixed: str = Field(default="x", description="fixed", json_schema_extra={"const": "x"})
    opt: Annotated[str, Field(max_length=3)] | None = Field(default=None, description="opt")


def test_refs_are_inlined_and_field_description_overrides_the_type_docstring() -> None:
    out = structural_schema(_Outer.model_json_schema())
    inner = out["properties"]["inner"]
    assert inner["type"] == "object"
    assert inner["description"] == "Field docs win over the type's docstring."
    assert "$defs" not in out and "$ref" not in str(out)


def test_optional_becomes_the_plain_type_without_null_default() -> None:
    out = structural_schema(_Outer.model_json_schema())
    opt = out["properties"]["opt"]
    assert opt == {"type": "string", "description": "opt", "maxLength": 3}


def test_titles_and_closed_objects_are_dropped() -> None:
    out = structural_schema(_Outer.model_json_schema())
    text = str(out)
    assert "'title'" not in text
    assert "additionalProperties" not in text


def test_exclusive_minimum_becomes_minimum_plus_boolean() -> None:
    n = structural_schema(_Outer.model_json_schema())["properties"]["inner"]["properties"]["n"]
    assert (n["minimum"], n["exclusiveMinimum"]) == (0, True)


def test_unique_items_becomes_a_set_list() -> None:
    tags = structural_schema(_Outer.model_json_schema())["properties"]["tags"]
    assert "uniqueItems" not in tags
    assert tags["x-kubernetes-list-type"] == "set"


def test_int_or_string_idiom() -> None:
    qty = structural_schema(_Outer.model_json_schema())["properties"]["qty"]
    assert qty["x-kubernetes-int-or-string"] is True
    assert qty["anyOf"] == [{"type": "integer"}, {"type": "string"}]


def test_const_becomes_a_single_value_enum() -> None:
    fixed = structural_schema(_Outer.model_json_schema())["properties"]["fixed"]
    assert fixed["enum"] == ["x"] and fixed["type"] == "string"


def test_recursive_models_are_refused() -> None:
    class Node(BaseModel):
        child: Node | None = None

    with pytest.raises(ValueError, match="recursive model"):
        structural_schema(Node.model_json_schema())


def test_structural_check_finds_untyped_nodes() -> None:
    assert structural_problems({"type": "object", "properties": {"x": {"description": "no type"}}}) == [
        "<root>.x: no type"
    ]


# --- the real CRDs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_crd_schema_is_structural(kind: str) -> None:
    assert structural_problems(_root(kind)) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_property_has_a_description(kind: str) -> None:
    undocumented = [path for path, prop in iter_properties(_root(kind)) if not prop.get("description", "").strip()]
    assert undocumented == ["metadata"]  # the API server forbids a description there and documents it itself


@pytest.mark.parametrize("kind", KINDS)
def test_no_floats_in_spec(kind: str) -> None:
    spec = _root(kind)["properties"]["spec"]
    floats = [path for path, prop in iter_properties(spec) if prop.get("type") == "number"]
    assert floats == []


def _all_rule_classes(model: type[BaseModel]) -> set[type[ApiModel]]:
    found: set[type[ApiModel]] = set()
    stack: list[Any] = [model]
    while stack:
        cls = stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, ApiModel)) or cls in found:
            continue
        found.add(cls)
        for field in cls.model_fields.values():
            stack.extend(_types_in(field.annotation))
    return found


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if args:
        return [t for a in args for t in _types_in(a)]
    return [annotation]


@pytest.mark.parametrize(
    ("kind", "spec_model"), [("InferenceTier", InferenceTierSpec), ("RoutingPolicy", RoutingPolicySpec)]
)
def test_every_model_rule_is_in_the_crd(kind: str, spec_model: type[BaseModel]) -> None:
    crd_rules = [
        (v["rule"], v["message"])
        for _, prop in [("spec", _root(kind)["properties"]["spec"]), *iter_properties(_root(kind))]
        for container in (prop, prop.get("items") or {})
        for v in container.get("x-kubernetes-validations", [])
    ]
    model_rules: list[CelRule] = [r for cls in _all_rule_classes(spec_model) for r in cls.cel_rules]
    assert model_rules, "expected cross-field rules"
    for rule in model_rules:
        assert (rule.rule, rule.message) in crd_rules


def test_inference_tier_cross_field_rules_include_the_key_invariants() -> None:
    spec_rules = {v["message"] for v in _prop("InferenceTier", "spec")["x-kubernetes-validations"]}
    assert any("exactly one of local or cloud" in m for m in spec_rules)
    auto = _prop("InferenceTier", "spec.autoscaling")["x-kubernetes-validations"]
    assert auto[0]["rule"] == "self.minReplicas <= self.maxReplicas"


def test_api_key_secret_ref_is_required_for_cloud_tiers() -> None:
    assert "apiKeySecretRef" in _prop("InferenceTier", "spec.cloud")["required"]


def test_enums_bounds_and_defaults() -> None:
    assert _prop("InferenceTier", "spec.backend")["enum"] == ["local", "cloud"]
    assert _prop("InferenceTier", "spec.local.runtime")["default"] == "llamacpp"
    assert "Q4_K_M" in _prop("InferenceTier", "spec.local.model.quantization")["enum"]
    assert _prop("InferenceTier", "spec.slo.metric")["enum"] == ["e2e", "ttft"]
    tolerance = _prop("InferenceTier", "spec.autoscaling.tolerance")
    assert (tolerance["type"], tolerance["minimum"], tolerance["maximum"]) == ("integer", 0, 100)
    assert _prop("RoutingPolicy", "spec.residency.pii.action")["enum"] == ["keepLocal", "redact", "reject"]
    assert _prop("RoutingPolicy", "spec.fallback.triggers.[]")["enum"] == ["5xx", "timeout", "connect"]
    assert _prop("RoutingPolicy", "spec.tiers")["x-kubernetes-list-type"] == "set"
    assert _prop("RoutingPolicy", "spec.routes")["x-kubernetes-list-map-keys"] == ["name"]


def test_resources_are_int_or_string_quantities() -> None:
    requests = _prop("InferenceTier", "spec.local.resources.requests")["additionalProperties"]
    assert requests["x-kubernetes-int-or-string"] is True
    assert "pattern" in requests


def test_inference_tier_crd_names_subresources_and_columns() -> None:
    crd = build_crd("InferenceTier")
    assert crd["metadata"]["name"] == "inferencetiers.tiered.dev"
    names = crd["spec"]["names"]
    assert names["shortNames"] == [labels.SHORT_NAME_INFERENCE_TIER]
    assert names["categories"] == [labels.CATEGORY]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    shown = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == ["BACKEND", "MODEL", "QUANT", "READY", "P95", "SLO", "AGE"]


def test_routing_policy_crd_names_subresources_and_columns() -> None:
    crd = build_crd("RoutingPolicy")
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == [labels.SHORT_NAME_ROUTING_POLICY]
    assert version["subresources"] == {"status": {}}
    shown = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == ["DEFAULT", "READY", "LOCAL-SHARE", "SPEND", "AGE"]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_declared_fields(kind: str) -> None:
    version = build_crd(kind)["spec"]["versions"][0]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if path.startswith(".metadata"):
            continue
        plain = path.split("[")[0].lstrip(".")
        _prop(kind, plain)


def test_status_conditions_follow_api_conventions() -> None:
    for kind in KINDS:
        conditions = _prop(kind, "status.conditions")
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert set(item["required"]) == {"type", "status", "reason", "lastTransitionTime"}
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert item["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_checked_string_patterns_must_be_cel_safe_and_anchored() -> None:
    with pytest.raises(ValueError, match="anchored"):
        matching("[a-z]+", "m", 10)
    with pytest.raises(ValueError, match="backslashes"):
        matching("^a\\.b$", "m", 10)
    ok = matching("^[a-z]+$", "lowercase please", 10)
    assert ok.cel == "self.matches('^[a-z]+$')"
    assert ok.check("abc") and not ok.check("abc1")


def test_checked_string_carries_its_message_to_both_sides() -> None:
    class _M(BaseModel):
        v: Annotated[str, matching("^[a-z]+$", "lowercase please", 10)] = Field(description="v")

    schema = structural_schema(_M.model_json_schema())["properties"]["v"]
    assert schema["x-kubernetes-validations"] == [{"rule": "self.matches('^[a-z]+$')", "message": "lowercase please"}]
    assert schema["maxLength"] == 10
    with pytest.raises(ValueError, match="lowercase please"):
        _M(v="ABC")
