"""The official openai SDK, pointed at the SLM server, works unchanged (what application developers do)."""

from __future__ import annotations

import pytest
from slm_helpers import running_server

from tiered_slm.engine import Engine
from tiered_slm.model import ModelReport

openai = pytest.importorskip("openai")


async def test_official_client_chat_stream_completion_and_errors(q4_engine: tuple[Engine, ModelReport]) -> None:
    async with running_server(*q4_engine) as (url, _server):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        try:
            models = await client.models.list()
            assert [model.id for model in models.data] == [q4_engine[1].model_id]

            chat = await client.chat.completions.create(
                model="anything", messages=[{"role": "user", "content": "Hello"}], max_tokens=5, temperature=0,
                extra_body={"ignore_eos": True})
            assert chat.choices[0].finish_reason == "length" and chat.usage is not None
            assert chat.usage.completion_tokens == 5

            stream = await client.chat.completions.create(
                model="anything", messages=[{"role": "user", "content": "Hello"}], max_tokens=5, temperature=0,
                stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            pieces, usage = [], None
            async for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
                if chunk.usage is not None:
                    usage = chunk.usage
            assert "".join(pieces) == chat.choices[0].message.content
            assert usage is not None and usage.completion_tokens == 5

            completion = await client.completions.create(model="anything", prompt="Once", max_tokens=3,
                                                         temperature=0, extra_body={"ignore_eos": True})
            assert completion.usage is not None and completion.usage.completion_tokens == 3

            with pytest.raises(openai.BadRequestError) as caught:
                await client.completions.create(model="anything", prompt="x" * 5000, max_tokens=1)
            assert "context window" in str(caught.value)
        finally:
            await client.close()
