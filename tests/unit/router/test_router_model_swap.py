"""The body a tier receives when the client named another model: only `model` changes, whatever the bytes look like.

`proxy._upstream_bytes` swaps the model value inside the client's bytes when it can locate it for certain and
re-serialises otherwise; either way the upstream must decode exactly the client's body with the tier's model.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiered_router.proxy import _upstream_bytes

TRICKY = [
    b'{"model":"auto","messages":[{"role":"user","content":"hi"}]}',
    b'{ "messages" : [ ], "model" : "auto" , "x": 1}',
    b'{"model":"a\\"b","messages":[]}',
    b'{"model":"auto","metadata":{"model":"auto"}}',  # a nested key with the same value
    b'{"mod\\u0065l":"auto","metadata":{"model":"auto"}}',  # the top-level key spelled with an escape
    b'{"messages":[{"content":"say \\"model"}],"model":"auto"}',  # "model" inside a string
    b'{"model":"x","model":"auto"}',  # duplicate keys: the last one wins
    b'{"messages":[{"role":"model","content":"x"}],"model":"auto"}',
    b'{"model":\n"auto\\\\"}',
    b'{"messages":[]}',  # no model at all
    '{"model":"auto","messages":[]}'.encode("utf-16"),
]


@pytest.mark.parametrize("raw", TRICKY)
@pytest.mark.parametrize("model", ["m", 'we"ird\\', "ü"])
def test_tier_receives_the_client_body_with_only_the_model_replaced(raw: bytes, model: str) -> None:
    body = json.loads(raw)
    assert json.loads(_upstream_bytes(body, raw, model)) == {**body, "model": model}


def test_a_body_already_naming_the_tier_model_is_forwarded_byte_for_byte() -> None:
    raw = b'{ "model" : "m", "messages": [] }'
    assert _upstream_bytes(json.loads(raw), raw, "m") is raw


def test_the_common_body_keeps_every_other_byte() -> None:
    raw = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.25}'
    assert _upstream_bytes(json.loads(raw), raw, "tiny-q4") == raw.replace(b'"model": "auto"', b'"model":"tiny-q4"')


# Pieces that make the byte-level swap hard: quotes, backslashes, the key itself, non-ASCII (escaped or not).
PIECES = ['"', "\\", "model", '"model"', ":", "a", " ", "é", "{", "}", "\n", "\u2028"]
texts = st.lists(st.sampled_from(PIECES)).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    content=texts,
    model=st.one_of(st.just("auto"), texts),
    metadata=st.one_of(st.none(), texts),
    model_first=st.booleans(),
    ascii_only=st.booleans(),
    compact=st.booleans(),
)
def test_generated_bodies_decode_to_the_same_object_with_the_tier_model(
    content: str, model: str, metadata: str | None, model_first: bool, ascii_only: bool, compact: bool
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}]}
    body = {"model": model, **body} if model_first else {**body, "model": model}
    if metadata is not None:
        body["metadata"] = {"model": metadata}
    raw = json.dumps(body, ensure_ascii=ascii_only, separators=(",", ":") if compact else (", ", ": ")).encode()
    assert json.loads(_upstream_bytes(json.loads(raw), raw, "m")) == {**body, "model": "m"}
