"""The OpenAI endpoints on a real aiohttp server around a real (tiny, random) llama.cpp model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from slm_helpers import TinyModels, load, parse_metrics, running_server

from tiered_slm.engine import Engine
from tiered_slm.model import ModelReport

GREEDY = {"temperature": 0, "ignore_eos": True}


async def read_sse(response: aiohttp.ClientResponse) -> list[Any]:
    """All ``data:`` payloads of an event stream, JSON-decoded except the final ``[DONE]``."""
    events: list[Any] = []
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.mark.parametrize("quant", ["F32", "Q8_0", "Q4_K_M"])
async def test_chat_and_completion_on_every_quantization(
        tiny_models: TinyModels, http: aiohttp.ClientSession, quant: str) -> None:
    engine, report = load(tiny_models.by_type()[quant])
    async with running_server(engine, report) as (url, _server):
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": "The quick brown fox", "max_tokens": 8, **GREEDY}) as response:
            assert response.status == 200
            completion = await response.json()
        async with http.post(f"{url}/v1/chat/completions",
                             json={"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 8,
                                   **GREEDY}) as response:
            assert response.status == 200
            chat = await response.json()
        async with http.get(f"{url}/v1/models") as response:
            models = await response.json()
    assert completion["object"] == "text_completion"
    assert completion["usage"]["completion_tokens"] == 8 and completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["prompt_tokens"] > 0
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert chat["usage"]["completion_tokens"] == 8
    assert models["data"][0]["id"] == report.model_id
    assert models["data"][0]["tiered"]["quantization"] == quant
    assert models["data"][0]["tiered"]["capabilities"] == {
        "tools": False, "logprobs": False, "responseFormat": ["text", "json_object", "json_schema"],
        "contextLength": report.n_ctx}


async def test_greedy_output_is_deterministic_across_requests(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    async with running_server(*q4_engine) as (url, _server):
        texts = []
        for _ in range(2):
            async with http.post(f"{url}/v1/completions",
                                 json={"prompt": "abc abc abc", "max_tokens": 16, **GREEDY}) as response:
                texts.append((await response.json())["choices"][0]["text"])
    assert texts[0] == texts[1] and texts[0]


@pytest.mark.parametrize("stream_interval_s", [0.0, 30.0])
async def test_streamed_completion_matches_the_non_streamed_text(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession, stream_interval_s: float) -> None:
    """Per-token chunks, and with --stream-interval-ms the same chunks (held-back tokens go out together)."""
    request = {"prompt": "Stream me", "max_tokens": 12, **GREEDY}
    async with running_server(*q4_engine, stream_interval_s=stream_interval_s) as (url, _server):
        async with http.post(f"{url}/v1/completions", json=request) as response:
            whole = (await response.json())["choices"][0]["text"]
        async with http.post(f"{url}/v1/completions",
                             json={**request, "stream": True, "stream_options": {"include_usage": True}}) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = await read_sse(response)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 12
    chunks = events[:-2]
    assert len(chunks) >= 2, "tokens must arrive as separate chunks"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "".join(chunk["choices"][0]["text"] for chunk in chunks) == whole


async def test_streamed_chat_starts_with_the_role_and_ends_with_done(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    async with running_server(*q4_engine) as (url, _server), http.post(f"{url}/v1/chat/completions",
                         json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6,
                               "stream": True, **GREEDY}) as response:
        events = await read_sse(response)
    assert events[0]["object"] == "chat.completion.chunk"
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-1] == "[DONE]"
    assert len({event["id"] for event in events[:-1]}) == 1


async def test_prompt_longer_than_the_context_is_a_400_with_the_numbers(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    engine, _report = q4_engine
    prompt = "x" * (engine.n_ctx + 50)  # byte-level tokenizer without an "xx" merge: one token per byte
    async with running_server(*q4_engine) as (url, _server):
        async with http.post(f"{url}/v1/completions", json={"prompt": prompt}) as response:
            assert response.status == 400
            error = (await response.json())["error"]
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": "short", "max_tokens": engine.n_ctx}) as response:
            assert response.status == 400
            budget_error = (await response.json())["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"prompt is {engine.n_ctx + 50} tokens" in error["message"] and str(engine.n_ctx) in error["message"]
    assert budget_error["param"] == "max_tokens" and "lower max_tokens to" in budget_error["message"]


async def test_full_queue_answers_429_with_retry_after_and_queued_work_still_completes(
        tiny_models: TinyModels, http: aiohttp.ClientSession) -> None:
    # A long context so the first request is certainly still generating while the others arrive.
    engine, report = load(tiny_models.q4_k_m, n_ctx=4096)
    long_request = {"prompt": "a", "max_tokens": engine.n_ctx - 8, "stream": True, **GREEDY}
    async with running_server(engine, report, queue_size=1) as (url, server):
        running = await http.post(f"{url}/v1/completions", json=long_request)
        await running.content.readline()  # the first chunk arrived: this request holds the model
        queued = asyncio.create_task(http.post(f"{url}/v1/completions",
                                               json={"prompt": "b", "max_tokens": 4, **GREEDY}))
        for _ in range(200):
            if server.admission.waiting == 1:
                break
            await asyncio.sleep(0.01)
        async with http.get(f"{url}/metrics") as response:
            metrics = parse_metrics(await response.text())
        assert metrics["tiered_slm_queue_depth"] == 1 and metrics["tiered_slm_in_flight_requests"] == 1
        async with http.post(f"{url}/v1/completions", json={"prompt": "c", "max_tokens": 4}) as rejected:
            assert rejected.status == 429
            assert int(rejected.headers["Retry-After"]) >= 1
            assert (await rejected.json())["error"]["code"] == "queue_full"
        running.close()  # client goes away: generation is cancelled between tokens
        response = await asyncio.wait_for(queued, 30)
        assert response.status == 200
        assert (await response.json())["usage"]["completion_tokens"] == 4
        async with http.get(f"{url}/metrics") as response:
            after = parse_metrics(await response.text())
    assert after['tiered_slm_rejected_requests_total{reason="queue_full"}'] == 1
    # The abandoned stream stopped early instead of generating its whole budget.
    assert after["tiered_slm_completion_tokens_total"] < engine.n_ctx - 8 + 4


async def test_metrics_are_exported_and_move_with_traffic(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    async with running_server(*q4_engine) as (url, _server):
        async with http.get(f"{url}/metrics") as response:
            before = parse_metrics(await response.text())
        for stream in (False, True):
            async with http.post(f"{url}/v1/completions",
                                 json={"prompt": "count me", "max_tokens": 10, "stream": stream,
                                       **GREEDY}) as response:
                await response.read()
        async with http.get(f"{url}/metrics") as response:
            after = parse_metrics(await response.text())
    for name in ("tiered_slm_queue_depth", "tiered_slm_in_flight_requests", "tiered_slm_ready",
                 "tiered_slm_model_size_bytes", "tiered_slm_model_load_seconds"):
        assert name in after, name
    assert after["tiered_slm_ready"] == 1
    assert before["tiered_slm_time_to_first_token_seconds_count"] == 0
    assert after["tiered_slm_time_to_first_token_seconds_count"] == 2
    assert after["tiered_slm_completion_tokens_total"] - before["tiered_slm_completion_tokens_total"] == 20
    assert after["tiered_slm_prompt_tokens_total"] > before["tiered_slm_prompt_tokens_total"]
    assert after["tiered_slm_decode_tokens_per_second_count"] == 2
    assert after["tiered_slm_decode_tokens_per_second_sum"] > 0
    assert after['tiered_slm_requests_total{endpoint="/v1/completions",status="200"}'] == 2


async def test_probes_and_parameter_errors(q4_engine: tuple[Engine, ModelReport],
                                           http: aiohttp.ClientSession) -> None:
    async with running_server(*q4_engine) as (url, _server):
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 200
        async with http.post(f"{url}/v1/completions", json={"prompt": "x", "n": 3}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["param"] == "n"


async def test_seeded_sampling_is_reproducible_and_differs_from_greedy(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    async def complete(**fields: object) -> str:
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": "sample", "max_tokens": 24, "ignore_eos": True, **fields}) as response:
            assert response.status == 200
            return str((await response.json())["choices"][0]["text"])

    async with running_server(*q4_engine) as (url, _server):
        first = await complete(temperature=1.0, top_k=0, min_p=0.0, seed=11)
        second = await complete(temperature=1.0, top_k=0, min_p=0.0, seed=11)
        greedy = await complete(temperature=0)
    assert first == second
    assert first != greedy


async def test_stop_string_ends_generation_without_emitting_it(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    async with running_server(*q4_engine) as (url, _server):
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": "stop test", "max_tokens": 24, **GREEDY}) as response:
            full = (await response.json())["choices"][0]["text"]
        stop = full[5:8]  # three characters from inside the greedy continuation
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": "stop test", "max_tokens": 24, "stop": [stop], **GREEDY}) as response:
            stopped = (await response.json())["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["text"] == full[: full.index(stop)]


async def test_token_id_prompts_are_range_checked_and_empty_prompts_start_from_bos(
        q4_engine: tuple[Engine, ModelReport], http: aiohttp.ClientSession) -> None:
    engine, _report = q4_engine
    async with running_server(*q4_engine) as (url, _server):
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": [1, 2, engine.n_vocab], "max_tokens": 2}) as response:
            assert response.status == 400
            assert (await response.json())["error"]["param"] == "prompt"
        async with http.post(f"{url}/v1/completions",
                             json={"prompt": [72, 105], "max_tokens": 3, **GREEDY}) as response:
            assert response.status == 200
            assert (await response.json())["usage"] == {"prompt_tokens": 2, "completion_tokens": 3,
                                                        "total_tokens": 5}
        async with http.post(f"{url}/v1/completions", json={"prompt": "", "max_tokens": 3, **GREEDY}) as response:
            assert response.status == 200
            assert (await response.json())["usage"]["prompt_tokens"] == 1
