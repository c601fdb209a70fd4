"""A small HTTP/1.1 server on asyncio protocols and httptools (llhttp), for the router and the SLM server.

Both serve a handful of fixed paths to a few keep-alive clients, and both are judged by what one request costs on
the way through (docs/performance.md). aiohttp's server does that through an application, a URL dispatcher,
middleware, a payload stream and a writer per request and one task per request; measured as a bare forwarding
proxy here it added 0.12 ms p50 over the same proxy on a plain protocol. This module keeps what the two services use:

- requests parsed by httptools in `data_received`; the handler of a request runs as a task started when its
  headers are complete, one request at a time per connection (pipelined requests wait their turn, in order);
- bodies by Content-Length or chunked coding, read whole (`read`) or piece by piece (`iter_chunks`), decoded on
  the way when `Content-Encoding` is gzip or deflate (br when the `brotli` module is present; any other coding is
  415); reading pauses while a handler leaves more than 1 MiB unread; `max_body` is a hard cap (413);
- `Expect: 100-continue` answered when the handler first reads the body (a handler that refuses on the headers
  alone never asks for it);
- responses whole (`Response`, head and body in one write) or streamed (`StreamResponse`: chunked coding on
  HTTP/1.1, close-delimited on HTTP/1.0), with write back-pressure; a streamed head may wait for the first
  write (`defer_head`), so head and first bytes leave in one packet;
- keep-alive by the HTTP version and `Connection` header; an idle connection closes after `keepalive_s` (also
  between the bytes of a head under way); a body read waits at most `body_timeout_s` for each next piece, then
  fails with 408, so a client that stops sending mid-body cannot hold a request for ever; a response sent before
  its request body was read to the end closes the connection (the rest cannot be skipped safely) with a
  lingering close: FIN first, the client's remaining input drained for up to 2 s, so the answer is not lost to
  a reset;
- malformed requests (bad syntax, a head over 64 KiB, an upgrade with a body or CONNECT, a method llhttp does not
  know) get a 400 or 431 in the services' error JSON and the connection closes; nothing a client sends reaches a
  handler half-parsed. A bodiless request asking for an upgrade (curl --http2's h2c) is answered as HTTP/1.1,
  then the connection closes.

A handler is `async def handler(request) -> StreamResponse`; an exception escaping it becomes a 500 (the services
shape their own errors before that). `Server.shutdown()` stops listening, lets running handlers finish up to a
timeout, then closes every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from email.utils import formatdate
from typing import Any, NoReturn, cast

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

log = logging.getLogger("tiered_http")

MAX_HEAD = 64 * 1024
MAX_HEADERS = 256
_HIGH_WATER = 1024 * 1024  # unread request body that pauses reading
_PIPELINE_DEPTH = 16  # queued pipelined requests that pause reading
_LINGER_S = 2.0  # after a final answer while the client may still be sending: how long its input is drained
_LINGER_BYTES = 64 * 1024 * 1024  # ... and how much of it
_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
    409: "Conflict", 411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Entity", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}  # fmt: skip
_NO_BODY_STATUS = frozenset((204, 304))
_CODES = {400: "invalid_request", 408: "request_timeout", 413: "body_too_large", 415: "unsupported_encoding",
          431: "header_too_large", 500: "internal_error"}  # fmt: skip

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


class _Decoder:
    """Content-Encoding of a request body, undone piece by piece."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._brotli: Any = None
        self._zlib: Any = None
        if coding == "gzip":
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()  # zlib-wrapped; raw deflate is tried if the first bytes say so
            self._raw_tried = False
        elif coding == "br":
            import brotli  # only when the client sends br and it is installed

            self._brotli = brotli.Decompressor()
        else:  # pragma: no cover - the caller checks `supported` first
            raise ValueError(coding)

    @staticmethod
    def supported(coding: str) -> bool:
        if coding in ("gzip", "deflate"):
            return True
        if coding == "br":
            try:
                import brotli  # noqa: F401
            except ImportError:
                return False
            return True
        return False

    def feed(self, data: bytes) -> bytes:
        try:
            if self._brotli is not None:
                return cast(bytes, self._brotli.process(data))
            if self.coding == "deflate" and not self._raw_tried:
                self._raw_tried = True
                try:
                    return cast(bytes, self._zlib.decompress(data))
                except zlib.error:
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return cast(bytes, self._zlib.decompress(data))
        except Exception as exc:  # zlib.error, brotli.error: the body does not match its Content-Encoding
            raise HTTPError(400, f"request body cannot be decoded: {self.coding}: {exc}") from None

    def finish(self) -> bytes:
        if self._zlib is not None:
            if not self._zlib.eof:
                raise HTTPError(400, f"request body cannot be decoded: {self.coding}: truncated stream")
            return cast(bytes, self._zlib.flush())
        return b""


def _body_stalled(waiter: asyncio.Future[None], after_s: float) -> None:
    if not waiter.done():
        waiter.set_exception(HTTPError(408, f"no request body data arrived for {after_s:g} s"))


class Request:
    """One parsed request: method, path, headers, and a body read once (`read` or `iter_chunks`)."""

    __slots__ = (
        "_chunks", "_complete", "_conn", "_decoder", "_error", "_expect_continue", "_received", "_waiter",
        "content_length", "headers", "keep_alive", "method", "path", "query_string", "version",
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
        self._complete = False
        self._error: HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._expect_continue = headers.get("Expect", "").lower() == "100-continue"
        self._decoder: _Decoder | None = None
        coding = headers.get("Content-Encoding", "identity").strip().lower()
        if coding not in ("", "identity"):
            if _Decoder.supported(coding):
                self._decoder = _Decoder(coding)
            else:
                self._error = HTTPError(415, f"unsupported Content-Encoding {coding!r} (gzip, deflate or identity)")

    @property
    def transport(self) -> asyncio.Transport | None:
        """The connection's transport while it is open, else None (the client went away)."""
        conn = self._conn
        return None if conn.closed else conn.transport

    async def read(self) -> bytes:
        """The whole body (decoded). HTTPError 400/413/415 when it cannot be read."""
        parts = [chunk async for chunk in self.iter_chunks()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded)."""
        if self._expect_continue:
            self._expect_continue = False
            if not self._complete and not self._conn.closed:
                self._conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while True:
            if self._error is not None:
                raise self._error
            if self._chunks:
                chunk = self._chunks.popleft()
                self._conn.body_consumed(len(chunk))
                if self._decoder is not None:
                    chunk = self._decoder.feed(chunk)
                if chunk:
                    yield chunk
                continue
            if self._complete:
                if self._decoder is not None:
                    tail = self._decoder.finish()
                    self._decoder = None
                    if tail:
                        yield tail
                return
            if self._conn.closed:
                raise HTTPError(400, "the connection closed before the request body was complete")
            loop = self._conn.loop
            waiter = self._waiter = loop.create_future()
            # a client that stops sending mid-body must not hold the request (and its connection) for ever
            timer = loop.call_later(self._conn.server.body_timeout_s, _body_stalled, waiter,
                                    self._conn.server.body_timeout_s)  # fmt: skip
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

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
        self._upgrade_ignored = False  # the request just parsed asked for an upgrade and is served as HTTP/1.1
        self._current: Request | None = None  # the request whose body the parser is reading
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        self._unread = 0
        self._reading_paused = False
        self._idle: asyncio.TimerHandle | None = None
        self._lingering = False  # answered and half-closed; what the client still sends is dropped
        self._drained = 0
        self._linger: asyncio.TimerHandle | None = None

    # -- transport events -----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._linger is not None:
            self._linger.cancel()
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
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._head_began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._upgrade_ignored:
                self._reject(400, "protocol upgrades are not supported")
                return
            # a bodiless request asking for an upgrade is served as plain HTTP/1.1 (RFC 9110 7.8 lets a server
            # ignore Upgrade); llhttp reads nothing after it, so the connection closes after the answer
            self.closing = True
            self._pause_reading()
            current = self._current
            if current is not None and not current._complete:
                self._current = None
                current._finish()
            return
        except HTTPError as exc:  # raised by a callback below
            self._reject(exc.status, exc.message)
            return
        except httptools.HttpParserError as exc:
            error = self._parse_error  # a callback's HTTPError reaches here wrapped in httptools' own error
            if error is not None:
                self._reject(error.status, error.message)
            else:
                self._reject(400, f"malformed HTTP request: {exc}")
            return
        if self._in_head and not self._head_began:
            # llhttp buffers a header line until it ends: bound a head that never does
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._reject(431, "request head too large")
                return
        if self._task is None and not self._queue:
            self._arm_idle()  # nothing in flight (at most a head under way): the idle timer runs again

    def eof_received(self) -> bool:
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

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            self._refuse(431, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD or len(self._headers) >= MAX_HEADERS:
            self._refuse(431, "request head too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1").strip()))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            self._refuse(400, f"unsupported HTTP version {version}")
        if parser.should_upgrade():
            # llhttp stops at the end of an upgrade request's head, so its body would never be read: only a
            # bodiless request (curl --http2's h2c GET) is served, as plain HTTP/1.1
            headers = CIMultiDict(self._headers)
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
        request = Request(self, parser.get_method().decode("latin-1"), url, version, CIMultiDict(self._headers),
                          parser.should_keep_alive())  # fmt: skip
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
                if self._reading_paused and len(self._queue) <= _PIPELINE_DEPTH and self._unread <= _HIGH_WATER:
                    self._resume_reading()
        finally:
            self._task = None
            if not self.closed and not self._queue:
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
        if self._current is not None:
            self._current._fail(HTTPError(status, message))
        if self._task is not None:
            self.closing = True  # the request in flight gets its answer; nothing after it is read
            return
        body = self.server.error_body(status, message)
        reason = _REASONS.get(status, "").encode()
        head = (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n"
                b"Date: %s\r\n\r\n") % (status, reason, len(body), _DateCache.get())  # fmt: skip
        self.write(head + body)
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
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    def _arm_idle(self) -> None:
        if self._idle is None and not self.closed and not self._lingering:
            self._idle = self.loop.call_later(self.server.keepalive_s, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if self._task is None and not self._queue:
            self.close()

    def idle(self) -> bool:
        return self._task is None and not self._queue

    def close_lingering(self) -> None:
        """Close after a final answer while the client may still be sending (a body that was not read, a request
        refused mid-stream): send FIN, drop what still arrives for up to _LINGER_S / _LINGER_BYTES, then close.

        Closing at once with unread input makes the kernel answer with a reset, which can destroy the answer
        before the client reads it (a 413 for a large upload would reach the client as "connection reset")."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing() or not transport.can_write_eof():
            self.close()
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
        self._linger = self.loop.call_later(_LINGER_S, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


def _error_response(server: Server, status: int, message: str) -> Response:
    """The services' error JSON; the connection closes after it."""
    response = Response(body=server.error_body(status, message), status=status, content_type="application/json")
    response.force_close()
    return response


class Server:
    """Listening sockets, the connections they accepted, and a graceful shutdown."""

    def __init__(self, handler: Handler, *, max_body: int = 64 * 1024 * 1024, keepalive_s: float = 75.0,
                 body_timeout_s: float = 60.0,
                 error_body: Callable[[int, str], bytes] = error_body) -> None:  # fmt: skip
        self.handler = handler
        self.max_body = max_body
        self.keepalive_s = keepalive_s
        self.body_timeout_s = body_timeout_s  # longest wait for the next piece of a request body: then 408
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
