"""The HTTP face of the SLM: OpenAI endpoints, probes and metrics on tiered_http's server (tiered_http:
an asyncio protocol with httptools' parser, shared with the router).

The handlers are thin: validate (openai_api), admit (admission), hand the job to the model's worker thread
(engine), and relay events. The process serves /healthz from the first second so a long model fetch or load
does not look like a hung container; /readyz turns 200 only after load and warm-up, and back to 503 on drain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tiered_http import HTTPError, Request, Response, Server, StreamResponse, json_response
from tiered_slm.admission import Admission, Draining, QueueFull
from tiered_slm.engine import Engine, Finished, GenerationJob, TextDelta, TokenChannel
from tiered_slm.metrics import SlmMetrics
from tiered_slm.model import ModelReport
from tiered_slm.openai_api import (
    ApiError,
    ChatRequest,
    CompletionRequest,
    DeltaEncoder,
    ResponseIds,
    chat_body,
    chat_chunk,
    completion_body,
    completion_budget,
    completion_chunk,
    parse_request,
    public_finish_reason,
    sampling_params,
    sse,
    usage_chunk,
)
from tiered_slm.structured import FormatCache, OutputFormat, OutputInvalid, SchemaInvalid, SchemaNotSupported

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[StreamResponse]]
_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")


INLINE_TOKENIZE_CHARS = 8192
COLLECT_POLL_S = 0.2
MAX_BODY = 8 << 20  # request bodies over 8 MiB are refused (413)
DEFAULT_STREAM_INTERVAL_S = 0.02  # --stream-interval-ms 20: see TokenChannel and docs/slm.md
CAPABILITIES = {"tools": False, "logprobs": False, "responseFormat": ["text", "json_object", "json_schema"]}
"""What this server serves, reported in /v1/models (the operator renders the same for the router's capability
routing: docs/router.md)."""


async def off_loop_if_long(function: Callable[[_Arg], _Result], argument: _Arg, size: int | None = None) -> _Result:
    """Run tokenization inline for ordinary prompts, on a thread for long ones.

    A thread hop costs a few hundred microseconds of time to first token; tokenizing 8 KB takes well under a
    millisecond, so only longer prompts are worth moving off the event loop.
    """
    length = size if size is not None else len(argument) if isinstance(argument, str) else 0
    if length <= INLINE_TOKENIZE_CHARS:
        return function(argument)
    return await asyncio.to_thread(function, argument)


class SlmServer:
    """State shared by the handlers: the engine (once loaded), admission, metrics, drain flag."""

    def __init__(self, *, queue_size: int = 16, metrics: SlmMetrics | None = None,
                 stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S) -> None:
        self.metrics = metrics or SlmMetrics()
        self.stream_interval_s = stream_interval_s
        self.admission = Admission(capacity=queue_size, workers=1)
        self.engine: Engine | None = None
        self.report: ModelReport | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-worker")
        self.metrics.queue_depth.set_function(lambda: self.admission.waiting)
        self.metrics.in_flight.set_function(lambda: self.admission.running)
        self.metrics.ready.set_function(lambda: 1.0 if self.is_ready() else 0.0)
        self.http: Server | None = None
        self.formats = FormatCache()
        self._routes = self.routes()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def attach(self, engine: Engine, report: ModelReport) -> None:
        """Start serving ``engine`` (already warmed up)."""
        self.engine, self.report = engine, report
        self.metrics.model_info.labels(model=report.model_id, quantization=report.quantization,
                                       speculative=report.speculative).set(1)
        self.metrics.model_size.set(report.size_bytes)
        self.metrics.model_load.set(report.load_seconds)
        if engine.proposer is not None:
            self.metrics.watch_speculation(engine.proposer, report.speculative)

    def is_ready(self) -> bool:
        return self.engine is not None and not self.admission.draining

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new work and wait for admitted requests; False when they outlived ``timeout_s``."""
        self.admission.start_draining()
        snapshot = self.admission.snapshot()
        log.info("draining: %d running, %d waiting; new requests get 503", snapshot.running, snapshot.waiting)
        finished = await self.admission.wait_idle(timeout_s)
        if not finished:
            log.warning("drain timeout after %.1fs with requests still running", timeout_s)
        return finished

    def close(self) -> None:
        self.worker.shutdown(wait=False, cancel_futures=True)

    # -- application -------------------------------------------------------------------------------------
    def routes(self) -> dict[str, dict[str, Handler]]:
        gets: dict[str, Handler] = {"/v1/models": self.models, "/healthz": self.healthz, "/readyz": self.readyz,
                                    "/metrics": self.metrics_endpoint}
        return {
            "/v1/chat/completions": {"POST": self.chat_completions},
            "/v1/completions": {"POST": self.completions},
            **{path: {"GET": h, "HEAD": h} for path, h in gets.items()},
        }

    async def handle(self, request: Request) -> StreamResponse:
        """Dispatch on path and method, answer errors as OpenAI JSON, count every request by endpoint."""
        methods = self._routes.get(request.path)
        endpoint = request.path if methods is not None else "other"
        status = 500
        try:
            if methods is None:
                raise ApiError(404, f"no such endpoint: {request.path}", code="not_found")
            handler = methods.get(request.method)
            if handler is None:
                raise ApiError(405, f"{request.method} is not allowed on {request.path}",
                               code="method_not_allowed", headers={"Allow": ",".join(sorted(methods))})
            response = await handler(request)
            status = response.status
            return response
        except ApiError as error:
            status = error.status
            return json_response(error.body(), status=error.status, headers=error.headers)
        except HTTPError as error:  # the body could not be read (413 over the cap, 400 undecodable, 415)
            status = error.status
            response = json_response(ApiError(error.status, error.message, code="invalid_body").body(),
                                     status=error.status)
            response.force_close()
            return response
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks one); the bound port. /healthz answers from now on."""
        self.http = Server(self.handle, max_body=MAX_BODY)
        addresses = await self.http.listen(host, port)
        return addresses[0][1]

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening; requests still running get up to ``timeout_s``."""
        if self.http is not None:
            await self.http.shutdown(timeout_s)

    # -- probes and metadata -----------------------------------------------------------------------------
    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        if self.is_ready():
            return json_response({"status": "ready"})
        state = "draining" if self.admission.draining else "loading"
        return json_response({"status": state}, status=503)

    async def models(self, _request: Request) -> Response:
        data = []
        if self.report is not None:
            data.append({"id": self.report.model_id, "object": "model", "created": 0, "owned_by": "tiered",
                         "tiered": {**self.report.as_dict(), "capabilities": CAPABILITIES | {
                             "contextLength": self.report.n_ctx}}})
        return json_response({"object": "list", "data": data})

    async def metrics_endpoint(self, _request: Request) -> Response:
        body = generate_latest(self.metrics.registry)
        return Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- generation --------------------------------------------------------------------------------------
    def _ready_engine(self) -> Engine:
        if self.admission.draining:
            self.metrics.rejections.labels(reason="draining").inc()
            raise ApiError(503, "server is draining (shutting down); retry on another replica",
                           error_type="server_error", code="draining", headers={"Retry-After": "1"})
        if self.engine is None:
            self.metrics.rejections.labels(reason="loading").inc()
            raise ApiError(503, "model is still loading", error_type="server_error", code="model_not_ready",
                           headers={"Retry-After": "5"})
        return self.engine

    async def completions(self, request: Request) -> StreamResponse:
        arrival = time.perf_counter()
        engine = self._ready_engine()
        body = parse_request(CompletionRequest, await request.read())
        if isinstance(body.prompt, list) and body.prompt and isinstance(body.prompt[0], int):
            tokens = [int(token) for token in body.prompt]
            if not all(0 <= token < engine.n_vocab for token in tokens):
                # llama.cpp aborts the process on an out-of-range token id; refuse it here.
                raise ApiError(400, f"token ids must be in [0, {engine.n_vocab})", param="prompt")
        elif isinstance(body.prompt, list):
            if len(body.prompt) != 1:
                raise ApiError(400, "only one prompt per request is supported", param="prompt")
            tokens = await off_loop_if_long(engine.tokenize_prompt, str(body.prompt[0]))
        else:
            tokens = await off_loop_if_long(engine.tokenize_prompt, body.prompt)
        if not tokens:
            if engine.bos_token is None:
                raise ApiError(400, "prompt is empty", param="prompt")
            tokens = [engine.bos_token]  # as llama-cpp-python does: generate from the start of a sequence
        output = self._output_format(engine, body)
        budget = self._budget(len(tokens), body.max_tokens, engine.n_ctx)
        job = GenerationJob(tokens, sampling_params(body, budget), grammar=output.grammar if output else None)
        return await self._respond(request, engine, job, body.stream, body.include_usage(), arrival, chat=False,
                                   output=output)

    async def chat_completions(self, request: Request) -> StreamResponse:
        arrival = time.perf_counter()
        engine = self._ready_engine()
        body = parse_request(ChatRequest, await request.read())
        try:
            messages = body.template_messages()
            size = sum(len(message["content"]) for message in messages)
            tokens, template_stops = await off_loop_if_long(engine.render_chat, messages, size=size)
        except ApiError:
            raise
        except Exception as error:  # jinja raises for templates that reject the conversation
            raise ApiError(400, f"chat template rejected the messages: {error}", param="messages") from None
        output = self._output_format(engine, body)
        budget = self._budget(len(tokens), body.requested_max_tokens(), engine.n_ctx)
        job = GenerationJob(tokens, sampling_params(body, budget, template_stops),
                            grammar=output.grammar if output else None)
        return await self._respond(request, engine, job, body.stream, body.include_usage(), arrival, chat=True,
                                   output=output)

    def _output_format(self, engine: Engine, body: ChatRequest | CompletionRequest) -> OutputFormat | None:
        """The compiled ``response_format`` (None for free text); a 400 naming what cannot be enforced."""
        if body.response_format is None:
            return None
        try:
            output = self.formats.get(body.response_format, engine.grammar_error)
        except SchemaNotSupported as error:
            self.metrics.rejections.labels(reason="response_format").inc()
            raise ApiError(400, str(error), param="response_format", code="unsupported_schema_keyword") from None
        except SchemaInvalid as error:
            self.metrics.rejections.labels(reason="response_format").inc()
            raise ApiError(400, str(error), param="response_format", code="invalid_response_format") from None
        return output

    def _budget(self, prompt_tokens: int, requested: int | None, n_ctx: int) -> int:
        try:
            return completion_budget(prompt_tokens, requested, n_ctx)
        except ApiError:
            self.metrics.rejections.labels(reason="context_length").inc()
            raise

    async def _respond(self, request: Request, engine: Engine, job: GenerationJob, stream: bool,
                       include_usage: bool, arrival: float, *, chat: bool,
                       output: OutputFormat | None = None) -> StreamResponse:
        try:
            async with self.admission.slot():
                return await self._run(request, engine, job, stream, include_usage, arrival, chat, output)
        except QueueFull as full:
            self.metrics.rejections.labels(reason="queue_full").inc()
            raise ApiError(429, f"{full}; retry after {full.retry_after}s", error_type="rate_limit_error",
                           code="queue_full", headers={"Retry-After": str(full.retry_after)}) from None
        except Draining as draining:
            self.metrics.rejections.labels(reason="draining").inc()
            raise ApiError(503, str(draining), error_type="server_error", code="draining",
                           headers={"Retry-After": "1"}) from None

    async def _run(self, request: Request, engine: Engine, job: GenerationJob, stream: bool,
                   include_usage: bool, arrival: float, chat: bool,
                   output: OutputFormat | None = None) -> StreamResponse:
        """Run ``job`` on the worker thread (the caller holds the slot) and relay its events.

        A structured answer (``output``) is never streamed as it is generated: it is validated first, and only a
        valid answer is sent (as one response, or replayed as a stream), so a client never receives JSON that does
        not parse or match its schema."""
        self.metrics.queue_wait.observe(time.perf_counter() - arrival)
        loop = asyncio.get_running_loop()
        # A stream's response is prepared here, but its first bytes go out only once the worker has started:
        # sent before, the loop would hold the GIL the worker needs to begin (traced: hand-off 0.9 -> 0.3 ms);
        # from then on they go out while the worker is inside llama.cpp's prompt evaluation.
        opened = await self._open_stream(request, engine, job, chat) if stream and output is None else None
        # A non-streamed response only needs the end: its text never wakes the loop (a 0.2 s timer still
        # notices a client that went away).
        channel = TokenChannel(loop, self.stream_interval_s) if opened is not None else \
            TokenChannel(loop, COLLECT_POLL_S, text_wakes=False)
        started = asyncio.Event()

        def run_job() -> Finished:
            if opened is not None:
                loop.call_soon_threadsafe(started.set)
            return engine.run(job, channel.put)

        work = loop.run_in_executor(self.worker, run_job)
        try:
            if opened is not None:
                await started.wait()
                await opened.send_start()
                return await self._stream(opened, channel, include_usage, arrival)
            if output is not None:
                return await self._structured(request, engine, job, channel, arrival, chat, output, stream,
                                              include_usage)
            return await self._collect(request, engine, job, channel, arrival, chat)
        except BaseException:
            job.cancel.set()
            raise
        finally:
            # The slot is released only once the worker is done with the model, whatever happened here.
            await asyncio.shield(work)

    def _record(self, done: Finished, arrival: float) -> None:
        self.metrics.prompt_tokens.inc(done.prompt_tokens)
        self.metrics.completion_tokens.inc(done.completion_tokens)
        if done.first_token_at is not None:
            self.metrics.ttft.observe(done.first_token_at - arrival)
        self.metrics.duration.observe(done.finished_at - arrival)
        rate = done.decode_tokens_per_second
        if rate is not None:
            self.metrics.decode_rate.observe(rate)

    async def _gather(self, request: Request, job: GenerationJob, channel: TokenChannel,
                      arrival: float) -> tuple[list[str], Finished]:
        """Every text piece of the job and its end (a 500 when generation failed)."""
        pieces: list[str] = []
        while True:
            for event in await channel.get_batch():
                if isinstance(event, TextDelta):
                    pieces.append(event.text)
                    continue
                self._record(event, arrival)
                if event.error is not None:
                    raise ApiError(500, f"generation failed: {event.error}", error_type="server_error")
                return pieces, event
            if request.transport is None or request.transport.is_closing():
                job.cancel.set()

    async def _collect(self, request: Request, engine: Engine, job: GenerationJob, channel: TokenChannel,
                       arrival: float, chat: bool) -> Response:
        pieces, done = await self._gather(request, job, channel, arrival)
        ids = ResponseIds("chatcmpl" if chat else "cmpl")
        payload = (chat_body if chat else completion_body)(ids, engine.model_id, "".join(pieces), done)
        return json_response(payload)

    async def _structured(self, request: Request, engine: Engine, job: GenerationJob, channel: TokenChannel,
                          arrival: float, chat: bool, output: OutputFormat, stream: bool,
                          include_usage: bool) -> Response:
        """Generate under the grammar, validate, then answer: the JSON, or an error that says why there is none."""
        pieces, done = await self._gather(request, job, channel, arrival)
        text = "".join(pieces)
        if done.finish_reason != "stop":
            self.metrics.structured.labels(result="incomplete").inc()
            limit = job.params.max_tokens
            raise ApiError(400, f"the {output.kind} answer was cut off after {done.completion_tokens} tokens "
                                f"(the limit was {limit}: max_tokens, or what the context window left) before its "
                                "JSON was complete; the partial text is not returned. Raise max_tokens.",
                           param="max_tokens", code="response_format_incomplete")
        try:
            output.validate(text)
        except OutputInvalid as error:
            self.metrics.structured.labels(result="invalid").inc()
            raise ApiError(500, f"the {output.kind} answer failed validation and is not returned: {error}",
                           error_type="server_error", code="response_format_invalid") from None
        self.metrics.structured.labels(result="valid").inc()
        ids = ResponseIds("chatcmpl" if chat else "cmpl")
        model = engine.model_id
        if not stream:
            return json_response((chat_body if chat else completion_body)(ids, model, text, done))
        deltas = DeltaEncoder(ids, model, chat=chat)
        events = [sse(chat_chunk(ids, model, {"role": "assistant", "content": ""}, None))] if chat else []
        events += [deltas.encode(piece) for piece in pieces]
        reason = public_finish_reason(done)
        events.append(sse(chat_chunk(ids, model, {}, reason) if chat else completion_chunk(ids, model, "", reason)))
        if include_usage:
            events.append(sse(usage_chunk(ids, model, "chat.completion.chunk" if chat else "text_completion", done)))
        events.append(sse("[DONE]"))
        return Response(body=b"".join(events), headers={"Content-Type": "text/event-stream",
                                                         "Cache-Control": "no-cache"})

    async def _open_stream(self, request: Request, engine: Engine, job: GenerationJob,
                           chat: bool) -> SseStream:
        ids = ResponseIds("chatcmpl" if chat else "cmpl")
        # The head waits for `SseStream.send_start` (or the first write, which then carries it in the same packet).
        response = StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"}, defer_head=True)
        await response.prepare(request)
        return SseStream(response, job, ids, engine.model_id, chat)

    async def _stream(self, opened: SseStream, channel: TokenChannel, include_usage: bool,
                      arrival: float) -> StreamResponse:
        ids, model, chat, deltas = opened.ids, opened.model, opened.chat, opened.deltas
        while True:
            events = await channel.get_batch()
            out: list[bytes] = []
            done: Finished | None = None
            for event in events:
                if isinstance(event, TextDelta):
                    out.append(deltas.encode(event.text))
                else:
                    done = event
            if done is not None:
                self._record(done, arrival)
                if done.error is not None:
                    body = ApiError(500, f"generation failed: {done.error}", error_type="server_error").body()
                    out.append(sse(body))
                else:
                    reason = public_finish_reason(done)
                    out.append(sse(chat_chunk(ids, model, {}, reason) if chat else
                                   completion_chunk(ids, model, "", reason)))
                    if include_usage:
                        kind = "chat.completion.chunk" if chat else "text_completion"
                        out.append(sse(usage_chunk(ids, model, kind, done)))
                out.append(sse("[DONE]"))
            if out:
                await opened.write(b"".join(out))
            if done is not None:
                if opened.writable:
                    await opened.response.write_eof()
                return opened.response


class SseStream:
    """A prepared event-stream response; a failed write marks the client gone and cancels the job."""

    def __init__(self, response: StreamResponse, job: GenerationJob, ids: ResponseIds, model: str,
                 chat: bool) -> None:
        self.response, self.job = response, job
        self.ids, self.model, self.chat = ids, model, chat
        self.deltas = DeltaEncoder(ids, model, chat=chat)
        self.writable = True

    async def send_start(self) -> None:
        """Send the headers (with chat's role chunk, in one write)."""
        if self.chat:
            await self.write(sse(chat_chunk(self.ids, self.model, {"role": "assistant", "content": ""}, None)))
        else:
            try:
                self.response.send_head()
            except (ConnectionError, RuntimeError):
                self._client_gone()

    async def write(self, data: bytes) -> None:
        if not self.writable:
            return
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError):
            self._client_gone()

    def _client_gone(self) -> None:
        # Stop generating; the worker notices between tokens.
        self.writable = False
        self.job.cancel.set()


def report_line(report: ModelReport) -> str:
    """The start-up log line with the load report (quantization, size, load time) as JSON."""
    return "model ready: " + json.dumps(report.as_dict(), sort_keys=True)


async def run_until_stopped(server: SlmServer, stop: asyncio.Event, drain_timeout_s: float) -> bool:
    """Wait for the stop signal, drain, then close the listener; True when every request finished."""
    await stop.wait()
    drained = await server.drain(drain_timeout_s)
    await server.stop(5.0)
    server.close()
    return drained
