"""The SLM server on the real model (SmolLM2-135M-Instruct): answers in English, and a stream carries the same
answer as the non-streamed request, through the official `openai` client."""

from __future__ import annotations

import openai
from slm_helpers import running_server

from tiered_slm.engine import Engine
from tiered_slm.model import ModelReport

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


async def test_the_real_model_answers_in_words_and_streams_the_same_answer(
        real_engine: tuple[Engine, ModelReport]) -> None:
    async with running_server(*real_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        whole = await client.chat.completions.create(model="local", messages=QUESTION,  # type: ignore[arg-type]
                                                     temperature=0, max_tokens=40)
        stream = await client.chat.completions.create(model="local", messages=QUESTION,  # type: ignore[arg-type]
                                                      temperature=0, max_tokens=40, stream=True)
        pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    text = whole.choices[0].message.content or ""
    print(f"\nSmolLM2: {text!r}")
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 3
    words = text.split()
    assert len(words) >= 3 and sum(w.strip(".,!?'\"").isalpha() for w in words) >= 0.7 * len(words)
