"""The HTTP layer: one request handler that dispatches on path and method, parses, calls the pure decision
pipeline, and hands off to the dispatcher.

Handlers stay thin on purpose (see docs/router.md): everything that decides lives in decision.py and is tested
without sockets; everything that talks to upstreams lives in proxy.py. The router serves seven fixed paths, so
`RouterService.handle` looks the path up in one dict and shapes every error itself (OpenAI JSON, no traces)
instead of going through aiohttp's URL dispatcher and an error middleware: the same answers for less work per
request (docs/router.md "The request path").
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
HARD_BODY_CAP = 64 * 1024 * 1024  # aiohttp's own cap; the configured (smaller) limit is enforced per request


INLINE_DECISION_S = 0.0005  # decisions cheaper than this on average run on the event loop (see _decide)
_THREAD_TOKENS = 2048  # prompts at least this long always go to the worker thread when the encoder is neural

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
_ERROR_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


async def _read_body(request: web.BaseRequest, limit: int) -> bytes | None:
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


async def _decide(state: RouterState, routing: RoutingRequest) -> tuple[Decision, float]:
    """The decision and the seconds it took. Inline on the loop when cheap; a worker thread only for an expensive
    neural encoder.

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
    return decision, spent


class RouterService:
    """Everything one router process serves, behind a single aiohttp handler (`handle`)."""

    def __init__(self, holder: ConfigHolder, metrics: RouterMetrics) -> None:
        self.holder = holder
        self.metrics = metrics
        self.dispatcher: Dispatcher | None = None  # set while running (it owns the upstream pool)
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

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
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
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason, _ERROR_CODES.get(exc.status, "http_error"))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal router error", "internal_error")

    async def chat_completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._completion(request, "chat", "/chat/completions")

    async def completions(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._completion(request, "completion", "/completions")

    async def _completion(self, request: web.BaseRequest, kind: str, path: str) -> web.StreamResponse:
        started = time.perf_counter()
        state = self.holder.state
        dispatcher = self.dispatcher
        if state is None or dispatcher is None:
            return error_response(503, "router has no valid config yet", "not_ready")
        metrics = self.metrics
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
        input_tokens = estimate_tokens(parsed.text)
        routing = RoutingRequest(
            text=parsed.pii_text or parsed.text,
            model=parsed.model,
            pinned_tier=request.headers.get(config.override.header),
            input_tokens=input_tokens,
            route_text=classification_text(parsed),
        )
        decision, spent = await _decide(state, routing)
        metrics.decision_latency.observe(spent)
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
        return await dispatcher.serve(
            request,
            state,
            decision,
            body,
            path,
            parsed.stream,
            started,
            input_tokens,
            raw=None if decision.redact else raw,
        )

    async def models(self, request: web.BaseRequest) -> web.StreamResponse:
        """Tiers, routes and the auto model as OpenAI model objects (what a client may put in `model`)."""
        state = self.holder.state
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

    async def healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        holder = self.holder
        if holder.state is None:
            return web.json_response({"status": "not ready", "reason": holder.last_error or "no config"}, status=503)
        return web.json_response({"status": "ready", "config": holder.state.config_hash})

    async def metrics_text(self, request: web.BaseRequest) -> web.StreamResponse:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.BaseRequest) -> web.StreamResponse:
        """The OpenAPI document of this router, for the config it serves now (see openapi.py)."""
        state = self.holder.state
        return web.json_response(document(state.config if state is not None else None))

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """Upstream pool and config watcher, for as long as the application runs (aiohttp cleanup context)."""
        pool = UpstreamPool(keepalive_s=60.0)
        self.dispatcher = Dispatcher(pool, self.metrics)
        watcher = asyncio.create_task(self.holder.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        self.dispatcher = None
        pool.close()


def build_app(config_path: Path, poll_seconds: float = 1.0, metrics: RouterMetrics | None = None) -> web.Application:
    """The router application; the config is loaded before the first request and watched afterwards.

    Every request goes to `RouterService.handle`, which dispatches on path and method itself. The served paths are
    registered as plain routes too, only because aiohttp finds those by a dict lookup, before any pattern.
    """
    app = web.Application(client_max_size=HARD_BODY_CAP)
    m = metrics or RouterMetrics()
    holder = ConfigHolder(config_path, m, poll_seconds)
    holder.load_once()
    service = RouterService(holder, m)
    app[METRICS] = m
    app[HOLDER] = holder
    app.cleanup_ctx.append(service.lifecycle)
    for path in service.routes:
        app.router.add_route("*", path, service.handle)
    app.router.add_route("*", "/{path:.*}", service.handle)  # unknown paths: `handle` answers 404
    return app
