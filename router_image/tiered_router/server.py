"""The HTTP layer: aiohttp handlers that parse, call the pure decision pipeline, and hand off to the dispatcher.

Handlers stay thin on purpose (see docs/router.md): everything that decides lives in decision.py and is tested
without sockets; everything that talks to upstreams lives in proxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

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

HOLDER = web.AppKey("holder", ConfigHolder)
METRICS = web.AppKey("metrics", RouterMetrics)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
HARD_BODY_CAP = 64 * 1024 * 1024  # aiohttp's own cap; the configured (smaller) limit is enforced per request


INLINE_DECISION_S = 0.0005  # decisions cheaper than this on average run on the event loop (see _decide)
_THREAD_TOKENS = 2048  # prompts at least this long always go to the worker thread when the encoder is neural


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` (checked on Content-Length and while reading)."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    try:
        if length is not None and "Content-Encoding" not in request.headers:
            # The common case: one read of exactly Content-Length bytes. A compressed body is decoded while read,
            # so its decoded size is only known by counting (below).
            body = await request.read()
            return body if len(body) <= limit else None
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    except (HttpProcessingError, RequestPayloadError) as exc:  # e.g. a Content-Encoding the body does not match
        detail = exc.message if isinstance(exc, HttpProcessingError) else str(exc).split("message:", 1)[-1]
        raise BadRequest(f"request body cannot be decoded: {detail.strip()}") from None
    except ConnectionResetError:  # the client left before sending the whole body; nobody reads the answer
        raise BadRequest("the connection closed before the request body was complete") from None
    return b"".join(chunks)


def _decision_headers(decision: Decision) -> dict[str, str]:
    return {
        "x-tiered-tier": decision.tier or "",
        "x-tiered-route": decision.route or "",
        "x-tiered-reason": decision.reason.value,
    }


async def _decide(state: RouterState, routing: RoutingRequest) -> Decision:
    """Run the pipeline inline when it is cheap; hop to a worker thread only for an expensive neural encoder.

    A thread hop costs tens of microseconds and a GIL hand-over, more than a lexical or small-encoder decision
    itself; a neural encoder that takes milliseconds (numpy releases the GIL) must not stall the loop instead.
    The running average `state.decision_cost_s` tells the two apart without knowing the encoder.
    """
    t0 = time.perf_counter()
    if state.classifier.encoder.dim > 0 and (
        state.decision_cost_s > INLINE_DECISION_S or routing.input_tokens >= _THREAD_TOKENS
    ):
        decision = await asyncio.to_thread(decide, state.config, state.classifier, routing)
    else:
        decision = decide(state.config, state.classifier, routing)
    spent = time.perf_counter() - t0
    state.decision_cost_s = 0.9 * state.decision_cost_s + 0.1 * spent
    return decision


async def _completion(app: web.Application, request: web.Request, kind: str, path: str) -> web.StreamResponse:
    started = time.perf_counter()
    state = app[HOLDER].state
    if state is None:
        return error_response(503, "router has no valid config yet", "not_ready")
    metrics = app[METRICS]
    config = state.config
    try:
        raw = await _read_body(request, config.max_body_bytes)
    except BadRequest as exc:
        response = error_response(400, str(exc), "invalid_request")
        response.force_close()  # the rest of the body is unread: the connection cannot carry another request
        return response
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
    routing = RoutingRequest(
        text=parsed.pii_text or parsed.text,
        model=parsed.model,
        pinned_tier=request.headers.get(config.override.header),
        input_tokens=estimate_tokens(parsed.text),
        route_text=classification_text(parsed),
    )
    t0 = time.perf_counter()
    decision = await _decide(state, routing)
    metrics.decision_latency.observe(time.perf_counter() - t0)
    metrics.decisions_by(decision.reason.value, decision.tier or "none").inc()
    if decision.pii:
        action = config.residency.pii.action.value
        for entity in decision.pii:
            metrics.pii_by(entity, action).inc()
    if decision.rejected:
        metrics.requests_by("none", decision.route or "none", "rejected").inc()
        return error_response(
            decision.status, decision.message, decision.reason.value, headers=_decision_headers(decision)
        )
    body = parsed.body
    if decision.redact:
        entities = config.residency.pii.entities
        body = redact_body(parsed, lambda s: redact(s, scan(s, entities)))
    return await app[DISPATCHER].serve(
        request,
        state,
        decision,
        body,
        path,
        parsed.stream,
        started,
        routing.input_tokens,
        raw=None if decision.redact else raw,
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request.app, request, "chat", "/chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request.app, request, "completion", "/completions")


async def models(request: web.Request) -> web.Response:
    """Tiers, routes and the auto model as OpenAI model objects (what a client may put in `model`)."""
    state = request.app[HOLDER].state
    if state is None:
        return error_response(503, "router has no valid config yet", "not_ready")
    c = state.config
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "tiered", "tiered": {"kind": "auto"}}
            for m in [*c.auto_models, c.policy]]  # fmt: skip
    data += [{"id": t.name, "object": "model", "created": 0, "owned_by": "tiered",
              "tiered": {"kind": "tier", "backend": t.kind.value, "model": t.model}} for t in c.tiers]  # fmt: skip
    data += [{"id": r.name, "object": "model", "created": 0, "owned_by": "tiered",
              "tiered": {"kind": "route", "tier": r.tier}} for r in c.routes]  # fmt: skip
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    holder = request.app[HOLDER]
    if holder.state is None:
        return web.json_response({"status": "not ready", "reason": holder.last_error or "no config"}, status=503)
    return web.json_response({"status": "ready", "config": holder.state.config_hash})


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_handler(request: web.Request) -> web.Response:
    """The OpenAPI document of this router, for the config it serves now (see openapi.py)."""
    state = request.app[HOLDER].state
    return web.json_response(document(state.config if state is not None else None))


@web.middleware
async def openai_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error leaves as OpenAI-shaped JSON: unknown paths, wrong methods, and anything unexpected (no traces)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        allow = exc.headers.get("Allow")  # a 405 must say which methods the path takes (RFC 9110 15.5.6)
        return error_response(exc.status, exc.reason, code, headers={"Allow": allow} if allow else None)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal router error", "internal_error")


def build_app(config_path: Path, poll_seconds: float = 1.0, metrics: RouterMetrics | None = None) -> web.Application:
    """The router application; the config is loaded before the first request and watched afterwards."""
    app = web.Application(middlewares=[openai_errors], client_max_size=HARD_BODY_CAP)
    m = metrics or RouterMetrics()
    holder = ConfigHolder(config_path, m, poll_seconds)
    holder.load_once()
    app[METRICS] = m
    app[HOLDER] = holder

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        pool = UpstreamPool(keepalive_s=60.0)
        app[DISPATCHER] = Dispatcher(pool, m)
        watcher = asyncio.create_task(holder.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        pool.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    return app
