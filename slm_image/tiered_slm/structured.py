"""Structured outputs: OpenAI's ``response_format`` turned into a llama.cpp grammar, and the answer validated.

``{"type": "json_object"}`` and ``{"type": "json_schema", "json_schema": {"schema": ...}}`` are decoded under a
GBNF grammar, so the model can only produce text of the schema's shape. The grammar comes from llama-cpp-python's
JSON-schema converter (``llama_cpp.llama_grammar.SchemaConverter``); the answer is then parsed and validated with
the ``jsonschema`` library before anything is returned.

The converter enforces only part of JSON Schema and silently ignores the rest (``minimum``, ``uniqueItems``,
``oneOf``'s exclusivity, most ``format`` values, keywords next to a ``$ref`` or ``anyOf``, ...). A schema that uses
one of those would let the grammar produce answers the schema rejects, so :func:`unsupported_keywords` walks the
schema along the converter's own dispatch and the request is refused with a 400 naming the keyword and where it
is. What is accepted here is exactly what the grammar enforces, plus annotations (``title``, ``description``,
``default``, ``examples``, ...), which constrain nothing and are stripped before conversion.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

ANNOTATIONS = frozenset({
    "title", "description", "$comment", "examples", "default", "deprecated", "readOnly", "writeOnly",
    "contentMediaType", "contentEncoding", "$anchor",
})  # fmt: skip
"""Keywords that describe a value without constraining it (JSON Schema 2020-12's meta-data and content
vocabularies): never a reason to refuse a schema."""
DEFINITIONS = ("$defs", "definitions")
PRIMITIVES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
GRAMMAR_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})
"""String formats the converter turns into grammar rules; any other format would be ignored by it."""
MAX_SCHEMA_BYTES = 64 * 1024
JSON_CHAR_RULE = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
"""One character of a JSON string: what the converter's own `char` rule misses is that JSON forbids raw control
characters (a random-weight model sampled under the grammar wrote one; llama.cpp's C++ converter has this rule)."""
JSON_EXCLUDED = r'"\\\x7F\x00-\x1F'
"""Added to every negated character class (and to `.`) a pattern turns into: characters that cannot appear raw
inside a JSON string."""
PATTERN_ESCAPABLE = frozenset(".^$*+?()[]{}|-/")

_UNENFORCED_HINTS: dict[str, str] = {
    "oneOf": "the grammar cannot make alternatives exclusive; use anyOf",
    "allOf": "the grammar cannot intersect subschemas; merge them into one object schema",
    "not": "the grammar cannot exclude a subschema",
    "if": "conditional subschemas are not enforced by the grammar",
    "then": "conditional subschemas are not enforced by the grammar",
    "else": "conditional subschemas are not enforced by the grammar",
}


class SchemaNotSupported(ValueError):
    """The schema asks for something the grammar cannot enforce; ``keyword`` and ``path`` say what and where."""

    def __init__(self, keyword: str, path: str, reason: str) -> None:
        where = path or "/"
        super().__init__(f"response_format schema keyword {keyword!r} at {where} is not supported by the local "
                         f"tier's grammar-constrained decoding: {reason}")
        self.keyword = keyword
        self.path = path


class SchemaInvalid(ValueError):
    """``response_format`` is malformed or its schema is not a valid JSON Schema."""


@dataclass(frozen=True)
class OutputFormat:
    """A compiled ``response_format``: the GBNF grammar to decode under and the schema to validate against."""

    kind: Literal["json_object", "json_schema"]
    name: str | None
    grammar: str
    schema: dict[str, Any] | None
    validator: Any  # a jsonschema validator instance, None for json_object

    def validate(self, text: str) -> Any:
        """The parsed answer, or OutputInvalid saying what is wrong with it."""
        try:
            value = json.loads(text)
        except ValueError as error:
            raise OutputInvalid(f"the answer is not valid JSON ({error})") from None
        if self.validator is None:
            if not isinstance(value, dict):
                raise OutputInvalid(f"the answer is a JSON {type(value).__name__}, not an object")
            return value
        errors = sorted(self.validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if errors:
            first = errors[0]
            where = "/" + "/".join(str(p) for p in first.absolute_path)
            raise OutputInvalid(f"the answer does not match the schema at {where}: {first.message}")
        return value


class OutputInvalid(ValueError):
    """Generated text that does not parse or validate."""


# ---------------------------------------------------------------------------------------------------------------
# what the converter enforces
# ---------------------------------------------------------------------------------------------------------------


def _pointer(path: str, *parts: object) -> str:
    return path + "".join(f"/{part}" for part in parts)


def _only(schema: dict[str, Any], path: str, allowed: set[str], reason: str) -> None:
    for keyword in schema:
        if keyword not in allowed and keyword not in ANNOTATIONS and keyword not in DEFINITIONS and not (
                path == "" and keyword in ("$schema", "$id")):
            raise SchemaNotSupported(keyword, path, reason)


class _Walker:
    """Follows ``SchemaConverter.visit``'s branches; raises SchemaNotSupported for anything a branch ignores."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.refs_seen: set[str] = set()

    def resolve(self, ref: str, path: str) -> tuple[Any, str]:
        if not ref.startswith("#/"):
            raise SchemaNotSupported("$ref", path, f"only local references (#/$defs/...) are supported, got {ref!r}")
        target: Any = self.root
        for part in ref[2:].split("/"):
            if "~" in part or "%" in part:
                raise SchemaNotSupported("$ref", path, f"escaped JSON pointers are not supported: {ref!r}")
            if not isinstance(target, dict) or part not in target:
                raise SchemaInvalid(f"$ref {ref!r} at {path or '/'} points to nothing")
            target = target[part]
        return target, ref

    def visit(self, schema: Any, path: str) -> None:
        if not isinstance(schema, dict):
            raise SchemaNotSupported("true" if schema is True else "false" if schema is False else "schema", path,
                                     "write an object schema with a type here")
        for keyword, hint in _UNENFORCED_HINTS.items():
            if keyword in schema:
                raise SchemaNotSupported(keyword, path, hint)
        if "$id" in schema and path != "":
            raise SchemaNotSupported("$id", path, "nested $id changes reference resolution")
        kind = schema.get("type")
        if "$ref" in schema:
            _only(schema, path, {"$ref"}, "keywords next to $ref are ignored by the grammar")
            ref = schema["$ref"]
            target, key = self.resolve(ref, path)
            if key not in self.refs_seen:
                self.refs_seen.add(key)
                self.visit(target, ref[1:])
        elif "anyOf" in schema:
            _only(schema, path, {"anyOf"}, "keywords next to anyOf are ignored by the grammar; move them into "
                                           "each alternative")
            alternatives = schema["anyOf"]
            if not isinstance(alternatives, list) or not alternatives:
                raise SchemaInvalid(f"anyOf at {path or '/'} must be a non-empty array")
            for index, alternative in enumerate(alternatives):
                self.visit(alternative, _pointer(path, "anyOf", index))
        elif isinstance(kind, list):
            _only(schema, path, {"type"}, "with a list of types the grammar ignores every other keyword; use anyOf "
                                          "with one schema per type")
            for name in kind:
                self._known_type(name, path)
        elif "const" in schema or "enum" in schema:
            _only(schema, path, {"type", "const", "enum"} - ({"enum"} if "const" in schema else set()),
                  "keywords next to const/enum are ignored by the grammar")
        elif kind in (None, "object") and ("properties" in schema or (
                "additionalProperties" in schema and schema["additionalProperties"] is not True)):
            self._object(schema, path)
        elif kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
            self._array(schema, path)
        elif kind in (None, "string") and "pattern" in schema:
            _only(schema, path, {"type", "pattern"}, "next to pattern the grammar ignores other string keywords")
            pattern = schema["pattern"]
            if not (isinstance(pattern, str) and pattern.startswith("^") and pattern.endswith("$")):
                raise SchemaNotSupported("pattern", path, "the grammar needs a pattern anchored with ^ and $")
            try:
                _grammar({"type": "string", "pattern": "^" + _rewrite_pattern(pattern[1:-1], path) + "$"})
            except SchemaNotSupported as error:
                raise SchemaNotSupported("pattern", path, str(error).rpartition(": ")[2]) from None
        elif kind in (None, "string") and "format" in schema:
            fmt = schema["format"]
            if fmt not in GRAMMAR_FORMATS:
                raise SchemaNotSupported("format", path, f"format {fmt!r} is not enforced by the grammar (supported: "
                                                         f"{', '.join(sorted(GRAMMAR_FORMATS))})")
            _only(schema, path, {"type", "format"}, "next to format the grammar ignores other string keywords")
        elif kind == "string":
            _only(schema, path, {"type", "minLength", "maxLength"}, "not enforced by the grammar")
        elif kind == "object" or not (set(schema) - ANNOTATIONS - {*DEFINITIONS, "$schema", "$id"}):
            _only(schema, path, {"type", "additionalProperties"}, "not enforced by the grammar")
        elif kind is None:
            keyword = sorted(set(schema) - ANNOTATIONS)[0]
            raise SchemaNotSupported(keyword, path, "a schema without a type or a structure keyword; add \"type\"")
        else:
            self._known_type(kind, path)
            _only(schema, path, {"type"}, "not enforced by the grammar")

    def _known_type(self, name: Any, path: str) -> None:
        if name not in PRIMITIVES:
            raise SchemaInvalid(f"unknown type {name!r} at {path or '/'}")

    def _object(self, schema: dict[str, Any], path: str) -> None:
        _only(schema, path, {"type", "properties", "required", "additionalProperties"},
              "not enforced by the grammar")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise SchemaInvalid(f"properties at {path or '/'} must be an object")
        for name in schema.get("required", []):
            if name not in properties:
                raise SchemaNotSupported("required", path, f"required property {name!r} is not listed in "
                                                           "properties, so the grammar never writes it")
        for name, sub in properties.items():
            self.visit(sub, _pointer(path, "properties", name))
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            self.visit(extra, _pointer(path, "additionalProperties"))

    def _array(self, schema: dict[str, Any], path: str) -> None:
        items = schema.get("items")
        if items == {}:
            raise SchemaNotSupported("items", path, "an empty items schema (any value) is not supported; give the "
                                                    "items a type")
        if isinstance(items, dict):
            _only(schema, path, {"type", "items", "minItems", "maxItems"}, "not enforced by the grammar")
            self.visit(items, _pointer(path, "items"))
            return
        tuple_items = items if isinstance(items, list) else schema.get("prefixItems")
        keyword = "items" if isinstance(items, list) else "prefixItems"
        if not isinstance(tuple_items, list):
            raise SchemaNotSupported("items", path, "items must be a schema (or prefixItems a list of schemas)")
        _only(schema, path, {"type", keyword}, "with a tuple the grammar writes exactly its items and ignores "
                                               "other array keywords")
        for index, sub in enumerate(tuple_items):
            self.visit(sub, _pointer(path, keyword, index))


def _rewrite_pattern(body: str, path: str) -> str:
    """A pattern body (between ^ and $) in the regular-expression subset the converter translates correctly into
    a JSON string's grammar, with escapes it would copy into GBNF unparsed written as classes (``\\.`` becomes
    ``[.]``). Refused: quotes, control characters and escaped backslashes (a JSON string cannot hold them raw),
    shorthand classes (``\\d``, ``\\w``, ...) and ``(?...)`` groups."""
    out: list[str] = []
    index, in_class = 0, False
    while index < len(body):
        char = body[index]
        if char == '"' or ord(char) < 0x20 or char == "\x7f":
            raise SchemaNotSupported("pattern", path, f"the pattern contains {char!r}, which a JSON string cannot "
                                                      "hold unescaped")
        if char == "\\":
            following = body[index + 1:index + 2]
            if in_class and following in "[]" and following:
                out.append(char + following)
            elif in_class and following in "./$" and following:
                out.append(following)
            elif not in_class and following in "[]()|{}*+?" and following:
                out.append(char + following)
            elif not in_class and following in ".$/-" and following:
                out.append(f"[{following}]")
            else:
                raise SchemaNotSupported("pattern", path, f"the escape \\{following} is not translated by the grammar "
                                                          "compiler; write classes out (e.g. [0-9] for \\d)")
            index += 2
            continue
        if not in_class and body.startswith("(?", index):
            raise SchemaNotSupported("pattern", path, "(?...) groups are not supported by the grammar compiler")
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        index += 1
    return "".join(out)


def unsupported_keywords(schema: dict[str, Any]) -> None:
    """Raise SchemaNotSupported for the first keyword the grammar would not enforce (None when all are)."""
    try:
        _Walker(schema).visit(schema, "")
    except RecursionError:
        raise SchemaInvalid("response_format schema is nested too deeply") from None


def _strip_annotations(schema: Any, *, at_schema: bool = True) -> Any:
    """A copy without annotation keywords (which the converter mistakes for structure) in schema positions."""
    if isinstance(schema, list):
        return [_strip_annotations(item, at_schema=at_schema) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if not at_schema:  # a name -> schema map (properties, $defs)
        return {name: _strip_annotations(sub) for name, sub in schema.items()}
    out: dict[str, Any] = {}
    for keyword, value in schema.items():
        if keyword in ANNOTATIONS or keyword in ("$schema", "$id"):
            continue
        if keyword in ("properties", *DEFINITIONS):
            out[keyword] = _strip_annotations(value, at_schema=False)
        elif keyword in ("const", "enum", "required"):
            out[keyword] = value
        elif keyword == "pattern" and isinstance(value, str) and len(value) >= 2:
            out[keyword] = "^" + _rewrite_pattern(value[1:-1], "") + "$"
        else:
            out[keyword] = _strip_annotations(value)
    return out


# ---------------------------------------------------------------------------------------------------------------
# compiling response_format
# ---------------------------------------------------------------------------------------------------------------


def _json_safe(grammar: str) -> str:
    """The converter's grammar with JSON's string rules: the `char` and `dot` rules replaced, and the characters
    JSON forbids raw added to every negated class outside literals."""
    out = []
    for line in grammar.splitlines():
        name, sep, body = line.partition(" ::= ")
        if name == "char":
            body = JSON_CHAR_RULE
        elif name == "dot":
            body = f"[^{JSON_EXCLUDED}]"
        else:
            pieces, in_literal, in_class, index = [], False, False, 0
            while index < len(body):
                char = body[index]
                if in_literal or in_class:
                    if char == "\\":
                        pieces.append(body[index:index + 2])
                        index += 2
                        continue
                    if (in_literal and char == '"') or (in_class and char == "]"):
                        in_literal = in_class = False
                elif char == '"':
                    in_literal = True
                elif char == "[":
                    in_class = True
                    if body.startswith("[^", index):
                        pieces.append("[^" + JSON_EXCLUDED)
                        index += 2
                        continue
                pieces.append(char)
                index += 1
            body = "".join(pieces)
        out.append(f"{name}{sep}{body}")
    return "\n".join(out)


def _grammar(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    schema = copy.deepcopy(schema)
    if "$ref" in schema:
        # The converter rewrites references only below a schema that is not itself a reference, so a root
        # `$ref` would leave those inside its `$defs` unresolved; a one-branch anyOf is the same schema.
        schema["anyOf"] = [{"$ref": schema.pop("$ref")}]
    try:
        resolved = converter.resolve_refs(schema, "input")
        converter.visit(resolved, "")
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as error:
        raise SchemaNotSupported("schema", "", f"the grammar compiler rejected it: {error}") from None
    return _json_safe(str(converter.format_grammar()))


def _validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as error:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        raise SchemaInvalid(f"response_format schema is not a valid JSON Schema at {where}: {error.message}") \
            from None
    return cls(schema)


def compile_format(response_format: dict[str, Any]) -> OutputFormat | None:
    """The grammar and validator for a ``response_format`` object (None for ``{"type": "text"}``)."""
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return OutputFormat("json_object", None, _grammar({"type": "object"}), None, None)
    if kind != "json_schema":
        raise SchemaInvalid(f"response_format.type must be text, json_object or json_schema, got {kind!r}")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise SchemaInvalid("response_format.json_schema must be an object with a schema")
    schema = spec.get("schema")
    name = spec.get("name")
    if not isinstance(schema, dict):
        raise SchemaInvalid("response_format.json_schema.schema must be a JSON Schema object")
    if name is not None and not isinstance(name, str):
        raise SchemaInvalid("response_format.json_schema.name must be a string")
    try:
        size = len(json.dumps(schema))
    except (RecursionError, ValueError):
        raise SchemaInvalid("response_format schema is nested too deeply") from None
    if size > MAX_SCHEMA_BYTES:
        raise SchemaInvalid(f"response_format schema is larger than {MAX_SCHEMA_BYTES} bytes")
    validator = _validator(schema)
    unsupported_keywords(schema)
    return OutputFormat("json_schema", name, _grammar(_strip_annotations(schema)), schema, validator)


class FormatCache:
    """Compiled formats by their canonical JSON: clients send the same schema again and again."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._items: OrderedDict[str, OutputFormat | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, response_format: dict[str, Any],
            grammar_error: Callable[[str], str | None] = lambda _grammar: None) -> OutputFormat | None:
        """The compiled format; ``grammar_error`` is asked once per new format whether llama.cpp parses the
        grammar (SchemaNotSupported when it does not)."""
        key = json.dumps(response_format, sort_keys=True, separators=(",", ":"))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        compiled = compile_format(response_format)
        if compiled is not None and (problem := grammar_error(compiled.grammar)) is not None:
            raise SchemaNotSupported("schema", "", problem)
        with self._lock:
            self._items[key] = compiled
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return compiled

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))
