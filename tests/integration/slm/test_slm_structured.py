"""Structured outputs end to end: response_format decoded under a grammar, answers validated before they leave.

The real model (SmolLM2-135M-Instruct) answers the extraction set through the official `openai` client; the tiny
random-weight model samples under the grammar at a high temperature, which writes the strangest text a grammar
allows, to check that whatever the grammar lets through the schema accepts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from slm_helpers import running_server

from tiered_slm.engine import Engine
from tiered_slm.model import ModelReport

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "slm"))
from extraction_set import SCHEMAS, extraction_items, field_matches

EXTRACTION_PROMPTS = 100


def _validate(schema: dict[str, Any], text: str) -> Any:
    value = json.loads(text)
    jsonschema.Draft202012Validator(schema).validate(value)
    return value


async def test_json_schema_extraction_answers_all_parse_and_validate(
        real_engine: tuple[Engine, ModelReport]) -> None:
    """The acceptance check: >= 100 schema'd extraction prompts, zero invalid results (each answer is checked here
    with jsonschema, independently of the server's own validation)."""
    # By kind, so consecutive prompts share their system prompt (the server keeps the KV cache of a shared prefix).
    items = sorted(extraction_items(EXTRACTION_PROMPTS, seed=1818), key=lambda item: item.kind)
    right = fields = 0
    async with running_server(*real_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for item in items:
            reply = await client.chat.completions.create(
                model="local", messages=item.messages(),  # type: ignore[arg-type]
                response_format=item.response_format(),  # type: ignore[arg-type]
                temperature=0, max_tokens=300)
            choice = reply.choices[0]
            assert choice.finish_reason == "stop"
            value = _validate(item.schema, choice.message.content or "")
            fields += len(item.expected)
            right += sum(field_matches(want, value.get(key)) for key, want in item.expected.items())
    print(f"\n{len(items)} extraction answers valid; field accuracy {right}/{fields} = {right / fields:.1%}")
    assert right > 0


async def test_streamed_structured_answer_is_validated_then_sent_as_a_stream(
        real_engine: tuple[Engine, ModelReport]) -> None:
    item = extraction_items(1, seed=7)[0]
    async with running_server(*real_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        stream = await client.chat.completions.create(
            model="local", messages=item.messages(),  # type: ignore[arg-type]
            response_format=item.response_format(),  # type: ignore[arg-type]
            temperature=0, max_tokens=300, stream=True, stream_options={"include_usage": True})
        pieces, reasons, usage = [], [], None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                reasons.append(choice.finish_reason)
    assert reasons[-1] == "stop" and len(pieces) > 2
    _validate(item.schema, "".join(pieces))
    assert usage is not None and usage.completion_tokens > 0


async def test_an_answer_cut_off_by_max_tokens_is_an_error_not_broken_json(
        real_engine: tuple[Engine, ModelReport]) -> None:
    item = extraction_items(1, seed=8)[0]
    async with running_server(*real_engine) as (url, server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as raised:
                created = await client.chat.completions.create(
                    model="local", messages=item.messages(),  # type: ignore[arg-type]
                    response_format=item.response_format(),  # type: ignore[arg-type]
                    temperature=0, max_tokens=6, stream=stream)
                if stream:  # a 200 stream would only fail here; it must not get that far
                    async for _chunk in created:  # type: ignore[union-attr]
                        pass
            error = raised.value
            assert error.code == "response_format_incomplete" and error.param == "max_tokens"
            assert "cut off after 6 tokens" in error.message
        metrics = server.metrics.structured.labels(result="incomplete")._value.get()
        assert metrics == 2


async def test_json_object_answers_are_objects(real_engine: tuple[Engine, ModelReport]) -> None:
    async with running_server(*real_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = await client.chat.completions.create(
            model="local", temperature=0, max_tokens=200, response_format={"type": "json_object"},
            messages=[{"role": "user", "content": "Give the capital and population of France as JSON."}])
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


async def test_unsupported_keyword_is_a_400_that_names_it(q4_engine: tuple[Engine, ModelReport]) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}, "required": ["age"]}
    async with running_server(*q4_engine) as (url, server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as raised:
            await client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": "age?"}], max_tokens=20,
                response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
        assert raised.value.code == "unsupported_schema_keyword" and raised.value.param == "response_format"
        assert "'minimum' at /properties/age" in raised.value.message
        with pytest.raises(openai.BadRequestError, match="tools are not supported"):
            await client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": "weather?"}], max_tokens=5,
                tools=[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}])
        assert server.metrics.rejections.labels(reason="response_format")._value.get() == 1


SAMPLED_SCHEMAS = {**SCHEMAS, "nested": {
    "$defs": {"item": {"type": "object", "properties": {
        "sku": {"type": "string", "pattern": "^[a-z]{2}[0-9]{1,3}$"},
        "n": {"type": "integer"}, "note": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]}},
        "required": ["sku", "n"]}},
    "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 3},
                                     "when": {"type": "string", "format": "time"}, "ok": {"const": True}},
    "required": ["items", "ok"], "additionalProperties": False}}


@pytest.mark.parametrize("kind", list(SAMPLED_SCHEMAS))
async def test_whatever_the_grammar_lets_a_random_model_write_validates(
        q4_engine: tuple[Engine, ModelReport], kind: str) -> None:
    """Random weights sampled at temperature 1.5 under the grammar: every answer must be valid (the server's check
    and this test's jsonschema agree), and none may be cut off (every string in these schemas is bounded)."""
    schema = SAMPLED_SCHEMAS[kind]
    fmt = {"type": "json_schema", "json_schema": {"name": kind, "schema": schema}}
    async with running_server(*q4_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        for seed in range(6):
            reply = await client.chat.completions.create(
                model="local", messages=[{"role": "user", "content": f"{kind} {seed}"}],
                response_format=fmt,  # type: ignore[arg-type]
                temperature=1.5, seed=seed, max_tokens=900, extra_body={"top_k": 0, "min_p": 0.0})
            _validate(schema, reply.choices[0].message.content or "")
