"""Routing by capability and structured outputs through the router, with the official `openai` client, a real
SLM server (SmolLM2-135M-Instruct) as the local tier and a cloud stand-in.

Each case of the issue: tools, logprobs and a context longer than the local window go to the cloud tier (the
reason in x-tiered-reason and the metrics); the same requests carrying PII, which residency keeps local, get a
400 that says why and never reach the cloud; response_format reaches the cloud tier unchanged and is enforced on
the local tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from real_slm_harness import RealTiers, SlmProcess
from router_harness import metric_value

pytestmark = pytest.mark.integration

TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PII = "my card 4111 1111 1111 1111 was declined, hello?"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
RESPONSE_FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "person", "strict": True, "schema": SCHEMA}}


@pytest.fixture(scope="module")
def slm(real_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlmProcess]:
    process = SlmProcess(real_model, tmp_path_factory.mktemp("slm") / "slm.log")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def tiers(slm: SlmProcess, tmp_path: Path) -> Iterator[RealTiers]:
    servers = RealTiers(tmp_path, slm.url)
    try:
        yield servers
    finally:
        servers.close()


def _chat(tiers: RealTiers, content: str, **extra: Any) -> tuple[Any, dict[str, str]]:
    arguments = {"max_tokens": 24, "temperature": 0, **extra}
    raw = tiers.client().chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": content}], **arguments)
    return raw.parse(), dict(raw.headers)


def test_what_the_local_tier_serves_stays_local(tiers: RealTiers) -> None:
    reply, headers = _chat(tiers, "hello, how are you today?")
    assert headers["x-tiered-tier"] == "slm" and headers["x-tiered-reason"] == "KeywordMatched"
    assert reply.choices[0].message.content and not tiers.cloud.received


@pytest.mark.parametrize(("extra", "reason"), [
    ({"tools": TOOLS}, "ToolsUnsupported"),
    ({"logprobs": True, "top_logprobs": 2}, "LogprobsUnsupported"),
    ({"max_tokens": 2040}, "ContextTooLong"),
], ids=["tools", "logprobs", "context"])
def test_a_request_the_local_tier_cannot_serve_goes_to_the_cloud_tier(tiers: RealTiers, extra: dict[str, Any],
                                                                      reason: str) -> None:
    _reply, headers = _chat(tiers, "hello, what is the weather in Oslo?", **extra)
    assert (headers["x-tiered-tier"], headers["x-tiered-route"], headers["x-tiered-reason"]) == (
        "cloud", "local-work", reason)
    sent = tiers.cloud.received[-1].body
    assert {key: sent[key] for key in extra} == extra  # forwarded unchanged
    assert metric_value(tiers.metrics(), "tiered_router_decisions_total", reason=reason, tier="cloud") == 1


def test_a_long_prompt_goes_to_the_cloud_tier(tiers: RealTiers) -> None:
    _reply, headers = _chat(tiers, "hello " + "please read this sentence again. " * 300)
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "ContextTooLong")


def test_a_prompt_the_estimate_underrates_is_passed_on_when_the_local_tier_says_it_is_too_long(
        tiers: RealTiers) -> None:
    """~4 characters per token underestimates CJK text several times over: the local server answers 400
    context_length_exceeded, and dispatch moves on to the next tier of the chain before anything was sent."""
    text = "hello " + "漢字仮名交じり文" * 230  # 1,846 characters: estimate ~462 tokens, really several thousand
    _reply, headers = _chat(tiers, text)
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "ContextTooLong")
    assert headers["x-tiered-fallback-from"] == "slm"
    assert metric_value(tiers.metrics(), "tiered_router_fallbacks_total", trigger="capability") == 1


@pytest.mark.parametrize("extra", [{"tools": TOOLS}, {"logprobs": True}, {"max_tokens": 2040}],
                         ids=["tools", "logprobs", "context"])
def test_pii_with_a_need_only_the_cloud_tier_serves_is_a_400_that_says_why(tiers: RealTiers,
                                                                         extra: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        _chat(tiers, PII, **extra)
    error = raised.value
    assert error.code == "NoCapableTier" and "cloud: PiiKeptLocal" in error.message and "slm " in error.message
    assert error.response.headers["x-tiered-reason"] == "NoCapableTier"
    assert not tiers.cloud.received


def test_json_schema_on_the_local_tier_parses_and_validates(tiers: RealTiers) -> None:
    reply, headers = _chat(tiers, "extract the person: Maria Lopez is 34 years old.", response_format=RESPONSE_FORMAT,
                           max_tokens=200)
    assert headers["x-tiered-tier"] == "slm"
    jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)


def test_response_format_reaches_the_cloud_tier_unchanged(tiers: RealTiers) -> None:
    _reply, headers = _chat(tiers, "what is the tallest mountain in Europe?", response_format=RESPONSE_FORMAT)
    assert headers["x-tiered-tier"] == "cloud"
    assert tiers.cloud.received[-1].body["response_format"] == RESPONSE_FORMAT


def test_a_schema_the_local_grammar_cannot_enforce_goes_to_the_cloud_or_is_a_400_naming_the_keyword(
        tiers: RealTiers) -> None:
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "age": {"type": "integer", "minimum": 0}}}
    unsupported: Any = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    _reply, headers = _chat(tiers, "extract the person: Tom is 51.", response_format=unsupported)
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "ResponseFormatUnsupported")
    assert tiers.cloud.received[-1].body["response_format"] == unsupported
    with pytest.raises(openai.BadRequestError) as raised:  # with PII it may not leave: the local tier's own 400
        _chat(tiers, "extract the person: " + PII, response_format=unsupported)
    assert raised.value.code == "unsupported_schema_keyword" and "'minimum' at /properties/age" in raised.value.message
    assert len(tiers.cloud.received) == 1


def test_a_stream_from_the_real_local_tier_is_relayed_chunk_by_chunk(tiers: RealTiers) -> None:
    """Router -> SLM end to end with real generation: the streamed answer equals the non-streamed one."""
    messages: Any = [{"role": "user", "content": "hello, what colour is the sky on a clear day?"}]
    client = tiers.client()
    whole = client.chat.completions.create(model="auto", messages=messages, temperature=0, max_tokens=32)
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages, temperature=0,
                                                           max_tokens=32, stream=True,
                                                           stream_options={"include_usage": True})
    assert raw.headers["x-tiered-tier"] == "slm" and raw.headers["content-type"].startswith("text/event-stream")
    pieces, usage = [], None
    for chunk in raw.parse():
        usage = chunk.usage or usage
        pieces += [choice.delta.content or "" for choice in chunk.choices]
    assert "".join(pieces) == whole.choices[0].message.content and len([p for p in pieces if p]) > 3
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
