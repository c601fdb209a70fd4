"""response_format → grammar + validator: what is accepted is what the grammar enforces; the rest is a 400 that
names the keyword and where it is (tiered_slm/structured.py)."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from tiered_slm.structured import (
    FormatCache,
    OutputInvalid,
    SchemaInvalid,
    SchemaNotSupported,
    compile_format,
)


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None


class Person(BaseModel):
    """What a client would write with pydantic: $defs/$ref, anyOf with null, enums, titles, defaults."""

    name: str = Field(description="Full name")
    age: int
    role: Literal["admin", "user", "guest"] = "user"
    tags: list[str] = Field(default_factory=list, max_length=5)
    address: Address
    previous: list[Address] = []


def schema_format(schema: dict[str, Any], name: str = "x") -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


SUPPORTED: dict[str, dict[str, Any]] = {
    "pydantic model": Person.model_json_schema(),
    "closed object": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}},
                      "required": ["a", "b"], "additionalProperties": False},
    "typed map": {"type": "object", "additionalProperties": {"type": "number"}},
    "bounded array": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 8},
                      "minItems": 1, "maxItems": 3},
    "tuple": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]},
    "enum and const": {"type": "object", "properties": {"k": {"enum": ["x", 1, None]}, "c": {"const": "fixed"}},
                       "required": ["k", "c"]},
    "formats": {"type": "object", "properties": {"d": {"type": "string", "format": "date"},
                                                 "t": {"type": "string", "format": "date-time"},
                                                 "u": {"type": "string", "format": "uuid"}}},
    "pattern": {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
                "required": ["code"]},
    "pattern with escapes": {"type": "string", "pattern": r"^[a-z\.]+\.[a-z]{2,3}\/v[0-9]\-x\(1\)$"},
    "recursive": {"$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "required": ["v"]}}, "$ref": "#/$defs/node"},
    "annotations only": {"description": "anything", "title": "T", "examples": [{}]},
}


@pytest.mark.parametrize("schema", SUPPORTED.values(), ids=SUPPORTED.keys())
def test_schemas_the_grammar_enforces_compile_to_a_grammar_and_a_validator(schema: dict[str, Any]) -> None:
    compiled = compile_format(schema_format(schema))
    assert compiled is not None and compiled.kind == "json_schema" and compiled.name == "x"
    assert "root ::=" in compiled.grammar
    assert compiled.validator is not None


UNSUPPORTED: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}, "minimum", "/properties/age"),
    ({"type": "number", "maximum": 3}, "maximum", "/"),
    ({"type": "number", "exclusiveMinimum": 3}, "exclusiveMinimum", "/"),
    ({"type": "integer", "multipleOf": 5}, "multipleOf", "/"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems", "/"),
    ({"type": "array", "items": {"type": "integer"}, "contains": {"const": 1}}, "contains", "/"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "minProperties": 1}, "minProperties", "/"),
    ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties", "/"),
    ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames", "/"),
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf", "/"),
    ({"allOf": [{"type": "object"}]}, "allOf", "/"),
    ({"type": "object", "properties": {"x": {"not": {"type": "null"}}}}, "not", "/properties/x"),
    ({"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}, "if", "/"),
    ({"type": "string", "format": "email"}, "format", "/"),
    ({"type": ["string", "null"], "maxLength": 4}, "maxLength", "/"),
    ({"$defs": {"s": {"type": "string"}}, "type": "object",
      "properties": {"s": {"$ref": "#/$defs/s", "minLength": 2}}}, "minLength", "/properties/s"),
    ({"type": "object", "anyOf": [{"properties": {"a": {"type": "string"}}}]}, "type", "/"),
    ({"type": "string", "pattern": "[a-z]+"}, "pattern", "/"),
    ({"type": "string", "pattern": "^a$", "maxLength": 3}, "maxLength", "/"),
    ({"type": "string", "pattern": r"^\d{3}$"}, "pattern", "/"),
    ({"type": "string", "pattern": '^a"b$'}, "pattern", "/"),
    ({"type": "string", "pattern": r"^a\\b$"}, "pattern", "/"),
    ({"type": "string", "pattern": "^(?:ab)+$"}, "pattern", "/"),
    ({"type": "array", "items": {}}, "items", "/"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref", "/properties/a"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}, "required", "/"),
    ({"type": "array", "prefixItems": [{"type": "string"}], "minItems": 1}, "minItems", "/"),
    ({"type": "object", "properties": {"a": True}}, "true", "/properties/a"),
    ({"type": "object", "required": ["a"]}, "required", "/"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "dependentRequired": {"a": ["b"]}},
     "dependentRequired", "/"),
    ({"type": "array", "items": {"type": "string"}, "unevaluatedItems": False}, "unevaluatedItems", "/"),
    ({"minLength": 3}, "minLength", "/"),
    ({"$defs": {"n": {"type": "integer", "minimum": 1}}, "type": "object",
      "properties": {"n": {"$ref": "#/$defs/n"}}}, "minimum", "/$defs/n"),
]


@pytest.mark.parametrize(("schema", "keyword", "where"), UNSUPPORTED, ids=[f"{k}@{w}" for _, k, w in UNSUPPORTED])
def test_a_keyword_the_grammar_would_ignore_is_refused_by_name_and_place(schema: dict[str, Any], keyword: str,
                                                                       where: str) -> None:
    with pytest.raises(SchemaNotSupported) as raised:
        compile_format(schema_format(schema))
    assert raised.value.keyword == keyword
    assert f"{keyword!r} at {where} " in str(raised.value)


@pytest.mark.parametrize("response_format", [
    {"type": "xml"},
    {"type": "json_schema"},
    {"type": "json_schema", "json_schema": {"name": "x"}},
    {"type": "json_schema", "json_schema": {"schema": {"type": "object", "required": "a"}}},
    {"type": "json_schema", "json_schema": {"schema": {"type": "strings"}}},
    {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/missing"}}},
])
def test_malformed_response_formats_and_invalid_schemas_are_refused(response_format: dict[str, Any]) -> None:
    with pytest.raises(SchemaInvalid):
        compile_format(response_format)


def test_text_is_no_format_and_json_object_needs_an_object() -> None:
    assert compile_format({"type": "text"}) is None
    compiled = compile_format({"type": "json_object"})
    assert compiled is not None and compiled.validator is None
    assert compiled.validate(' {"a": [1, 2]} ') == {"a": [1, 2]}
    for text, why in (("[1, 2]", "not an object"), ('{"a": 1', "not valid JSON"), ("", "not valid JSON")):
        with pytest.raises(OutputInvalid, match=why):
            compiled.validate(text)


def test_validation_names_the_first_failing_place() -> None:
    compiled = compile_format(schema_format(Person.model_json_schema()))
    assert compiled is not None
    good = {"name": "Ann", "age": 3, "address": {"street": "Main St 1", "city": "Oslo"}}
    assert compiled.validate(__import__("json").dumps(good)) == good
    with pytest.raises(OutputInvalid, match=r"at /address: 'city' is a required property"):
        compiled.validate('{"name": "Ann", "age": 3, "address": {"street": "x"}}')
    with pytest.raises(OutputInvalid, match=r"at /role: 'root' is not one of"):
        compiled.validate('{"name": "Ann", "age": 3, "role": "root", "address": {"street": "x", "city": "y"}}')


def test_annotations_are_stripped_before_the_grammar_but_kept_for_validation() -> None:
    schema = {"type": "object", "title": "T", "description": "d",
              "properties": {"title": {"type": "string", "description": "a property named title"},
                             "default": {"type": "integer", "default": 3}},
              "required": ["title", "default"]}
    compiled = compile_format(schema_format(schema))
    assert compiled is not None
    assert '"\\"title\\""' in compiled.grammar and '"\\"default\\""' in compiled.grammar
    assert "description" not in compiled.grammar
    assert compiled.schema == schema


def test_the_cache_compiles_a_schema_once_and_asks_llama_cpp_about_new_grammars() -> None:
    cache = FormatCache(size=2)
    asked: list[str] = []

    def grammar_error(grammar: str) -> str | None:
        asked.append(grammar)
        return None

    first = cache.get(schema_format({"type": "object", "properties": {"a": {"type": "string"}}}), grammar_error)
    again = cache.get(schema_format({"properties": {"a": {"type": "string"}}, "type": "object"}), grammar_error)
    assert first is again and len(asked) == 1
    with pytest.raises(SchemaNotSupported, match="could not parse"):
        cache.get({"type": "json_object"}, lambda _grammar: "could not parse")


def test_a_deeply_nested_schema_is_a_clear_error_not_a_crash() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(SchemaInvalid, match="nested too deeply"):
        compile_format(schema_format(schema))


def test_strings_in_the_grammar_exclude_what_json_forbids_raw() -> None:
    compiled = compile_format(schema_format({"type": "object", "properties": {
        "s": {"type": "string"}, "p": {"type": "string", "pattern": "^[^a-z].$"}}, "required": ["s", "p"]}))
    assert compiled is not None
    rules = dict(line.split(" ::= ", 1) for line in compiled.grammar.splitlines())
    assert rules["char"].startswith('[^"\\\\\\x7F\\x00-\\x1F]')
    assert rules["dot"] == '[^"\\\\\\x7F\\x00-\\x1F]'
    assert '[^"\\\\\\x7F\\x00-\\x1Fa-z]' in rules["p"]
