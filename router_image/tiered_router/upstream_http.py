"""A lean HTTP/1.1 client for the upstream tiers: keep-alive pooling on asyncio protocols, nothing more.

The dispatcher needs one thing from a client: POST a JSON body to a known origin and read the answer, whole or
piece by piece (SSE), with timeouts it sets itself. aiohttp's client does that through a request object, a
connector, cookie and redirect handling, tracing hooks and a payload stream per request; profiled, it was more than
half of the router's CPU time per request (docs/performance.md). This module keeps the part the router uses:

- one `Endpoint` per tier URL, with the request head (`POST path HTTP/1.1`, Host, Content-Type, Authorization)
  rendered once per config, so a request writes one buffer: head + Accept + Content-Length + body;
- idle connections pooled per origin (last used first, closed after `keepalive_s` idle or when the upstream closes
  them); a pooled connection that turns out to be closed before a single response byte arrives is retried once
  on a fresh connection (the race with an upstream's own keep-alive timeout), never after; so is one that answers
  503 with Retry-After (its replica is draining and did not process the request: a rolling update);
- responses framed by Content-Length, chunked transfer coding or connection close; `read_any()` returns body data as
  it arrives (the SSE relay forwards it chunk by chunk); a connection goes back to the pool only after a complete,
  keep-alive response;
- TLS through the standard library (`https://` tiers), with the system trust store.

Errors: `UpstreamConnectError` before a response head (refused, reset, closed, malformed head),
`UpstreamProtocolError` while reading a body (closed early, malformed chunking), `TimeoutError` at the deadline
(loop time) the caller passes to `post`/`read`/`read_any`: one timer per wait, no `asyncio.timeout` block, which
on the path every request takes costs a context object and a task cancellation. A response left unfinished (timed
out or not) closes its connection on release.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024
_HIGH_WATER = 1024 * 1024  # pause reading from the upstream when this much body is buffered and unread
_LOW_WATER = 256 * 1024


class UpstreamConnectError(Exception):
    """No usable response head: connection refused, reset or closed first, or a malformed head."""


class UpstreamProtocolError(Exception):
    """The response body could not be read to its end (connection closed early, broken chunked coding)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One upstream URL, with everything about it computed once (origin, TLS, request head prefix)."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: bytes  # request line + fixed headers, each ending in CRLF; Accept/Content-Length follow per request

    @staticmethod
    def from_url(url: str, headers: dict[str, str]) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL must be http(s)://host[:port]/path, got {url!r}")
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", "Accept-Encoding: identity"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        return Endpoint(key=(parts.scheme, parts.hostname, port), host=parts.hostname, port=port, tls=tls, head=head)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: a receive buffer and a waiter woken on data, EOF or loss."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.closed = False
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.eof = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, deadline: float | None = None) -> None:
        """Until more data, EOF or loss; TimeoutError at `deadline` (loop time).

        The deadline is one timer that fails the waiter, cheaper than an `asyncio.timeout` block around the caller
        (a context object, a task-cancel and its conversion back) on the path every request takes.
        """
        self.consumed()
        waiter = self.waiter = self.loop.create_future()
        if deadline is None:
            await waiter
            return
        timer = self.loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def consumed(self) -> None:
        if self.paused and len(self.buf) < _LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        return not self.eof and not self.buf and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class UpstreamResponse:
    """Status and headers of an upstream answer; the body is read with `read()` or `read_any()`."""

    def __init__(
        self,
        pool: UpstreamPool,
        endpoint: Endpoint,
        conn: _Connection,
        status: int,
        headers: list[tuple[str, str]],
        keep_alive: bool,
    ) -> None:
        self._pool = pool
        self._endpoint = endpoint
        self._conn: _Connection | None = conn
        self.status = status
        self.headers = headers
        self._keep_alive = keep_alive
        self._done = False
        self._mode = "close"  # length | chunked | close
        self._remaining = 0
        self._chunk_left = 0
        self._chunk_crlf = False
        self._trailer = False
        te = self.header("transfer-encoding")
        length = self.header("content-length")
        if te is not None and "chunked" in te.lower():
            self._mode = "chunked"
        elif length is not None:
            try:
                self._remaining = int(length)
            except ValueError:
                raise UpstreamConnectError(f"invalid Content-Length {length!r}") from None
            if self._remaining < 0:
                raise UpstreamConnectError(f"invalid Content-Length {length!r}")
            self._mode = "length"
            self._done = self._remaining == 0
        elif status in (204, 304):
            self._done = True
        else:
            self._keep_alive = False  # the body ends when the connection does

    def header(self, name: str) -> str | None:
        """The first header called `name` (case-insensitive), or None."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The media type without parameters (aiohttp's convention: application/octet-stream when absent)."""
        value = self.header("content-type")
        return value.split(";", 1)[0].strip().lower() if value else "application/octet-stream"

    def _take(self) -> bytes:
        """Decode as much body as the buffer holds now."""
        conn = self._conn
        assert conn is not None
        buf = conn.buf
        if self._mode == "length":
            n = min(self._remaining, len(buf))
            data = bytes(buf[:n])
            del buf[:n]
            self._remaining -= n
            if self._remaining == 0:
                self._done = True
            return data
        if self._mode == "close":
            data = bytes(buf)
            buf.clear()
            return data
        out: list[bytes] = []
        while buf:
            if self._chunk_left:
                n = min(self._chunk_left, len(buf))
                out.append(bytes(buf[:n]))
                del buf[:n]
                self._chunk_left -= n
                if self._chunk_left == 0:
                    self._chunk_crlf = True
                continue
            if self._chunk_crlf:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise UpstreamProtocolError("chunk not followed by CRLF")
                del buf[:2]
                self._chunk_crlf = False
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 4096:
                    raise UpstreamProtocolError("chunk size line too long")
                break
            line = bytes(buf[:end])
            del buf[: end + 2]
            if self._trailer:
                if not line:  # the empty line after the last chunk (and any trailers)
                    self._done = True
                    break
                continue
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise UpstreamProtocolError(f"invalid chunk size {line[:40]!r}") from None
            if size < 0:
                raise UpstreamProtocolError("negative chunk size")
            if size == 0:
                self._trailer = True
            else:
                self._chunk_left = size
        return b"".join(out)

    async def read_any(self, deadline: float | None = None) -> bytes:
        """The next piece of body as it arrives; b"" once the body is complete. TimeoutError at `deadline`."""
        while True:
            if self._done:
                return b""
            conn = self._conn
            if conn is None:
                raise UpstreamProtocolError("response already released")
            data = self._take()
            if data:
                conn.consumed()
                return data
            if self._done:
                return b""
            if conn.eof:
                if self._mode == "close":
                    self._done = True
                    return b""
                raise UpstreamProtocolError("upstream closed the connection before the body was complete")
            await conn.wait(deadline)

    def read_nowait(self) -> bytes | None:
        """The whole body when it has already arrived (a small answer usually comes with its head), else None
        (nothing consumed)."""
        conn = self._conn
        if conn is None or self._mode != "length" or len(conn.buf) < self._remaining:
            return None if not self._done else b""
        return self._take()

    async def read(self, deadline: float | None = None) -> bytes:
        """The whole body; TimeoutError when it is not complete at `deadline` (loop time)."""
        parts: list[bytes] = []
        while True:
            data = await self.read_any(deadline)
            if not data:
                return b"".join(parts)
            parts.append(data)

    def release(self) -> None:
        """Back to the pool after a complete keep-alive response; closed otherwise. Idempotent."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep_alive and conn.reusable():
            self._pool._put(self._endpoint, conn)
        else:
            conn.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


def _parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """(status, headers, keep-alive) from a response head without its final CRLFCRLF."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise UpstreamConnectError(f"malformed status line {lines[0][:80]!r}")
    status = int(parts[1])
    headers: list[tuple[str, str]] = []
    connection = ""
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise UpstreamConnectError(f"malformed header line {line[:80]!r}")
        value = value.strip()
        headers.append((name, value))
        if name.lower() == "connection":
            connection = value.lower()
    keep_alive = parts[0] == "HTTP/1.1" and "close" not in connection
    return status, headers, keep_alive


class UpstreamPool:
    """Keep-alive connections per origin, shared by every tier and request of one router process."""

    def __init__(self, keepalive_s: float = 60.0, max_idle_per_origin: int = 256) -> None:
        self.keepalive_s = keepalive_s
        self.max_idle = max_idle_per_origin
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    def _put(self, endpoint: Endpoint, conn: _Connection) -> None:
        idle = self._idle.setdefault(endpoint.key, [])
        conn.idle_since = time.monotonic()
        idle.append(conn)
        if len(idle) > self.max_idle:
            idle.pop(0).close()

    def _get(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint.key)
        if not idle:
            return None
        cutoff = time.monotonic() - self.keepalive_s
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to be timed out by the upstream
            if conn.idle_since >= cutoff and conn.reusable():
                return conn
            conn.close()
        return None

    async def _connect(self, endpoint: Endpoint, connect_s: float, deadline: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        connect_by = loop.time() + connect_s if deadline is None else min(loop.time() + connect_s, deadline)
        ctx: ssl.SSLContext | None = None
        if endpoint.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            ctx = self._ssl
        try:
            async with asyncio.timeout_at(connect_by):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop),
                    endpoint.host,
                    endpoint.port,
                    ssl=ctx,
                    server_hostname=endpoint.host if ctx else None,
                )
        except TimeoutError:
            raise
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"{type(exc).__name__}: {exc.strerror or exc}") from None
        return conn

    async def post(
        self, endpoint: Endpoint, body: bytes, accept: str, connect_s: float, deadline: float | None = None
    ) -> UpstreamResponse:
        """Send `body` and wait for the response head: TimeoutError at `deadline` (loop time; connecting included,
        itself bounded by `connect_s`). Without a deadline the caller bounds the wait with its own timeout."""
        if "\r" in accept or "\n" in accept or not accept.isascii():
            accept = "*/*"
        request = endpoint.head + f"Accept: {accept}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        for attempt in (0, 1):
            conn = self._get(endpoint)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(endpoint, connect_s, deadline)
            try:
                assert conn.transport is not None
                if len(body) < 65536:
                    conn.transport.write(request + body)
                else:
                    conn.transport.writelines((request, body))
                head = await self._read_head(conn, deadline)
                if head is None:  # closed with nothing received
                    conn.close()
                    if reused and attempt == 0:
                        continue  # a pooled connection the upstream had just closed: once more, fresh
                    raise UpstreamConnectError("upstream closed the connection without a response")
                status, headers, keep_alive = head
                if reused and attempt == 0 and status == 503 and any(k.lower() == "retry-after" for k, _ in headers):
                    # The replica this pooled connection is bound to is going away (a draining server answers
                    # 503 + Retry-After without processing the request): once more on a fresh connection, which
                    # a Service routes to a live replica.
                    conn.close()
                    continue
                return UpstreamResponse(self, endpoint, conn, status, headers, keep_alive)
            except BaseException:
                conn.close()
                raise
        raise UpstreamConnectError("upstream closed the connection without a response")  # pragma: no cover

    async def _read_head(
        self, conn: _Connection, deadline: float | None
    ) -> tuple[int, list[tuple[str, str]], bool] | None:
        received = False
        while True:
            buf = conn.buf
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(buf[:end])
                del buf[: end + 4]
                status, headers, keep_alive = _parse_head(head)
                if 100 <= status < 200:  # informational (100 Continue): the real head follows
                    received = True
                    continue
                return status, headers, keep_alive
            if buf:
                received = True
            if len(buf) > MAX_HEAD:
                raise UpstreamConnectError("response head larger than 64 KiB")
            if conn.eof:
                if received:
                    raise UpstreamConnectError("upstream closed the connection in the middle of a response head")
                return None
            await conn.wait(deadline)

    def close(self) -> None:
        """Close every idle connection (on shutdown)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
