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

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .decision import Decision, RoutingRequest, decide, estimate_tokens
from .errors import error_response
from .metrics import RouterMetrics
from .pii import redact, scan
from .proxy import Dispatcher
from .request import BadRequest, classification_text, parse_body, redact_body
from .state import ConfigHolder

log = logging.getLogger("tiered_router")

HOLDER = web.AppKey("holder", ConfigHolder)
METRICS = web.AppKey("metrics", RouterMetrics)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
HARD_BODY_CAP = 64 * 1024 * 1024  # aiohttp's own cap; the configured (smaller) limit is enforced per request


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds `limit` (checked on Content-Length and while reading)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    try:
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


async def _completion(request: web.Request, kind: str, path: str) -> web.StreamResponse:
    started = time.perf_counter()
    holder = request.app[HOLDER]
    metrics = request.app[METRICS]
    state = holder.state
    if state is None:
        return error_response(503, "router has no valid config yet", "not_ready")
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
    pinned = request.headers.get(config.override.header)
    routing = RoutingRequest(
        text=parsed.pii_text or parsed.text,
        model=parsed.model,
        pinned_tier=pinned,
        input_tokens=estimate_tokens(parsed.text),
        route_text=classification_text(parsed),
    )
    t0 = time.perf_counter()
    if state.classifier.encoder.dim > 0:
        # A neural encoder costs milliseconds; numpy releases the GIL, so a worker thread keeps the loop serving.
        decision = await asyncio.to_thread(decide, config, state.classifier, routing)
    else:
        decision = decide(config, state.classifier, routing)
    metrics.decision_latency.observe(time.perf_counter() - t0)
    metrics.decisions.labels(decision.reason.value, decision.tier or "none").inc()
    for entity in decision.pii:
        metrics.pii.labels(entity, config.residency.pii.action.value).inc()
    if decision.rejected:
        metrics.requests.labels("none", decision.route or "none", "rejected").inc()
        return error_response(
            decision.status, decision.message, decision.reason.value, headers=_decision_headers(decision)
        )
    body = parsed.body
    if decision.redact:
        entities = config.residency.pii.entities
        body = redact_body(parsed, lambda s: redact(s, scan(s, entities)))
    return await request.app[DISPATCHER].serve(
        request, state, decision, body, path, parsed.stream, started, routing.input_tokens
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, "chat", "/chat/completions")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, "completion", "/completions")


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
        return error_response(exc.status, exc.reason, code)
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
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60, enable_cleanup_closed=True)
        session = aiohttp.ClientSession(connector=connector)
        app[DISPATCHER] = Dispatcher(session, m)
        watcher = asyncio.create_task(holder.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await session.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    return app
