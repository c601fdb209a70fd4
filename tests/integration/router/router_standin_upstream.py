"""A stand-in OpenAI-compatible upstream (a real aiohttp HTTP server on 127.0.0.1, port picked at runtime).

It stands in for a cloud provider (the only component the team brief allows to be a stand-in) or, where a test
needs a misbehaving local tier, for a local SLM server. It records every request it receives, so tests assert on
what actually reached the upstream (for PII, that nothing did), and its behaviour can be switched per test:
answer, fail with 5xx, stall before headers, stall mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    """One request as the upstream saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class StandinUpstream:
    """Behaviour knobs: `status` (500/503 -> error), `delay_s` before headers, `chunks` streamed, `chunk_delay_s`."""

    name: str
    status: int = 200
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    reply: str = "hello from the stand-in"
    chunks: int = 5
    error_code: str | None = None  # error.code of a status >= 400 answer (e.g. queue_full, model_not_ready)
    retry_after: str | None = None  # Retry-After header of a status >= 400 answer
    received: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def texts(self) -> list[str]:
        """Every message/prompt text this upstream received, for leak assertions."""
        out = []
        for r in self.received:
            for m in r.body.get("messages", []) or []:
                c = m.get("content")
                out.append(c if isinstance(c, str) else json.dumps(c))
            p = r.body.get("prompt")
            if p is not None:
                out.append(p if isinstance(p, str) else json.dumps(p))
        return out

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status >= 400:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.json_response({"error": {"message": f"{self.name} failing", "type": "server_error",
                                                "code": self.error_code}}, status=self.status, headers=headers)
        model = body.get("model", "m")
        chat = request.path.endswith("/chat/completions")
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(self.chunks):
                delta = {"content": f"{self.name}-{i} "}
                part = {"index": 0, "delta": delta, "finish_reason": None} if chat else {
                    "index": 0, "text": f"{self.name}-{i} ", "finish_reason": None}  # fmt: skip
                event = {"id": "x", "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": int(time.time()), "model": model, "choices": [part]}  # fmt: skip
                await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
            usage = {"prompt_tokens": 7, "completion_tokens": self.chunks, "total_tokens": 7 + self.chunks}
            final = {"id": "x", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                     "choices": [], "usage": usage}  # fmt: skip
            await resp.write(b"data: " + json.dumps(final).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        if chat:
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": self.reply},
                                      "finish_reason": "stop"}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": self.reply, "finish_reason": "stop", "logprobs": None}
            obj = "text_completion"
        return web.json_response(
            {
                "id": "cmpl-1",
                "object": obj,
                "created": int(time.time()),
                "model": model,
                "choices": [choice],
                "usage": usage,
            }
        )

    async def start(self) -> StandinUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/v1/completions", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        server: Any = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
