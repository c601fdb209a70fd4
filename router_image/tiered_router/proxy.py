"""Dispatch to upstream tiers: pooled keep-alive HTTP, per-tier timeouts, fallback, breaker, streaming relay.

Fallback is only possible until the first byte has been sent to the client: for streams the response is held
until the upstream's first chunk arrives, so an upstream that accepts the connection and then fails or stalls
before producing anything still falls back. After that, a failure ends the stream (an SSE error event, then close).
The chain walked here comes from the decision and already excludes every tier residency forbids.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .breaker import CircuitState
from .config import FallbackTrigger, TierConfig
from .decision import Decision
from .errors import error_response
from .metrics import RouterMetrics
from .state import RouterState, breaker_for

log = logging.getLogger("tiered_router")

# Hop-by-hop and length headers are the relay's business, not the upstream's.
_DROP_HEADERS = {
    "connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "server", "date",
    "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade",
}  # fmt: skip


@dataclass
class AttemptFailure(Exception):
    """Why one upstream attempt failed (trigger decides whether the chain continues)."""

    trigger: FallbackTrigger | None  # None: not a fallback trigger (e.g. a protocol error mid-body)
    kind: str  # metric label: connect|timeout|5xx|protocol|circuit_open
    detail: str


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _usage_from(obj: Any) -> Usage | None:
    if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
        u = obj["usage"]
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int):
            return Usage(p, c)
    return None


class Dispatcher:
    """Sends a decided request to its chain of tiers and relays the answer."""

    def __init__(self, session: aiohttp.ClientSession, metrics: RouterMetrics) -> None:
        self.session = session
        self.metrics = metrics

    def _headers(self, state: RouterState, tier: TierConfig, request: web.Request) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": request.headers.get("Accept", "*/*")}
        key = state.api_keys.get(tier.name)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def serve(
        self,
        request: web.Request,
        state: RouterState,
        decision: Decision,
        body: dict[str, Any],
        path: str,
        stream: bool,
        started: float,
        input_estimate: int,
    ) -> web.StreamResponse:
        """Try each tier of the decision's chain; relay the first answer; OpenAI error when all fail."""
        config = state.config
        triggers = set(config.fallback.on)
        failures: list[tuple[str, AttemptFailure]] = []
        previous: str | None = None
        route = decision.route or "none"
        for tier_name in decision.chain:
            tier = config.tier(tier_name)
            assert tier is not None
            breaker = breaker_for(state, tier)
            if not breaker.allow():
                failures.append((tier_name, AttemptFailure(FallbackTrigger.CONNECT, "circuit_open", "circuit open")))
                self.metrics.circuit.labels(tier_name).set(breaker.state)
                continue
            if previous is not None:
                last = failures[-1][1]
                self.metrics.fallbacks.labels(previous, tier_name, last.trigger.value if last.trigger else "none").inc()
            previous = tier_name
            upstream_body = {**body, "model": tier.model}
            headers_out = {
                "x-tiered-tier": tier_name,
                "x-tiered-route": decision.route or "",
                "x-tiered-reason": decision.reason.value,
            }
            if failures:
                headers_out["x-tiered-fallback-from"] = ",".join(n for n, _ in failures)
            self.metrics.in_flight.labels(tier_name).inc()
            settled = False
            try:
                resp = await self._attempt(
                    request, state, tier, upstream_body, path, stream, headers_out, started, route, input_estimate
                )
            except AttemptFailure as failure:
                settled = True
                breaker.record_failure()
                self.metrics.circuit.labels(tier_name).set(breaker.state)
                self.metrics.upstream_errors.labels(tier_name, failure.kind).inc()
                log.warning("tier %s failed (%s): %s", tier_name, failure.kind, failure.detail)
                failures.append((tier_name, failure))
                if failure.trigger is None or failure.trigger not in triggers:
                    break
                continue
            finally:
                self.metrics.in_flight.labels(tier_name).dec()
                if not settled and breaker.probe_in_flight:
                    # cancelled (client went away) or succeeded: never leave a half-open probe slot taken
                    breaker.probe_in_flight = False
            breaker.record_success()
            self.metrics.circuit.labels(tier_name).set(CircuitState.CLOSED)
            return resp
        return self._exhausted(decision, failures, route)

    def _exhausted(self, decision: Decision, failures: list[tuple[str, AttemptFailure]], route: str) -> web.Response:
        tier = failures[-1][0] if failures else (decision.tier or "none")
        self.metrics.requests.labels(tier, route, "failed").inc()
        kinds = {f.kind for _, f in failures}
        summary = "; ".join(f"{name}: {f.kind} ({f.detail})" for name, f in failures)
        if kinds <= {"timeout"}:
            status, code = 504, "upstream_timeout"
        elif kinds <= {"circuit_open", "connect"}:
            status, code = 503, "upstream_unavailable"
        else:
            status, code = 502, "upstream_error"
        return error_response(
            status,
            f"no allowed tier could serve the request: {summary}",
            code,
            headers={
                "x-tiered-tier": tier,
                "x-tiered-route": decision.route or "",
                "x-tiered-reason": decision.reason.value,
            },
        )

    async def _attempt(
        self,
        request: web.Request,
        state: RouterState,
        tier: TierConfig,
        body: dict[str, Any],
        path: str,
        stream: bool,
        headers_out: dict[str, str],
        started: float,
        route: str,
        input_estimate: int,
    ) -> web.StreamResponse:
        cfg = state.config
        t = tier.timeouts
        first_byte_s = (cfg.fallback.timeout_ms or t.first_byte_ms) / 1000
        timeout = aiohttp.ClientTimeout(total=t.total_ms / 1000, sock_connect=t.connect_ms / 1000)
        url = tier.base_url + path
        try:
            upstream = await asyncio.wait_for(
                self.session.post(
                    url, data=json.dumps(body), headers=self._headers(state, tier, request), timeout=timeout
                ),
                first_byte_s,
            )
        except TimeoutError:
            raise AttemptFailure(
                FallbackTrigger.TIMEOUT, "timeout", f"no response within {first_byte_s:.3g}s"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise AttemptFailure(FallbackTrigger.CONNECT, "connect", type(exc).__name__) from None
        except aiohttp.ClientError as exc:
            raise AttemptFailure(FallbackTrigger.CONNECT, "connect", type(exc).__name__) from None
        async with upstream:
            if upstream.status >= 500:
                raise AttemptFailure(FallbackTrigger.SERVER_ERROR, "5xx", f"HTTP {upstream.status}")
            if stream and upstream.status == 200:
                return await self._relay_stream(
                    request, state, upstream, tier, headers_out, started, route, input_estimate, first_byte_s
                )
            try:
                raw = await upstream.read()
            except TimeoutError:
                raise AttemptFailure(FallbackTrigger.TIMEOUT, "timeout", "body not complete within totalMs") from None
            except aiohttp.ClientError as exc:
                raise AttemptFailure(FallbackTrigger.CONNECT, "protocol", type(exc).__name__) from None
        elapsed = time.perf_counter() - started
        outcome = "success" if upstream.status < 400 else "upstream_4xx"
        usage = None
        if upstream.status < 400:
            try:
                usage = _usage_from(json.loads(raw))
            except ValueError:
                usage = None
        self._account(state, tier, route, outcome, elapsed, elapsed, usage, input_estimate)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_HEADERS}
        headers.update(headers_out)
        return web.Response(status=upstream.status, body=raw, headers=headers)

    async def _relay_stream(
        self,
        request: web.Request,
        state: RouterState,
        upstream: aiohttp.ClientResponse,
        tier: TierConfig,
        headers_out: dict[str, str],
        started: float,
        route: str,
        input_estimate: int,
        first_byte_s: float,
    ) -> web.StreamResponse:
        chunks = upstream.content.iter_any()
        try:
            first = await asyncio.wait_for(chunks.__anext__(), first_byte_s)
        except StopAsyncIteration:
            raise AttemptFailure(FallbackTrigger.SERVER_ERROR, "protocol", "empty stream") from None
        except TimeoutError:
            raise AttemptFailure(FallbackTrigger.TIMEOUT, "timeout", "no stream data in time") from None
        except aiohttp.ClientError as exc:
            raise AttemptFailure(FallbackTrigger.CONNECT, "protocol", type(exc).__name__) from None
        resp = web.StreamResponse(status=200)
        resp.content_type = (
            upstream.content_type if upstream.content_type != "application/octet-stream" else ("text/event-stream")
        )
        resp.headers["Cache-Control"] = "no-cache"
        resp.headers.update(headers_out)
        await resp.prepare(request)
        await resp.write(first)
        ttft = time.perf_counter() - started
        tracker = _SseUsage()
        tracker.feed(first)
        outcome = "success"
        try:
            async for chunk in chunks:  # upstream failures raise here ...
                tracker.feed(chunk)
                try:
                    await resp.write(chunk)  # ... client disconnects here
                except ConnectionResetError:
                    outcome = "client_closed"
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = "aborted"
            self.metrics.upstream_errors.labels(tier.name, "protocol").inc()
            err = {"error": {"message": f"upstream stream broke: {type(exc).__name__}", "type": "api_error",
                             "param": None, "code": "upstream_stream_error"}}  # fmt: skip
            with contextlib.suppress(ConnectionResetError):
                await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
        elapsed = time.perf_counter() - started
        self._account(state, tier, route, outcome, elapsed, ttft, tracker.usage(input_estimate), input_estimate)
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    def _account(
        self,
        state: RouterState | None,
        tier: TierConfig,
        route: str,
        outcome: str,
        elapsed: float,
        ttft: float,
        usage: Usage | None,
        input_estimate: int,
    ) -> None:
        m = self.metrics
        m.requests.labels(tier.name, route, outcome).inc()
        m.latency.labels(tier.name).observe(elapsed)
        m.ttft.labels(tier.name).observe(ttft)
        if usage is None:
            usage = Usage(input_estimate, 0)
        m.tokens.labels(tier.name, "in").inc(usage.prompt_tokens)
        m.tokens.labels(tier.name, "out").inc(usage.completion_tokens)
        cost = (
            usage.prompt_tokens * tier.pricing.input_per_1m + usage.completion_tokens * tier.pricing.output_per_1m
        ) / 1e6
        m.cost.labels(tier.name).inc(cost)
        if state is not None:
            pin, pout = state.max_price
            worst = (usage.prompt_tokens * pin + usage.completion_tokens * pout) / 1e6
            m.avoided.labels(tier.name).inc(max(0.0, worst - cost))


class _SseUsage:
    """Follows an SSE stream for a final `usage` object; counts content events when the upstream sends none."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events = 0
        self.found: Usage | None = None

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in self.buffer:
            event, self.buffer = self.buffer.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    continue
                self.events += 1
                if b'"usage"' in data:
                    try:
                        u = _usage_from(json.loads(data))
                    except ValueError:
                        u = None
                    if u is not None:
                        self.found = u

    def usage(self, input_estimate: int) -> Usage:
        return self.found or Usage(input_estimate, self.events)
