"""The HTTP layer: one request handler that dispatches on path and method, parses, calls the pure decision
pipeline, and hands off to the dispatcher.

Handlers stay thin on purpose (see docs/router.md): everything that decides lives in decision.py and is tested
without sockets; everything that talks to upstreams lives in proxy.py. The router serves seven fixed paths, so
`RouterService.handle` looks the path up in one dict and shapes every error itself (OpenAI JSON, no traces). It
runs on tiered_http's server (tiered_http), a plain asyncio protocol with httptools' parser: the
same answers as the aiohttp application it replaced for less work per request (docs/router.md "The request path").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tiered_http import HTTPError, Request, Response, Server, StreamResponse, json_response

from .capability import request_needs
from .config import DEFAULT_POLL_SECONDS, RouterConfig
from .decision import Decision, RoutingRequest, decide, estimate_tokens
from .errors import error_response
from .metrics import RouterMetrics
from .openapi import document
from .pii import redact, scan
from .proxy import Dispatcher
from .request import BadRequest, classification_text, parse_body, redact_body
from .state import ConfigHolder, RouterState
from .upstream_http import UpstreamPool

log = logging.getLogger("tiered_router")

HARD_BODY_CAP = 64 * 1024 * 1024  # the HTTP server's own cap; the configured (smaller) limit is enforced per request


INLINE_DECISION_S = 0.0005  # decisions cheaper than this on average run on the event loop (see _decide)
_THREAD_TOKENS = 2048  # prompts at least this long always go to the worker thread when the encoder is neural

Handler = Callable[[Request], Awaitable[StreamResponse]]
_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 408: "request_timeout", 413: "body_too_large",
                415: "unsupported_encoding"}


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` (checked on Content-Length and while reading).

    A compressed body is decoded while read, so its decoded size is only known by counting. HTTPError (400 for a
    body that does not match its Content-Encoding or a connection closed early, 415 for an unknown coding, 413
    over the server's hard cap) goes to the caller."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.iter_chunks():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decision_headers(decision: Decision) -> dict[str, str]:
    return {
        "x-tiered-tier": decision.tier or "",
        "x-tiered-route": decision.route or "",
        "x-tiered-reason": decision.reason.value,
    }


def _decide_in_thread(state: RouterState, routing: RoutingRequest) -> tuple[Decision, float, float]:
    """The decision, the seconds it took and the CPU seconds this (worker) thread spent on it."""
    t0, cpu0 = time.perf_counter(), time.thread_time()
    decision = decide(state.config, state.classifier, routing)
    return decision, time.perf_counter() - t0, time.thread_time() - cpu0


async def _decide(state: RouterState, routing: RoutingRequest) -> tuple[Decision, float]:
    """The decision and the seconds the pipeline took. Inline on the loop when cheap; a worker thread only for an
    expensive neural encoder.

    A thread hop costs tens of microseconds and a GIL hand-over, more than a lexical or small-encoder decision
    itself; a neural encoder that takes milliseconds (numpy releases the GIL) must not stall the loop instead.
    The running average `state.decision_cost_s` tells the two apart without knowing the encoder: it estimates how
    long a decision stalls the loop when run inline, so every decision counts the CPU time of the thread that ran
    it. Wall time adds the waits for the GIL and the loop on a worker thread, and the time the OS gave the CPU to
    other processes inline (milliseconds under load): either kept a microsecond classifier on the thread for good.
    """
    if state.classifier.encoder.dim > 0 and (
        state.decision_cost_s > INLINE_DECISION_S or routing.input_tokens >= _THREAD_TOKENS
    ):
        decision, spent, cost = await asyncio.to_thread(_decide_in_thread, state, routing)
    else:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        decision = decide(state.config, state.classifier, routing)
        spent, cost = time.perf_counter() - t0, time.thread_time() - cpu0
    state.decision_cost_s = 0.9 * state.decision_cost_s + 0.1 * cost
    return decision, spent


def _count_decision(metrics: RouterMetrics, decision: Decision, spent: float, config: RouterConfig) -> None:
    metrics.decision_latency.observe(spent)
    metrics.decisions_by(decision.reason.value, decision.tier or "none").inc()
    if decision.pii:
        action = config.residency.pii.action.value
        for entity in decision.pii:
            metrics.pii_by(entity, action).inc()


class RouterService:
    """Everything one router process serves, behind a single handler (`handle`) on tiered_http's server."""

    def __init__(self, holder: ConfigHolder, metrics: RouterMetrics, max_connections: int = 1000) -> None:
        self.holder = holder
        self.metrics = metrics
        self.max_connections = max_connections  # open client connections; one more gets 503 (tiered_http)
        self.dispatcher: Dispatcher | None = None  # set while running (it owns the upstream pool)
        self.pool: UpstreamPool | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.server: Server | None = None
        gets: dict[str, Handler] = {
            "/v1/models": self.models,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/metrics": self.metrics_text,
            "/openapi.json": self.openapi,
        }
        self.routes: dict[str, dict[str, Handler]] = {
            "/v1/chat/completions": {"POST": self.chat_completions},
            "/v1/completions": {"POST": self.completions},
            **{path: {"GET": h, "HEAD": h} for path, h in gets.items()},
        }

    async def handle(self, request: Request) -> StreamResponse:
        """Dispatch on path and method; every error leaves as OpenAI-shaped JSON (unknown paths, wrong methods,
        and anything unexpected, without a trace)."""
        methods = self.routes.get(request.path)
        if methods is None:
            return error_response(404, "Not Found", "not_found")
        handler = methods.get(request.method)
        if handler is None:  # a 405 must say which methods the path takes (RFC 9110 15.5.6)
            return error_response(
                405, "Method Not Allowed", "method_not_allowed", headers={"Allow": ",".join(sorted(methods))}
            )
        try:
            return await handler(request)
        except HTTPError as exc:  # the body could not be read: the rest of it cannot be skipped either
            response = error_response(exc.status, exc.message, _ERROR_CODES.get(exc.status, "invalid_request"))
            response.force_close()
            return response
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal router error", "internal_error")

    async def chat_completions(self, request: Request) -> StreamResponse:
        return await self._completion(request, "chat", "/chat/completions")

    async def completions(self, request: Request) -> StreamResponse:
        return await self._completion(request, "completion", "/completions")

    async def _completion(self, request: Request, kind: str, path: str) -> StreamResponse:
        started = time.perf_counter()
        state = self.holder.state
        dispatcher = self.dispatcher
        if state is None or dispatcher is None:
            return error_response(503, "router has no valid config yet", "not_ready")
        metrics = self.metrics
        config = state.config
        raw = await _read_body(request, config.max_body_bytes)  # HTTPError: answered (and closed) by `handle`
        if raw is None:
            too_large = error_response(
                413, f"request body exceeds the limit of {config.max_body_bytes} bytes (maxBodyBytes)", "body_too_large"
            )
            too_large.force_close()  # the rest of the body is unread
            return too_large
        try:
            parsed = parse_body(raw, kind)
        except BadRequest as exc:
            return error_response(400, str(exc), "invalid_request", param=exc.param)
        input_tokens = estimate_tokens(parsed.text)
        routing = RoutingRequest(
            text=parsed.pii_text or parsed.text,
            model=parsed.model,
            pinned_tier=request.headers.get(config.override.header),
            input_tokens=input_tokens,
            route_text=classification_text(parsed),
            needs=request_needs(parsed.body),
            segments=parsed.segments,
        )
        decision, spent = await _decide(state, routing)
        # Counted once the loop is idle (while the upstream works on the request), not before it is sent.
        asyncio.get_running_loop().call_soon(_count_decision, metrics, decision, spent, config)
        if decision.rejected:
            metrics.requests_by("none", decision.route or "none", "rejected").inc()
            return error_response(
                decision.status, decision.message, decision.reason.value, headers=_decision_headers(decision)
            )
        body = parsed.body
        if decision.redact:
            entities, strict = config.residency.pii.entities, config.residency.pii_strict
            body = redact_body(parsed, lambda s: redact(s, scan(s, entities, strict)))
        return await dispatcher.serve(
            request,
            state,
            decision,
            body,
            path,
            parsed.stream,
            started,
            input_tokens,
            raw=None if decision.redact or not parsed.raw_forwardable else raw,
        )

    async def models(self, request: Request) -> StreamResponse:
        """Tiers, routes and the auto model as OpenAI model objects (what a client may put in `model`)."""
        state = self.holder.state
        if state is None:
            return error_response(503, "router has no valid config yet", "not_ready")
        c = state.config
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "tiered", "tiered": {"kind": "auto"}}
                for m in [*c.auto_models, c.policy]]  # fmt: skip
        data += [{"id": t.name, "object": "model", "created": 0, "owned_by": "tiered",
                  "tiered": {"kind": "tier", "backend": t.kind.value, "model": t.model,
                             "capabilities": t.capabilities.model_dump(mode="json", by_alias=True)}}
                 for t in c.tiers]  # fmt: skip
        data += [{"id": r.name, "object": "model", "created": 0, "owned_by": "tiered",
                  "tiered": {"kind": "route", "tier": r.tier}} for r in c.routes]  # fmt: skip
        return json_response({"object": "list", "data": data})

    async def healthz(self, request: Request) -> StreamResponse:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> StreamResponse:
        holder = self.holder
        if holder.state is None:
            return json_response({"status": "not ready", "reason": holder.last_error or "no config"}, status=503)
        return json_response({"status": "ready", "config": holder.state.config_hash})

    async def metrics_text(self, request: Request) -> StreamResponse:
        body = generate_latest(self.metrics.registry)
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: Request) -> StreamResponse:
        """The OpenAPI document of this router, for the config it serves now (see openapi.py)."""
        state = self.holder.state
        return json_response(document(state.config if state is not None else None))

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks one) with the upstream pool and config watcher running; the bound port."""
        self.pool = UpstreamPool(keepalive_s=60.0)
        self.dispatcher = Dispatcher(self.pool, self.metrics)
        self.watcher = asyncio.create_task(self.holder.watch())
        self.server = Server(self.handle, max_body=HARD_BODY_CAP, max_connections=self.max_connections)
        addresses = await self.server.listen(host, port)
        return addresses[0][1]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening, let requests in flight finish (up to `timeout`), then close the pool and watcher."""
        if self.server is not None:
            await self.server.shutdown(timeout)
        if self.watcher is not None:
            self.watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watcher
        self.dispatcher = None
        if self.pool is not None:
            self.pool.close()


def build_service(
    config_path: Path,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    metrics: RouterMetrics | None = None,
    max_connections: int = 1000,
) -> RouterService:
    """The router; the config is loaded before the first request and watched once `start` runs."""
    m = metrics or RouterMetrics()
    holder = ConfigHolder(config_path, m, poll_seconds)
    holder.load_once()
    return RouterService(holder, m, max_connections)
