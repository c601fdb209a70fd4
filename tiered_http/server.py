"""A small HTTP/1.1 server on asyncio protocols and httptools (llhttp), for the router and the SLM server.

Both serve a handful of fixed paths to a few keep-alive clients, and both are judged by what one request costs on
the way through (docs/performance.md). aiohttp's server does that through an application, a URL dispatcher,
middleware, a payload stream and a writer per request and one task per request; measured as a bare forwarding
proxy here it added 0.12 ms p50 over the same proxy on a plain protocol. This module keeps what the two services use:

- requests parsed by httptools in `data_received` (fed 16 KiB at a time, so a flood of tiny pipelined requests
  queues at most one slice's worth beyond the pipeline depth before reading pauses); the handler of a request runs
  as a task started when its head is complete, one request at a time per connection (pipelined requests wait
  their turn, in order);
- back-pressure from output to input: after each response, while the transport's write buffer is above its
  high-water mark, the next request waits for it to drain and reading stays paused, so a client that pipelines
  requests and never reads the answers holds a bounded amount of memory (docs/reliability.md "Hostile clients");
- bodies by Content-Length or chunked coding, read whole (`read`) or piece by piece (`iter_chunks`), decoded on
  the way when `Content-Encoding` is gzip or deflate (br when a `brotli` module with bounded output is present; any
  other coding, or more than one, is 415); inflating is bounded: at most 256 KiB of output per step, the loop gets
  a turn between steps, and the decoded total is capped by `max_body` like the raw one (413 as soon as it is
  passed), so a compression bomb costs neither memory nor a stalled loop; reading pauses while a handler leaves
  more than 1 MiB unread;
- `Expect: 100-continue` answered when the handler first reads the body (a handler that refuses on the headers
  alone never asks for it), and only on HTTP/1.1 (RFC 9110 10.1.1);
- responses whole (`Response`, head and body in one write) or streamed (`StreamResponse`: chunked coding on
  HTTP/1.1, close-delimited on HTTP/1.0), with write back-pressure; a streamed head may wait for the first
  write (`defer_head`), so head and first bytes leave in one packet;
- keep-alive by the HTTP version and `Connection` header; deadlines that trickled bytes cannot extend: a
  connection with no request begun closes after `keepalive_s`, a request head must be complete within
  `head_timeout_s` of the read it began in (else 408), and a body within `body_timeout_s` of the handler's first read
  (else 408); a response sent before its request body was read to the end closes the connection (the rest cannot
  be skipped safely) with a lingering close: FIN first, the client's remaining input drained for up to 2 s, so the
  answer is not lost to a reset;
- at most `max_connections` open connections per server; one more is answered 503 and closed;
- RFC 9112 framing: malformed requests (bad syntax, a head over 64 KiB: 431, a request target over 8 KiB: 414, an
  HTTP/1.1 request without exactly one valid Host or any request with two: 400, a transfer coding other than
  chunked: 501, an upgrade with a body or CONNECT, a method llhttp does not know) get an error in the services'
  error JSON and the connection closes; nothing a client sends reaches a handler half-parsed. An HTTP/1.0 request
  with Transfer-Encoding is served and the connection closed (its framing cannot be trusted, RFC 9112 6.1).
  Whitespace before a chunk extension's `;` is accepted (RFC 9112 7.1.1 allows it; llhttp's
  `lenient_spaces_after_chunk_size`). A bodiless request asking for an upgrade (curl --http2's h2c) is answered as
  HTTP/1.1, then the connection closes.

A handler is `async def handler(request) -> StreamResponse`; an exception escaping it becomes a 500 (the services
shape their own errors before that). `Server.shutdown()` stops listening, lets running handlers finish up to a
timeout, then closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from email.utils import formatdate
from typing import Any, NoReturn, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("tiered_http")

MAX_HEAD = 64 * 1024
MAX_HEADERS = 256
MAX_TARGET = 8 * 1024  # request target (URL) longer than this: 414
INFLATE_STEP = 256 * 1024  # most decoded bytes one inflate step produces before the loop gets a turn
_FEED_SLICE = 16 * 1024  # received data is parsed this much at a time (see `_Connection._feed`)
_HIGH_WATER = 1024 * 1024  # unread request body that pauses reading
_PIPELINE_DEPTH = 16  # queued pipelined requests that pause reading
_LINGER_S = 2.0  # after a final answer while the client may still be sending: how long its input is drained
_LINGER_BYTES = 64 * 1024 * 1024  # ... and how much of it
_REFUSED_LINGER_S = 0.25  # a connection over the cap: how long its input is drained after the 503
# Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): a reg-name or IPv4 address, or an IP literal.
_HOST = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=%-]*|\[[0-9A-Za-z:._~!$&'()*+,;=-]+\])(?::[0-9]*)?")
_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 413: "Payload Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip
_NO_BODY_STATUS = frozenset((204, 304))
_CODES = {400: "invalid_request", 408: "request_timeout", 413: "body_too_large", 414: "uri_too_long",
          415: "unsupported_encoding", 431: "header_too_large", 500: "internal_error", 501: "not_implemented",
          503: "too_many_connections"}  # fmt: skip

Handler = Callable[["Request"], Awaitable["StreamResponse"]]


class HTTPError(Exception):
    """A request the server or a body read refuses: `status` with a one-line reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> bytes:
    """The error JSON both services answer with (OpenAI's shape)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    code = _CODES.get(status, "http_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


class _DateCache:
    """The Date header, formatted once per second."""

    second = -1
    value = b""

    @classmethod
    def get(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = formatdate(now, usegmt=True).encode("latin-1")
        return cls.value


def _brotli_module() -> Any:
    """The `brotli` module when it can bound its output (Brotli >= 1.2: `process(data, output_buffer_limit=...)`
    and `can_accept_more_data()`), else None: an older one inflates a bomb in one call, so br is refused (415)."""
    try:
        import brotli
    except ImportError:
        return None
    return brotli if hasattr(brotli.Decompressor(), "can_accept_more_data") else None


def _steps(out: bytes) -> Iterator[bytes]:
    if len(out) <= INFLATE_STEP:
        if out:
            yield out
        return
    for i in range(0, len(out), INFLATE_STEP):
        yield out[i : i + INFLATE_STEP]


class _Decoder:
    """Content-Encoding of a request body, undone piece by piece with bounded output.

    `feed` is a generator: each piece it yields is at most `INFLATE_STEP` bytes, and the next piece is only
    computed when asked for, so the caller decides when to give the loop a turn and when to stop (a cap)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._brotli: Any = None
        self._zlib: Any = None
        self._raw_tried = True
        self._first = b""  # deflate: the first bytes, until there are two to tell zlib from raw deflate
        if coding == "gzip":
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()  # zlib-wrapped; raw deflate is tried if the first bytes say so
            self._raw_tried = False
        elif coding == "br":
            self._brotli = _brotli_module().Decompressor()
        else:  # pragma: no cover - the caller checks `supported` first
            raise ValueError(coding)

    @staticmethod
    def supported(coding: str) -> bool:
        if coding in ("gzip", "deflate"):
            return True
        return coding == "br" and _brotli_module() is not None

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            if self._brotli is not None:
                yield from self._feed_brotli(data)
            else:
                yield from self._feed_zlib(data)
        except (zlib.error, ValueError) as exc:
            raise HTTPError(400, f"request body cannot be decoded: {self.coding}: {exc}") from None
        except HTTPError:
            raise
        except Exception as exc:  # brotli.error: the body does not match its Content-Encoding
            raise HTTPError(400, f"request body cannot be decoded: {self.coding}: {exc}") from None

    def _feed_zlib(self, data: bytes) -> Iterator[bytes]:
        if not self._raw_tried:
            data = self._first + data
            if len(data) < 2:
                self._first = data
                return
            self._first = b""
            self._raw_tried = True
            try:
                zlib.decompressobj().decompress(data[:2])  # the zlib header (RFC 1950): two bytes, a checksum
            except zlib.error:
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate (RFC 1951), as some clients send
        while data:
            d = self._zlib
            if d.eof:
                if self.coding != "gzip":
                    raise HTTPError(400, f"request body cannot be decoded: {self.coding}: data after the end")
                self._zlib = d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # RFC 1952: a further gzip member
            out = d.decompress(data, INFLATE_STEP)
            if out:
                yield out
            # output capped with input left (unconsumed_tail), or capped exactly with more pending inside zlib
            while len(out) == INFLATE_STEP or d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, INFLATE_STEP)
                if out:
                    yield out
                elif not d.unconsumed_tail:
                    break
            data = d.unused_data  # after the end of a gzip member: the next member (or trailing bytes)

    def _feed_brotli(self, data: bytes) -> Iterator[bytes]:
        d = self._brotli
        # the limit stops the output buffer growing once reached, so one call may return up to about twice it
        out = d.process(data, output_buffer_limit=INFLATE_STEP)
        yield from _steps(out)
        while not d.can_accept_more_data():  # output left inside: drain it with empty input, a step at a time
            out = d.process(b"", output_buffer_limit=INFLATE_STEP)
            if not out and not d.can_accept_more_data():  # pragma: no cover - defensive: never spin
                raise HTTPError(400, f"request body cannot be decoded: {self.coding}: decoder stalled")
            yield from _steps(out)

    def finish(self) -> None:
        """The body ended: the coded stream must have ended too."""
        if self._zlib is not None and not self._zlib.eof:
            raise HTTPError(400, f"request body cannot be decoded: {self.coding}: truncated stream")
        if self._brotli is not None and not self._brotli.is_finished():
            raise HTTPError(400, f"request body cannot be decoded: {self.coding}: truncated stream")


def _body_late(waiter: asyncio.Future[None], within_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(HTTPError(408, f"request body not complete within {within_s:g} s"))


def content_codings(headers: CIMultiDict[str]) -> list[str]:
    """Every Content-Encoding field combined (RFC 9110 5.3: repeated fields form one comma-separated list), in the
    order they were applied, lower case, `identity` and empty members left out."""
    return [c for v in headers.getall("Content-Encoding", ()) for c in (m.strip().lower() for m in v.split(","))
            if c and c != "identity"]  # fmt: skip


class Request:
    """One parsed request: method, path, headers, and a body read once (`read` or `iter_chunks`)."""

    __slots__ = (
        "_chunks",
        "_complete",
        "_conn",
        "_deadline",
        "_decoded",
        "_decoder",
        "_error",
        "_expect_continue",
        "_received",
        "_waiter",
        "content_length",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "version",
    )  # fmt: skip

    def __init__(self, conn: _Connection, method: str, target: bytes, version: str,
                 headers: CIMultiDict[str], keep_alive: bool) -> None:  # fmt: skip
        self._conn = conn
        self.method = method
        path, _, query = target.partition(b"?")
        self.path = path.decode("latin-1")
        self.query_string = query.decode("latin-1")
        self.version = version
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(headers)
        self.keep_alive = keep_alive
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self._chunks: deque[bytes] = deque()
        self._received = 0
        self._decoded = 0
        self._complete = False
        self._error: HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: float | None = None  # the whole body by then (loop time), set at the first wait
        # an HTTP/1.0 client cannot know 100 Continue; its expectation is ignored (RFC 9110 10.1.1)
        self._expect_continue = version == "1.1" and headers.get("Expect", "").lower() == "100-continue"
        self._decoder: _Decoder | None = None
        if "Content-Encoding" in headers:
            codings = content_codings(headers)
            if len(codings) > 1:
                self._error = HTTPError(415, f"more than one Content-Encoding ({', '.join(codings)}) is not supported")
            elif codings and _Decoder.supported(codings[0]):
                self._decoder = _Decoder(codings[0])
            elif codings:
                self._error = HTTPError(415, f"unsupported Content-Encoding {codings[0]!r} (gzip, deflate or identity)")

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport while it is open, else None (the client went away)."""
        conn = self._conn
        return None if conn.closed else conn.transport

    async def read(self) -> bytes:
        """The whole body (decoded). HTTPError 400/408/413/415 when it cannot be read."""
        parts = [chunk async for chunk in self.iter_chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded, in pieces of at most INFLATE_STEP bytes when it was encoded)."""
        if self._expect_continue:
            self._expect_continue = False
            if not self._complete and not self._conn.closed:
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        stepped = False  # a decoded piece has been produced: the next inflate step waits for a loop turn
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                chunk = self._chunks.popleft()
                self._conn.body_consumed(len(chunk))
                if self._decoder is None:
                    yield chunk
                    continue
                for piece in self._decoder.feed(chunk):
                    if stepped:
                        await asyncio.sleep(0)  # a large inflate gives the loop a turn between steps
                    stepped = True
                    self._count_decoded(len(piece))
                    yield piece
                continue
            if self._complete:
                if self._decoder is not None:
                    self._decoder.finish()
                    self._decoder = None
                return
            if self._conn.closed:
                raise HTTPError(400, "the connection closed before the request body was complete")
            conn = self._conn
            loop = conn.loop
            within = conn.server.body_timeout_s
            if self._deadline is None:
                self._deadline = loop.time() + within
            waiter = self._waiter = loop.create_future()
            # one deadline for the whole body, not re-armed by each piece: a client trickling bytes cannot hold
            # the request (and its connection) for ever
            timer = loop.call_at(self._deadline, _body_late, waiter, within)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def _count_decoded(self, n: int) -> None:
        self._decoded += n
        cap = self._conn.server.max_body
        if self._decoded > cap:
            self._error = HTTPError(413, f"decoded request body exceeds {cap} bytes")
            raise self._error

    # -- fed by the connection ---------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._received += len(data)
        self._wake()

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: HTTPError) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class StreamResponse:
    """A response written in pieces: `prepare`, `write`..., `write_eof`. Chunked on HTTP/1.1 unless the handler
    sets Content-Length; `defer_head` holds the head back until the first write or `send_head()`."""

    def __init__(self, *, status: int = 200, reason: str | None = None,
                 headers: Mapping[str, str] | None = None, defer_head: bool = False) -> None:  # fmt: skip
        self.status = status
        self.reason = reason
        self.headers: CIMultiDict[str] = CIMultiDict(headers or {})
        self.defer_head = defer_head
        self.keep_alive = True
        self._conn: _Connection | None = None
        self._head: bytes | None = None  # prepared, not yet sent
        self._chunked = False
        self._no_body = False
        self._eof = False
        self.prepared = False

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "application/octet-stream")

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["Content-Type"] = value

    def force_close(self) -> None:
        """Close the connection after this response."""
        self.keep_alive = False

    def _render_head(self, request: Request, length: int | None) -> bytes:
        conn = request._conn
        keep = (self.keep_alive and request.keep_alive and not conn.closing and request._complete
                and not conn.server.stopping)  # fmt: skip
        if not keep:
            self.keep_alive = False
        headers = self.headers
        lines = [
            b"HTTP/1.1 %d %s\r\n" % (self.status, (self.reason or _REASONS.get(self.status, "")).encode()),
            "".join([f"{name}: {value}\r\n" for name, value in headers.items()]).encode("latin-1", "replace"),
        ]
        if length is not None:
            if "Content-Length" not in headers and self.status not in _NO_BODY_STATUS:
                lines.append(b"Content-Length: %d\r\n" % length)
        elif "Content-Length" not in headers and self.status not in _NO_BODY_STATUS:
            if request.version == "1.1":
                self._chunked = True
                lines.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep_alive = False  # the body ends when the connection does
        if not self.keep_alive:
            lines.append(b"Connection: close\r\n")
        elif request.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"Date: " + _DateCache.get() + b"\r\n\r\n")
        return b"".join(lines)

    async def prepare(self, request: Request) -> StreamResponse:
        if self.prepared:
            return self
        self.prepared = True
        self._conn = request._conn
        request._conn.started = True
        self._no_body = request.method == "HEAD" or self.status in _NO_BODY_STATUS
        self._head = self._render_head(request, None)
        if not self.defer_head:
            self.send_head()
        return self

    def send_head(self) -> None:
        """Send a deferred head now (no body bytes yet)."""
        head, self._head = self._head, None
        if head is not None and self._conn is not None:
            self._conn.write_checked(head)

    async def write(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._eof:
            raise RuntimeError("write() before prepare() or after write_eof()")
        head, self._head = self._head, None
        if self._no_body:
            out = head or b""
        elif self._chunked:
            if not data:
                if head is not None:
                    conn.write_checked(head)
                return
            out = b"%s%x\r\n%s\r\n" % (head or b"", len(data), data)
        else:
            out = head + data if head is not None else data
        if out:
            conn.write_checked(out)
        if conn.write_paused:
            await conn.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof:
            return
        if data:
            await self.write(data)
        conn = self._conn
        if conn is None:
            raise RuntimeError("write_eof() before prepare()")
        self._eof = True
        head, self._head = self._head, None
        tail = b"0\r\n\r\n" if self._chunked and not self._no_body else b""
        out = (head or b"") + tail
        if out:
            conn.write_checked(out)


class Response(StreamResponse):
    """A whole response: head and body leave in one write."""

    def __init__(self, *, body: bytes | None = None, text: str | None = None, status: int = 200,
                 reason: str | None = None, headers: Mapping[str, str] | None = None,
                 content_type: str | None = None) -> None:  # fmt: skip
        super().__init__(status=status, reason=reason, headers=headers)
        if text is not None:
            body = text.encode()
            if content_type is None and "Content-Type" not in self.headers:
                content_type = "text/plain; charset=utf-8"
        self.body = body or b""
        if content_type is not None:
            self.headers["Content-Type"] = content_type

    async def prepare(self, request: Request) -> StreamResponse:
        if not self.prepared:
            self.prepared = True
            self._conn = conn = request._conn
            conn.started = True
            self._eof = True
            no_body = request.method == "HEAD" or self.status in _NO_BODY_STATUS
            head = self._render_head(request, len(self.body))
            conn.write_checked(head if no_body else head + self.body)
        return self

    async def write(self, data: bytes) -> None:
        raise RuntimeError("Response is written whole; use StreamResponse to stream")


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body=json.dumps(data).encode(), status=status, headers=headers, content_type="application/json")


class _Connection(asyncio.Protocol):
    """One client connection: the parser, the queue of parsed requests, and the task serving them in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # "1 ;ext" is a chunk size, BWS and an extension (RFC 9112 7.1.1); llhttp refuses the space unless told
        self.parser.set_dangerous_leniencies(lenient_spaces_after_chunk_size=True)
        self.closed = False
        self.closing = False  # close once the current response is written
        self.started = False  # a response to the request being served has been prepared
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._url = b""
        self._headers: list[tuple[str, str]] = []  # collected by on_header, one CIMultiDict per request
        self._head_size = 0
        self._parse_error: HTTPError | None = None  # raised by a parser callback (httptools re-wraps it)
        self._in_head = False  # a request head has begun and is not complete
        self._head_began = False  # ... and it began in the data being fed now
        self._head_bytes = 0  # bytes of later reads that all went to the unfinished head
        self._head_timer: asyncio.TimerHandle | None = None
        self._upgrade_ignored = False  # the request just parsed asked for an upgrade and is served as HTTP/1.1
        self._current: Request | None = None  # the request whose body the parser is reading
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._unread = 0
        self._reading_paused = False
        self._pending = b""  # received while the queue was full, not parsed yet
        self._idle: asyncio.TimerHandle | None = None
        self._lingering = False  # answered and half-closed; what the client still sends is dropped
        self._drained = 0
        self._linger: asyncio.TimerHandle | None = None
        self._counted = False  # in server.connections (a refused connection never is)
        self._peer_eof = False  # the client half-closed: nothing more will arrive

    # -- transport events -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server.connections) >= server.max_connections:
            self._refuse_connection()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.connections.add(self)
        self._counted = True
        self._arm_idle()

    def _refuse_connection(self) -> None:
        """Over the connection cap: 503 with Connection: close, FIN, and the client's input dropped briefly."""
        server = self.server
        server.refused_connections += 1
        if server.refused_connections == 1 or server.refused_connections % 1000 == 0:
            log.warning("connection cap %d reached: new connections get 503 (%d so far)", server.max_connections,
                        server.refused_connections)  # fmt: skip
        self.closing = True
        self.write(_error_head(server, 503, f"too many connections (the cap is {server.max_connections})"))
        self.close_lingering(_REFUSED_LINGER_S)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._counted:
            self.server.connections.discard(self)
        for timer in (self._idle, self._linger, self._head_timer):
            if timer is not None:
                timer.cancel()
        self._pending = b""
        for request in (self._current, *self._queue):
            if request is not None and not request._complete:
                request._fail(HTTPError(400, "the connection closed before the request body was complete"))
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("connection lost"))

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._drained += len(data)
            if self._drained > _LINGER_BYTES:
                self.close()
            return
        if self._pending:  # (a transport may deliver what it had already read when asked to pause)
            self._pending += data
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse `data`, a slice at a time: once the queue of parsed requests (or unread body) is full and reading
        pauses, the rest waits unparsed in `_pending`, so one large read of tiny pipelined requests cannot queue
        thousands of them."""
        if len(data) <= _FEED_SLICE:
            self._parse(data)
            return
        view = memoryview(data)
        for offset in range(0, len(data), _FEED_SLICE):
            if self.closed or self._lingering or self.closing:
                return
            if self._reading_paused:
                self._pending = bytes(view[offset:])
                return
            if not self._parse(view[offset : offset + _FEED_SLICE]):
                return

    def _parse(self, data: bytes | memoryview) -> bool:
        """Feed the parser; False when the connection stops reading for good (an error answered, an upgrade)."""
        self._head_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._upgrade_ignored:
                self._reject(400, "protocol upgrades are not supported")
                return False
            # a bodiless request asking for an upgrade is served as plain HTTP/1.1 (RFC 9110 7.8 lets a server
            # ignore Upgrade); llhttp reads nothing after it, so the connection closes after the answer
            self.closing = True
            self._pause_reading()
            current = self._current
            if current is not None and not current._complete:
                self._current = None
                current._finish()
            return False
        except HTTPError as exc:  # raised by a callback below
            self._reject(exc.status, exc.message)
            return False
        except httptools.HttpParserError as exc:
            error = self._parse_error  # a callback's HTTPError reaches here wrapped in httptools' own error
            if error is not None:
                self._reject(error.status, error.message)
            else:
                self._reject(400, f"malformed HTTP request: {exc}")
            return False
        if self._in_head:
            if self._head_timer is None:
                # one deadline for the whole head from the read it began in, not re-armed by later bytes
                # (slowloris); a head that arrives whole in one read, the usual case, needs no timer at all
                self._head_timer = self.loop.call_later(self.server.head_timeout_s, self._head_late)
            elif not self._head_began:
                # llhttp buffers a header line until it ends: bound a head that never does
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD:
                    self._reject(431, "request head too large")
                    return False
        return True

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._lingering or (self._task is None and not self._queue):
            return False  # nothing in flight: close
        self.closing = True  # half-closed: answer what was asked, then close
        current = self._current
        if current is not None and not current._complete:  # no more of its body will come
            current._fail(HTTPError(400, "the connection closed before the request body was complete"))
        return True

    # -- parser callbacks -------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._in_head = self._head_began = True
        self._head_bytes = 0
        self._upgrade_ignored = False
        if self._idle is not None:  # a request has begun: from here the head deadline applies, not the idle one
            self._idle.cancel()
            self._idle = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._in_head or self.closed:
            return
        if self._reading_paused:  # we stopped reading (a full queue): not the client's delay; wait for our turn
            self._head_timer = self.loop.call_later(self.server.head_timeout_s, self._head_late)
            return
        self._reject(408, f"request head not complete within {self.server.head_timeout_s:g} s")

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_TARGET:
            self._refuse(414, f"request target longer than {MAX_TARGET} bytes")
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(self._headers) >= MAX_HEADERS:
            self._refuse(431, "request head too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._refuse(400, f"unsupported HTTP version {version}")
        headers = CIMultiDict(self._headers)
        hosts = headers.getall("Host", ())
        if len(hosts) > 1:
            self._refuse(400, "more than one Host header")
        if hosts:
            if not _HOST.fullmatch(hosts[0]):
                self._refuse(400, f"invalid Host header {hosts[0][:100]!r}")
        elif version == "1.1":
            self._refuse(400, "an HTTP/1.1 request needs a Host header")
        keep_alive = parser.should_keep_alive()
        if "Transfer-Encoding" in headers:
            codings = [c.strip().lower() for v in headers.getall("Transfer-Encoding") for c in v.split(",")]
            if codings != ["chunked"]:
                # llhttp frames any list that ends in chunked as chunked; a coding under it would reach the handler
                # undecoded ("identity" is no coding since RFC 7230)
                self._refuse(501, f"Transfer-Encoding {', '.join(codings)!r} is not supported (chunked only)")
            if version == "1.0":
                keep_alive = False  # RFC 9112 6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty
        if parser.should_upgrade():
            # llhttp stops at the end of an upgrade request's head, so its body would never be read: only a
            # bodiless request (curl --http2's h2c GET) is served, as plain HTTP/1.1
            if (parser.get_method() == b"CONNECT" or "Transfer-Encoding" in headers
                    or headers.get("Content-Length", "0").strip() not in ("", "0")):  # fmt: skip
                self._refuse(400, "protocol upgrades are not supported")
            self._upgrade_ignored = True
        url = self._url
        if not url.startswith(b"/") and url != b"*":
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._refuse(400, "malformed request target")
            url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        request = Request(self, parser.get_method().decode("latin-1"), url, version, headers, keep_alive)
        self._current = request
        self._queue.append(request)
        if self._task is None:
            self._task = self.loop.create_task(self._serve())
        elif len(self._queue) > _PIPELINE_DEPTH:
            self._pause_reading()

    def _refuse(self, status: int, message: str) -> NoReturn:
        error = self._parse_error = HTTPError(status, message)
        raise error

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None:
            return
        if request._received + len(body) > self.server.max_body:
            request._fail(HTTPError(413, f"request body exceeds {self.server.max_body} bytes"))
            self._pause_reading()  # the rest is never read; the response closes the connection
            return
        request._feed(body)
        self._unread += len(body)
        if self._unread > _HIGH_WATER:
            self._pause_reading()

    def on_message_complete(self) -> None:
        request = self._current
        self._current = None
        if request is not None:
            request._finish()

    # -- serving ----------------------------------------------------------------------------------------------
    async def _serve(self) -> None:
        server = self.server
        try:
            while self._queue and not self.closed:
                request = self._queue[0]
                server.in_flight += 1
                try:
                    keep = await self._respond(request)
                finally:
                    server.in_flight -= 1
                self._queue.popleft()
                if not keep or self.closing or server.stopping:
                    self._queue.clear()
                    if request._complete:
                        self.close()
                    else:
                        self.close_lingering()
                    return
                if self.write_paused:
                    # back-pressure from output to input: a client that does not read its answers gets no more
                    # of them buffered here, and (the queue being full) nothing more of its requests read either
                    try:
                        await self.drain()
                    except ConnectionError:
                        return
                if self._reading_paused and len(self._queue) <= _PIPELINE_DEPTH and self._unread <= _HIGH_WATER:
                    self._resume_reading()
        finally:
            self._task = None
            if not self.closed and not self._queue and not self._in_head:
                self._arm_idle()
            server.request_done()

    async def _respond(self, request: Request) -> bool:
        """Run the handler and make sure a whole response went out; whether the connection stays open."""
        self.started = False
        try:
            response = await self.server.handler(request)
            if not response.prepared:
                await response.prepare(request)
            if not response._eof:  # a StreamResponse left open (or never prepared) is ended here
                await response.write_eof()
        except asyncio.CancelledError:
            raise
        except HTTPError as exc:  # a body read the handler did not catch
            return await self._send_fallback(request, _error_response(self.server, exc.status, exc.message))
        except (ConnectionError, RuntimeError) as exc:
            transport = self.transport
            if self.closed or (isinstance(exc, ConnectionError) and transport is not None and transport.is_closing()):
                return False  # the client went away (a failed write closes the transport before it reports)
            log.exception("handler failed on %s %s: %s", request.method, request.path, exc)
            return await self._send_fallback(request, _error_response(self.server, 500, "internal server error"))
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return await self._send_fallback(request, _error_response(self.server, 500, "internal server error"))
        return response.keep_alive and request._complete and not self.closed

    async def _send_fallback(self, request: Request, response: Response) -> bool:
        """An error answer, unless a response has already started (a second one would corrupt the stream)."""
        if not self.closed and not self.started:
            with contextlib.suppress(ConnectionError):
                await response.prepare(request)
        return False

    def _reject(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer (unless a response is already under way) and close."""
        self._pause_reading()
        self._pending = b""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._current is not None:
            self._current._fail(HTTPError(status, message))
        if self._task is not None:
            self.closing = True  # the request in flight gets its answer; nothing after it is read
            return
        self.write(_error_head(self.server, status, message))
        self.close_lingering()

    # -- writing and flow control -------------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def write_checked(self, data: bytes) -> None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)

    async def drain(self) -> None:
        if not self.write_paused:
            return
        if self.closed:
            raise ConnectionResetError("the client closed the connection")
        drain = self._drain = self.loop.create_future()
        try:
            await drain
        finally:
            self._drain = None

    def body_consumed(self, n: int) -> None:
        self._unread -= n
        if self._reading_paused and self._unread <= _HIGH_WATER // 4 and len(self._queue) <= _PIPELINE_DEPTH:
            current = self._current
            if current is None or current._error is None:
                self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            pending, self._pending = self._pending, b""
            if pending:
                self._feed(pending)  # may fill the queue and pause again
                if self._reading_paused or self.closed or self._lingering:
                    return
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def _arm_idle(self) -> None:
        if self._idle is None and not self.closed and not self._lingering:
            self._idle = self.loop.call_later(self.server.keepalive_s, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if self._task is None and not self._queue and not self._in_head:
            self.close()

    def idle(self) -> bool:
        return self._task is None and not self._queue

    def close_lingering(self, seconds: float = _LINGER_S) -> None:
        """Close after a final answer while the client may still be sending (a body that was not read, a request
        refused mid-stream): send FIN, drop what still arrives for up to `seconds` / _LINGER_BYTES, then close.

        Closing at once with unread input makes the kernel answer with a reset, which can destroy the answer
        before the client reads it (a 413 for a large upload would reach the client as "connection reset")."""
        transport = self.transport
        if (self.closed or self._peer_eof or transport is None or transport.is_closing()
                or not transport.can_write_eof()):  # fmt: skip
            self.close()  # (a client that half-closed sends nothing more: no input to drain)
            return
        self._lingering = True
        self.closing = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            self.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            with contextlib.suppress(RuntimeError):
                transport.resume_reading()
        self._linger = self.loop.call_later(seconds, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


def _error_head(server: Server, status: int, message: str) -> bytes:
    """A whole error answer (head and JSON body) that closes the connection, for errors no handler sees."""
    body = server.error_body(status, message)
    reason = _REASONS.get(status, "").encode()
    head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n"
            b"Date: %s\r\n\r\n") % (status, reason, len(body), _DateCache.get())  # fmt: skip
    return head + body


def _error_response(server: Server, status: int, message: str) -> Response:
    """The services' error JSON; the connection closes after it."""
    response = Response(body=server.error_body(status, message), status=status, content_type="application/json")
    response.force_close()
    return response


class Server:
    """Listening sockets, the connections they accepted, and a graceful shutdown."""

    def __init__(self, handler: Handler, *, max_body: int = 64 * 1024 * 1024, keepalive_s: float = 75.0,
                 head_timeout_s: float = 10.0, body_timeout_s: float = 60.0, max_connections: int = 1000,
                 error_body: Callable[[int, str], bytes] = error_body) -> None:  # fmt: skip
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        self.handler = handler
        self.max_body = max_body  # request body cap, raw and decoded: 413
        self.keepalive_s = keepalive_s  # a connection with no request begun closes after this
        self.head_timeout_s = head_timeout_s  # a head must be complete this long after the read it began in: 408
        self.body_timeout_s = body_timeout_s  # ... and its body this long after the handler first reads it: 408
        self.max_connections = max_connections  # open connections; one more gets 503 and a close
        self.refused_connections = 0
        self.error_body = error_body
        self.loop = asyncio.get_running_loop()
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.stopping = False
        self._servers: list[asyncio.Server] = []
        self._idle_event = asyncio.Event()

    async def listen(self, host: str, port: int, *, backlog: int = 1024) -> list[tuple[str, int]]:
        """Start accepting on host:port (port 0 picks one); the bound (host, port) addresses."""
        server = await self.loop.create_server(lambda: _Connection(self), host, port, reuse_address=True,
                                               backlog=backlog)  # fmt: skip
        self._servers.append(server)
        return [cast(tuple[str, int], s.getsockname()[:2]) for s in server.sockets]

    def request_done(self) -> None:
        if self.in_flight == 0:
            self._idle_event.set()

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, let running requests finish (up to `timeout`), close every connection."""
        self.stopping = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            if conn.idle():
                conn.close()
        deadline = self.loop.time() + timeout
        while any(not c.idle() for c in self.connections) and self.loop.time() < deadline:
            self._idle_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle_event.wait(), max(0.0, deadline - self.loop.time()))
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
