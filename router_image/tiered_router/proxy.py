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
import re
import time
from dataclasses import dataclass
from typing import Any

from tiered_http import Request, Response, StreamResponse

from .breaker import CircuitState
from .capability import upstream_gap
from .config import FallbackTrigger, TierConfig, TierKind
from .decision import Decision
from .errors import error_response
from .metrics import RouterMetrics
from .spillover import Cause, TierLoad, load_cause, retry_after_s, spill_cause
from .state import RouterState, Upstream
from .upstream_http import UpstreamConnectError, UpstreamPool, UpstreamProtocolError, UpstreamResponse

log = logging.getLogger("tiered_router")

# Hop-by-hop and length headers are the relay's business, not the upstream's. Content-Encoding passes through
# with the body it describes (the router asks for identity and relays bytes as they are).
_DROP_HEADERS = {
    "connection", "keep-alive", "transfer-encoding", "content-length", "server", "date",
    "proxy-authenticate", "proxy-authorization", "te", "trailer", "upgrade",
}  # fmt: skip


@dataclass
class AttemptFailure(Exception):
    """Why one upstream attempt failed (trigger decides whether the chain continues)."""

    trigger: FallbackTrigger | None  # None: not a fallback trigger (e.g. a protocol error mid-body)
    kind: str  # metric label: connect|timeout|5xx|protocol|circuit_open|capability
    detail: str
    response: Response | None = None  # the tier's own answer, relayed when no later tier serves the request
    retry_after: float | None = None  # the tier's Retry-After, seconds

    def load_cause(self) -> Cause | None:
        """Whether this failure says the (local) tier is busy or starting rather than broken."""
        if self.kind in ("saturated", "starting"):
            return Cause(self.kind)
        if self.kind in ("connect", "circuit_open"):
            return Cause.STARTING
        return None


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


_DECODER = json.JSONDecoder()
_KEY_GAP = re.compile(rb"\s*:\s*")


def usage_from_body(raw: bytes) -> Usage | None:
    """The top-level `usage` of a completion body without parsing the whole (possibly long) answer.

    OpenAI-compatible servers put `usage` last; a JSON string cannot hold an unescaped quote, so the last `"usage"`
    followed by a colon is a key. Only that object is decoded; anything unexpected falls back to a full parse.
    """
    at = raw.rfind(b'"usage"')
    if at < 0:
        return None
    gap = _KEY_GAP.match(raw, at + 7)
    if gap is not None and raw[gap.end() : gap.end() + 1] == b"{":
        try:
            obj, _ = _DECODER.raw_decode(raw[gap.end() :].decode())
        except ValueError:
            obj = None
        if isinstance(obj, dict) and raw.rstrip().endswith(b"}"):
            return _usage_from({"usage": obj})
    try:
        return _usage_from(json.loads(raw))
    except ValueError:
        return None


def _usage_from(obj: Any) -> Usage | None:
    if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
        u = obj["usage"]
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int):
            return Usage(p, c)
    return None


# A JSON string value: quotes with anything but a quote or backslash inside, or a backslash escape.
_MODEL_VALUE = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _upstream_bytes(body: dict[str, Any], raw: bytes | None, model: str) -> bytes:
    """The JSON sent to a tier: the client's bytes untouched when they already name the tier's model; with only the
    `model` value swapped when that value can be located in the bytes for certain; else the body re-serialised
    with `model` replaced. Every other field passes through either way."""
    if raw is not None:
        if body.get("model") == model:
            return raw
        # The swap is exact only when the bytes hold one `"model"` and it is the top-level key: with no \u escape
        # anywhere, a key that decodes to "model" is spelled `"model"`; a quote inside a string is always escaped,
        # so a second `"model"` (nested key, or a string value) shows in the count and falls back.
        if "model" in body and b"\\u" not in raw and raw.count(b'"model"') == 1:
            found = _MODEL_VALUE.search(raw)
            if found is not None:
                return b"".join((raw[: found.start()], b'"model":', json.dumps(model).encode(), raw[found.end() :]))
    return json.dumps({**body, "model": model}, separators=(",", ":")).encode()


class Dispatcher:
    """Sends a decided request to its chain of tiers and relays the answer."""

    def __init__(self, pool: UpstreamPool, metrics: RouterMetrics) -> None:
        self.pool = pool
        self.metrics = metrics
        self.loads: dict[tuple[str, str], TierLoad] = {}

    async def serve(
        self,
        request: Request,
        state: RouterState,
        decision: Decision,
        body: dict[str, Any],
        path: str,
        stream: bool,
        started: float,
        input_estimate: int,
        raw: bytes | None = None,
    ) -> StreamResponse:
        """Try each tier of the decision's chain; relay the first answer; OpenAI error when all fail (`_serve`).
        A request that waits for a busy local tier is counted on it until this returns."""
        waits: list[TierLoad] = []
        try:
            return await self._serve(request, state, decision, body, path, stream, started, input_estimate, raw, waits)
        finally:
            for load in waits:  # no longer waiting, whatever the outcome (cancellation included)
                load.waiting -= 1

    async def _serve(
        self,
        request: Request,
        state: RouterState,
        decision: Decision,
        body: dict[str, Any],
        path: str,
        stream: bool,
        started: float,
        input_estimate: int,
        raw: bytes | None,
        waits: list[TierLoad],
    ) -> StreamResponse:
        """Try each tier of the decision's chain; relay the first answer; OpenAI error when all fail.

        `raw` is the client's body exactly as received when `body` is unchanged (no redaction), so a tier whose
        model the client already named gets it without a re-serialisation. With spillover on, a local tier that is
        starting, saturated or over its SLO is passed over for `decision.spill` (spillover.py), or waited for when
        the request may not leave.
        """
        config = state.config
        triggers = config.fallback.on
        spillover_on = config.spillover.enabled
        wait_until = started + config.spillover.max_local_wait_ms / 1000
        failures: list[tuple[str, AttemptFailure]] = []
        previous: str | None = None
        reason = decision.reason.value
        route = decision.route or "none"
        accept = request.headers.get("Accept", "*/*")
        pending = list(decision.chain)
        spilled_from: str | None = None
        waited = False
        if spillover_on and decision.spill:
            chosen = pending[0]
            cause = spill_cause(state.upstreams[chosen].tier, self.load(state, chosen), time.monotonic())
            if cause is not None:
                pending = self._spill(decision, chosen, cause, config.fallback.retries)
                reason, spilled_from = cause.reason.value, chosen
        while pending:
            tier_name = pending.pop(0)
            upstream = state.upstreams[tier_name]
            breaker = upstream.breaker
            series = self.metrics.tier(tier_name)
            load_aware = spillover_on and upstream.tier.kind is TierKind.LOCAL
            if not breaker.allow():
                failure = AttemptFailure(FallbackTrigger.CONNECT, "circuit_open", "circuit open")
                series.circuit.set(breaker.state)
                if load_aware and await self._local_wait(decision, tier_name, failure, wait_until):
                    waited = self._waiting(state, tier_name, waits)
                    pending.insert(0, tier_name)
                    continue
                failures.append((tier_name, failure))
                continue
            if previous is not None and previous != tier_name:
                last = failures[-1][1]
                trigger = last.trigger.value if last.trigger else last.kind  # "capability": the tier could not serve it
                self.metrics.fallbacks_by(previous, tier_name, trigger).inc()
            previous = tier_name
            headers_out = {
                "x-tiered-tier": tier_name,
                "x-tiered-route": decision.route or "",
                "x-tiered-reason": reason,
            }
            if failures:
                headers_out["x-tiered-fallback-from"] = ",".join(n for n, _ in failures)
            if spilled_from is not None:
                headers_out["x-tiered-spilled-from"] = spilled_from
            data = _upstream_bytes(body, raw, upstream.tier.model)
            series.in_flight.inc()
            load = self.load(state, tier_name)
            ticket = load.start(time.monotonic())
            settled = False
            try:
                resp = await self._attempt(request, state, upstream, data, path, stream, accept, headers_out, started,
                                           route, input_estimate, load_aware)
            except AttemptFailure as failure:
                settled = True
                load.finish(ticket)
                cause = failure.load_cause() if load_aware else None
                if cause is not None:
                    if failure.kind != "connect":  # a load answer, not a fault: the breaker is not told
                        breaker.probe_in_flight = False
                    else:
                        breaker.record_failure()
                        series.circuit.set(breaker.state)
                    load.mark(cause, failure.retry_after, time.monotonic())
                    if decision.spill and tier_name == decision.chain[0] and spilled_from is None:
                        pending = self._spill(decision, tier_name, cause, config.fallback.retries)
                        reason, spilled_from = cause.reason.value, tier_name
                        failures.append((tier_name, failure))
                        continue
                    if await self._local_wait(decision, tier_name, failure, wait_until):
                        waited = self._waiting(state, tier_name, waits)
                        pending.insert(0, tier_name)
                        continue
                failures.append((tier_name, failure))
                if failure.kind == "capability":  # the tier works; it cannot serve this request: try the next
                    breaker.probe_in_flight = False
                    reason = failure.detail
                    continue
                if cause is not None:
                    break  # waited as long as allowed: its own answer (429 / 503) is relayed
                breaker.record_failure()
                series.circuit.set(breaker.state)
                self.metrics.upstream_errors_by(tier_name, failure.kind).inc()
                log.warning("tier %s failed (%s): %s", tier_name, failure.kind, failure.detail)
                if failure.trigger is None or failure.trigger not in triggers:
                    break
                continue
            finally:
                series.in_flight.dec()
                if not settled:
                    sent = load.finish(ticket)  # answered, or cancelled (client went away)
                    if breaker.probe_in_flight:
                        # cancelled or succeeded: never leave a half-open probe slot taken
                        breaker.probe_in_flight = False
            if resp.status < 400 and sent is not None:
                load.answered(sent, time.monotonic())
                if load.service_s is not None:
                    self.metrics.tier_service(tier_name).set(load.service_s)
            if breaker.failures or breaker.opened_at is not None:
                breaker.record_success()
                series.circuit.set(CircuitState.CLOSED)
            if waited:
                self.metrics.local_waits_by(tier_name, "served").inc()
            return resp
        if waited and failures:
            self.metrics.local_waits_by(failures[-1][0], "timed_out").inc()
        return self._exhausted(decision, failures, route)

    def load(self, state: RouterState, tier_name: str) -> TierLoad:
        """The load record of a tier (kept across config reloads while its name and URL stay the same)."""
        key = (tier_name, state.upstreams[tier_name].tier.base_url)
        load = self.loads.get(key)
        if load is None:
            load = self.loads[key] = TierLoad()
        return load

    def _waiting(self, state: RouterState, tier_name: str, waits: list[TierLoad]) -> bool:
        """The request waits for `tier_name` (counted once, until `serve` returns): requests that may leave spill
        from it meanwhile (spillover.spill_cause)."""
        if not waits:
            load = self.load(state, tier_name)
            load.waiting += 1
            waits.append(load)
        return True

    def _spill(self, decision: Decision, local: str, cause: Cause, retries: int) -> list[str]:
        """The chain a spilled request walks instead: the first tier of `decision.spill`, then its fallbacks."""
        chain = list(decision.spill[: 1 + retries])
        self.metrics.spillovers_by(local, chain[0], cause.value).inc()
        return chain

    async def _local_wait(self, decision: Decision, tier_name: str, failure: AttemptFailure,
                          wait_until: float) -> bool:
        """For a request that stays on a busy or starting local tier: sleep until it may be retried, while the
        wait bound allows (False: give up now)."""
        remaining = wait_until - time.perf_counter()
        if remaining <= 0 or tier_name != decision.chain[0]:
            return False
        pause = failure.retry_after if failure.retry_after is not None else 0.2
        await asyncio.sleep(max(0.05, min(remaining, pause, 1.0)))
        return True

    def _exhausted(self, decision: Decision, failures: list[tuple[str, AttemptFailure]], route: str) -> Response:
        tier = failures[-1][0] if failures else (decision.tier or "none")
        last = failures[-1][1] if failures else None
        if last is not None and last.response is not None:  # the last tier's own answer (400 why, 429/503 busy)
            self.metrics.requests_by(tier, route, "upstream_4xx" if last.kind == "capability" else "local_busy").inc()
            return last.response
        self.metrics.requests_by(tier, route, "failed").inc()
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
        request: Request,
        state: RouterState,
        up: Upstream,
        data: bytes,
        path: str,
        stream: bool,
        accept: str,
        headers_out: dict[str, str],
        started: float,
        route: str,
        input_estimate: int,
        load_aware: bool = False,
    ) -> StreamResponse:
        tier = up.tier
        loop = asyncio.get_running_loop()
        deadline = loop.time() + up.total_s  # totalMs bounds the whole attempt, body or stream included
        first_byte_s = up.first_byte_s
        endpoint = up.chat if path == "/chat/completions" else up.completions
        try:
            upstream = await self.pool.post(
                endpoint, data, accept, up.connect_s, min(loop.time() + first_byte_s, deadline)
            )
        except TimeoutError:
            raise AttemptFailure(
                FallbackTrigger.TIMEOUT, "timeout", f"no response within {first_byte_s:.3g}s"
            ) from None
        except UpstreamConnectError as exc:
            raise AttemptFailure(FallbackTrigger.CONNECT, "connect", str(exc)) from None
        async with upstream:
            if load_aware and upstream.status in (429, 503):
                await self._load_answer(upstream, headers_out, deadline)
            if upstream.status >= 500:
                raise AttemptFailure(FallbackTrigger.SERVER_ERROR, "5xx", f"HTTP {upstream.status}")
            if stream and upstream.status == 200:
                return await self._relay_stream(
                    request, state, upstream, tier, headers_out, started, route, input_estimate, first_byte_s, deadline
                )
            try:
                raw = upstream.read_nowait()  # already complete: no timer needed
                if raw is None:
                    raw = await upstream.read(deadline)
            except TimeoutError:
                raise AttemptFailure(FallbackTrigger.TIMEOUT, "timeout", "body not complete within totalMs") from None
            except UpstreamProtocolError as exc:
                raise AttemptFailure(FallbackTrigger.CONNECT, "protocol", str(exc)) from None
        elapsed = time.perf_counter() - started
        headers = {k: v for k, v in upstream.headers if k.lower() not in _DROP_HEADERS}
        headers.update(headers_out)
        gap = upstream_gap(upstream.status, raw) if upstream.status == 400 else None
        if gap is not None:
            raise AttemptFailure(None, "capability", gap, Response(status=400, body=raw, headers=headers))
        # Accounted (usage read from the body, metrics) right after the answer is written, not before.
        loop.call_soon(self._account_body, state, tier, route, upstream.status, elapsed, raw, input_estimate)
        return Response(status=upstream.status, body=raw, headers=headers)

    async def _load_answer(self, upstream: UpstreamResponse, headers_out: dict[str, str], deadline: float) -> None:
        """Raise AttemptFailure(saturated|starting) when a 429 or 503 says the local tier is busy or starting."""
        try:
            raw = upstream.read_nowait()
            if raw is None:
                raw = await upstream.read(deadline)
        except (TimeoutError, UpstreamProtocolError):
            return
        code: str | None = None
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            code = json.loads(raw)["error"].get("code")
        cause = load_cause(upstream.status, code if isinstance(code, str) else None)
        if cause is None:
            return
        headers = {k: v for k, v in upstream.headers if k.lower() not in _DROP_HEADERS}
        headers.update(headers_out)
        retry_after = retry_after_s(upstream.header("retry-after"))
        raise AttemptFailure(None, cause.value, f"HTTP {upstream.status} {code}",
                             Response(status=upstream.status, body=raw, headers=headers), retry_after)

    def _account_body(self, state: RouterState, tier: TierConfig, route: str, status: int, elapsed: float,
                      raw: bytes, input_estimate: int) -> None:  # fmt: skip
        ok = status < 400
        usage = usage_from_body(raw) if ok else None
        self._account(state, tier, route, "success" if ok else "upstream_4xx", elapsed, elapsed, usage, input_estimate)

    async def _relay_stream(
        self,
        request: Request,
        state: RouterState,
        upstream: UpstreamResponse,
        tier: TierConfig,
        headers_out: dict[str, str],
        started: float,
        route: str,
        input_estimate: int,
        first_byte_s: float,
        deadline: float,
    ) -> StreamResponse:
        loop = asyncio.get_running_loop()
        try:
            first = await upstream.read_any(min(loop.time() + first_byte_s, deadline))
        except TimeoutError:
            raise AttemptFailure(FallbackTrigger.TIMEOUT, "timeout", "no stream data in time") from None
        except UpstreamProtocolError as exc:
            raise AttemptFailure(FallbackTrigger.CONNECT, "protocol", str(exc)) from None
        if not first:
            raise AttemptFailure(FallbackTrigger.SERVER_ERROR, "protocol", "empty stream")
        resp = StreamResponse(status=200)
        resp.content_type = (
            upstream.content_type if upstream.content_type != "application/octet-stream" else ("text/event-stream")
        )
        resp.headers["Cache-Control"] = "no-cache"
        encoding = upstream.header("content-encoding")
        if encoding:
            resp.headers["Content-Encoding"] = encoding
        resp.headers.update(headers_out)
        await resp.prepare(request)
        await resp.write(first)
        ttft = time.perf_counter() - started
        tracker = _SseUsage()
        tracker.feed(first)
        outcome = "success"
        try:
            while True:
                chunk = await upstream.read_any(deadline)  # upstream failures raise here ...
                if not chunk:
                    break
                tracker.feed(chunk)
                try:
                    await resp.write(chunk)  # ... client disconnects here
                except ConnectionResetError:
                    outcome = "client_closed"
                    break
        except (UpstreamProtocolError, TimeoutError) as exc:
            outcome = "aborted"
            self.metrics.upstream_errors_by(tier.name, "protocol").inc()
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
        self.metrics.requests_by(tier.name, route, outcome).inc()
        series = self.metrics.tier(tier.name)
        series.latency.observe(elapsed)
        series.ttft.observe(ttft)
        if usage is None:
            usage = Usage(input_estimate, 0)
        series.tokens_in.inc(usage.prompt_tokens)
        series.tokens_out.inc(usage.completion_tokens)
        cost = (
            usage.prompt_tokens * tier.pricing.input_per_1m + usage.completion_tokens * tier.pricing.output_per_1m
        ) / 1e6
        series.cost.inc(cost)
        if state is not None:
            pin, pout = state.max_price
            worst = (usage.prompt_tokens * pin + usage.completion_tokens * pout) / 1e6
            series.avoided.inc(max(0.0, worst - cost))


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
