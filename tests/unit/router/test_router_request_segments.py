"""What the PII scan reads is what dispatch forwards: every string of the upstream body, wherever it sits.

The set of scanned strings is derived from the body (request.forwarded_segments), not from a list of fields, so a
property test plants a value at a random place of a random body (a value, a key, deep in tool arguments or
metadata) and checks that (1) every string in the bytes dispatch would send upstream is a scanned segment (or the
tier's own model name), and (2) the planted card is found. Repeated keys, which `json.loads` collapses while the
raw bytes keep both values, make the router forward the re-serialised (scanned) body instead of the raw bytes.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tiered_router.config import PiiEntity
from tiered_router.pii import scan_segments
from tiered_router.proxy import _upstream_bytes
from tiered_router.request import parse_body

CARD = "4111 1111 1111 1111"
TIER_MODEL = "frontier-model"

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
leaves = st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False))
json_values = st.recursive(
    leaves, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=12,
)


def _plant(value: Any, path: list[int], as_key: bool) -> Any:
    """`value` with CARD put at the place `path` chooses (as a key or a value)."""
    if isinstance(value, dict) and value and path:
        keys = list(value)
        k = keys[path[0] % len(keys)]
        return {**value, k: _plant(value[k], path[1:], as_key)}
    if isinstance(value, list) and value and path:
        i = path[0] % len(value)
        return [*value[:i], _plant(value[i], path[1:], as_key), *value[i + 1 :]]
    if as_key:
        return {f"note {CARD}": value}
    return [value, f"see {CARD}"] if not isinstance(value, str) else f"{value} card {CARD}"


def _all_strings(raw: bytes) -> list[str]:
    """Every string literal of a JSON text, keys and repeated keys included."""
    out: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        for key, value in items:
            out.append(key)
            if isinstance(value, str):
                out.append(value)
        return dict(items)

    def strings(value: Any) -> None:
        if isinstance(value, list):
            for v in value:
                if isinstance(v, str):
                    out.append(v)

    doc = json.loads(raw, object_pairs_hook=pairs)
    for arr in _arrays(doc):
        strings(arr)
    if isinstance(doc, str):
        out.append(doc)
    return out


def _arrays(value: Any) -> list[list[Any]]:
    found: list[list[Any]] = []
    if isinstance(value, list):
        found.append(value)
        for v in value:
            found.extend(_arrays(v))
    elif isinstance(value, dict):
        for v in value.values():
            found.extend(_arrays(v))
    return found


@settings(max_examples=300, deadline=None)
@given(
    extra=st.dictionaries(names.filter(lambda n: n not in ("model", "messages", "stream")), json_values, max_size=4),
    message_extra=st.dictionaries(names.filter(lambda n: n not in ("role", "content")), json_values, max_size=3),
    where=st.sampled_from(["extra", "message", "content-part"]),
    path=st.lists(st.integers(min_value=0, max_value=20), max_size=5),
    as_key=st.booleans(),
)
def test_every_forwarded_string_is_scanned_and_a_planted_card_is_found(
    extra: dict[str, Any], message_extra: dict[str, Any], where: str, path: list[int], as_key: bool
) -> None:
    content: Any = [{"type": "text", "text": "summarise this"}, {"type": "text", "text": "thanks"}]
    message: dict[str, Any] = {"role": "user", "content": content, **message_extra}
    body: dict[str, Any] = {"model": "auto", "messages": [message], **extra}
    if where == "extra":
        body["metadata"] = _plant(extra or {"k": "v"}, path, as_key)
    elif where == "message":
        message["name"] = _plant(message_extra or {"k": "v"}, path, as_key)
    elif as_key:
        content[1] = {**content[1], "detail": _plant({"k": "v"}, path, as_key)}
    else:
        content[1] = {**content[1], "text": _plant("thanks", path, as_key)}
    raw = json.dumps(body).encode()
    parsed = parse_body(raw, "chat")
    scanned = {s.text for s in parsed.segments}
    forwarded = _upstream_bytes(parsed.body, raw if parsed.raw_forwardable else None, TIER_MODEL)
    missing = [s for s in _all_strings(forwarded) if s not in scanned and s != TIER_MODEL]
    assert missing == [], missing
    assert scan_segments(parsed.segments, list(PiiEntity)), body


def test_a_repeated_key_makes_the_router_forward_what_it_scanned() -> None:
    raw = (b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}],'
           b' "metadata": {"n": "' + CARD.encode() + b'", "n": "x"}}')  # fmt: skip
    parsed = parse_body(raw, "chat")
    assert parsed.body["metadata"] == {"n": "x"}  # what json.loads keeps
    assert not parsed.raw_forwardable
    forwarded = _upstream_bytes(parsed.body, raw if parsed.raw_forwardable else None, TIER_MODEL)
    assert CARD.encode() not in forwarded


def test_plain_bodies_keep_their_raw_bytes() -> None:
    for raw in (b'{"model": "auto", "messages": [{"role": "user", "content": "a \\"quoted\\" word"}]}',
                b'{"model":"auto","prompt":["x","y"],"stop":["\\n"]}'):  # fmt: skip
        parsed = parse_body(raw, "chat" if b"messages" in raw else "completion")
        assert parsed.raw_forwardable, raw


def test_tool_call_arguments_are_scanned_as_their_own_strings_too() -> None:
    args = json.dumps({"part_a": "4111 1111", "part_b": "1111 1111"})
    body = {"model": "auto", "messages": [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}]},
        {"role": "user", "content": "go"}]}  # fmt: skip
    parsed = parse_body(json.dumps(body).encode(), "chat")
    texts = [s.text for s in parsed.segments]
    assert args in texts and "4111 1111" in texts and "1111 1111" in texts
    assert scan_segments(parsed.segments, list(PiiEntity), strict=False)  # joined across the two arguments
