"""The CLOUD STAND-IN: a real OpenAI-compatible HTTP server that plays the cloud provider in the demo.

It is not a language model and not a real provider. It exists because the demo runs offline: it answers
`/v1/chat/completions` and `/v1/completions` (streaming included, with `usage` token counts), checks the bearer
key the router sends (from the tier's Secret), and records what it received, so the demo can prove that no
PII-bearing prompt reached "the cloud":

- every received prompt is appended to a JSONL log (`--record`), which the demo searches for the exact PII
  values it generated;
- its own detector (`piicheck`, independent of the router's scanner) counts PII findings, exported as
  `cloud_standin_pii_requests_total` on `/metrics` next to request and token counters.

Its latency is simulated: a delay before the first byte drawn uniformly from `--first-byte-ms` (default
150-400 ms, inside the 200-800 ms p95 range the design quotes for frontier APIs) plus `--per-token-ms` per output
token. The demo prints this; the latencies it reports for the cloud tier are measured, but they measure this
stand-in, not a real provider. Token counts follow a stated rule (about 4 characters per prompt token, one token
per output word), not a real tokenizer.

Run: `python -m tiered_dev.demo.standin --port 0 --api-key-file KEY --record received.jsonl`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tiered_dev.demo.piicheck import find_pii

log = logging.getLogger("cloud_standin")

NAME = "cloud stand-in (not a real provider)"
MODEL_ID = "standin-frontier"
REQUESTS = "cloud_standin_requests"
PII_REQUESTS = "cloud_standin_pii_requests"
UNAUTHORIZED = "cloud_standin_unauthorized"
REPLY_TEXT = (
    "This answer comes from the cloud stand-in, a local test server that plays the cloud provider in the "
    "tiered demo; it is not a language model. It received your request and counts its tokens."
)
REPLY_WORDS = REPLY_TEXT.split(" ")


class StandinMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            REQUESTS, "Requests the stand-in served, by endpoint and stream.",
            ["endpoint", "stream"], registry=r,
        )
        self.tokens = Counter(
            "cloud_standin_tokens", "Tokens the stand-in counted (rule: ~4 chars/prompt token, 1 per output word).",
            ["direction"], registry=r,
        )
        self.pii = Counter(
            PII_REQUESTS, "Requests in which the stand-in's own detector found PII.", registry=r
        )
        self.pii_findings = Counter(
            "cloud_standin_pii_findings", "PII findings of the stand-in's own detector, by entity.",
            ["entity"], registry=r,
        )
        self.unauthorized = Counter(
            UNAUTHORIZED, "Requests refused for a missing or wrong API key.", registry=r
        )


def prompt_text(body: dict[str, Any]) -> str:
    """All text a request carries (chat messages, or the completion prompt)."""
    parts: list[str] = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        parts.append(prompt)
    elif isinstance(prompt, list):
        parts += [str(p) for p in prompt]
    return "\n".join(parts)


def count_prompt_tokens(text: str) -> int:
    """The stand-in's stated rule: about four characters per token, at least one."""
    return max(1, math.ceil(len(text) / 4))


def reply_words(max_tokens: int | None) -> list[str]:
    limit = len(REPLY_WORDS) if not max_tokens or max_tokens <= 0 else min(max_tokens, len(REPLY_WORDS))
    return REPLY_WORDS[:limit]


class Standin:
    """The stand-in's state: its key, its delays, its counters and the received-prompt log."""

    def __init__(
        self,
        api_key: str | None,
        record: Path | None,
        first_byte_ms: tuple[float, float],
        per_token_ms: float,
        seed: int = 0,
    ) -> None:
        self.api_key = api_key
        self.record = record
        self.first_byte_ms = first_byte_ms
        self.per_token_ms = per_token_ms
        self.rng = random.Random(seed)
        self.metrics = StandinMetrics()
        self.received = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.router.add_get("/standin/stats", self.stats)
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "server": NAME})

    async def models(self, request: web.Request) -> web.Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        return web.json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": NAME}]})

    async def metrics_endpoint(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response({"server": NAME, "received": self.received})

    def _refuse(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            self.metrics.unauthorized.inc()
            error = {"message": "invalid API key (cloud stand-in)", "type": "invalid_request_error",
                     "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        return None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    def _observe(self, body: dict[str, Any], endpoint: str, stream: bool) -> str:
        text = prompt_text(body)
        self.received += 1
        self.metrics.requests.labels(endpoint, str(stream).lower()).inc()
        findings = find_pii(text)
        if findings:
            self.metrics.pii.inc()
            for f in findings:
                self.metrics.pii_findings.labels(f.entity).inc()
        if self.record is not None:
            with self.record.open("a") as out:
                entry = {"ts": time.time(), "endpoint": endpoint, "text": text, "pii": [f.entity for f in findings]}
                out.write(json.dumps(entry) + "\n")
        return text

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        if (refused := self._refuse(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON", "type": "invalid_request_error"}},
                                     status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": {"message": "body must be an object", "type": "invalid_request_error"}},
                                     status=400)
        stream = bool(body.get("stream"))
        endpoint = "chat" if chat else "completions"
        text = self._observe(body, endpoint, stream)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        words = reply_words(int(max_tokens) if isinstance(max_tokens, int) else None)
        usage = {"prompt_tokens": count_prompt_tokens(text), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        self.metrics.tokens.labels("in").inc(usage["prompt_tokens"])
        self.metrics.tokens.labels("out").inc(usage["completion_tokens"])
        ident = f"{'chatcmpl' if chat else 'cmpl'}-standin-{uuid.uuid4().hex[:12]}"
        model = str(body.get("model") or MODEL_ID)
        await asyncio.sleep(self.rng.uniform(*self.first_byte_ms) / 1000)
        if not stream:
            await asyncio.sleep(self.per_token_ms * len(words) / 1000)
            content = " ".join(words)
            choice: dict[str, Any] = (
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                if chat else {"index": 0, "text": content, "finish_reason": "stop"}
            )
            return web.json_response({
                "id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": model, "choices": [choice], "usage": usage, "system_fingerprint": "cloud-standin",
            })
        return await self._stream(request, ident, model, words, usage, chat, body)

    async def _stream(
        self, request: web.Request, ident: str, model: str, words: list[str], usage: dict[str, int], chat: bool,
        body: dict[str, Any],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        kind = "chat.completion.chunk" if chat else "text_completion"
        created = int(time.time())

        def chunk(delta: str | None, finish: str | None) -> bytes:
            if chat:
                d: dict[str, Any] = {} if delta is None else {"content": delta}
                if delta is not None and delta == "":
                    d = {"role": "assistant", "content": ""}
                choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish}
            payload = {"id": ident, "object": kind, "created": created, "model": model, "choices": [choice]}
            return f"data: {json.dumps(payload)}\n\n".encode()

        if chat:
            await resp.write(chunk("", None))
        for i, word in enumerate(words):
            await resp.write(chunk(word if i == 0 else " " + word, None))
            await asyncio.sleep(self.per_token_ms / 1000)
        await resp.write(chunk(None, "stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            payload = {"id": ident, "object": kind, "created": created, "model": model, "choices": [],
                       "usage": usage}
            await resp.write(f"data: {json.dumps(payload)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    lo, hi = float(low), float(high or low)
    if lo < 0 or hi < lo:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX milliseconds, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tiered_dev.demo.standin",
        description="Cloud stand-in: an OpenAI-compatible test server that plays the cloud provider (not an LLM).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (written to --port-file)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--api-key-file", type=Path, help="accept only this bearer key (as a real provider would)")
    parser.add_argument("--record", type=Path, help="append every received prompt to this JSONL file")
    parser.add_argument("--first-byte-ms", type=_range, default=(150.0, 400.0), help="simulated delay, MIN-MAX")
    parser.add_argument("--per-token-ms", type=float, default=4.0, help="simulated delay per output token")
    parser.add_argument("--seed", type=int, default=0)
    return parser


async def serve(args: argparse.Namespace) -> None:
    key = args.api_key_file.read_text().strip() if args.api_key_file else None
    standin = Standin(key, args.record, args.first_byte_ms, args.per_token_ms, args.seed)
    runner = web.AppRunner(standin.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    port = runner.addresses[0][1]
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    log.info("%s listening on http://%s:%d/v1", NAME, args.host, port)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
