"""The router's lean upstream HTTP/1.1 client against real sockets: framing, keep-alive reuse, stale connections,
malformed answers, and the pre-bound metric children the request path uses.

Each test runs a small asyncio TCP server that writes exactly the bytes under test, so the client sees what a
misbehaving upstream would send, byte for byte.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tiered_router.metrics import RouterMetrics
from tiered_router.proxy import Usage, usage_from_body
from tiered_router.upstream_http import (
    Endpoint,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamProtocolError,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


def run(handler: Handler, scenario: Callable[[Endpoint, UpstreamPool, dict[str, Any]], Awaitable[None]]) -> None:
    async def main() -> None:
        seen: dict[str, Any] = {"connections": 0, "requests": []}

        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen["connections"] += 1
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await wrapped(_Recorder(reader, seen), writer)  # type: ignore[arg-type]

        server = await asyncio.start_server(recording, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        endpoint = Endpoint.from_url(
            f"http://127.0.0.1:{port}/v1/chat/completions", {"Content-Type": "application/json"}
        )
        pool = UpstreamPool()
        try:
            await asyncio.wait_for(scenario(endpoint, pool, seen), 10)
        finally:
            pool.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


class _Recorder:
    """A StreamReader stand-in that records each request head and body the server reads."""

    def __init__(self, reader: asyncio.StreamReader, seen: dict[str, Any]) -> None:
        self.reader = reader
        self.seen = seen

    async def readuntil(self, sep: bytes) -> bytes:
        data = await self.reader.readuntil(sep)
        self.seen["requests"].append(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self.reader.readexactly(n)
        self.seen["requests"][-1] += data
        return data


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + (b"Content-Length: %d\r\n\r\n" % len(body))
        + body
    )


def test_content_length_answers_reuse_one_connection_and_send_the_exact_request() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            _, body = await _read_request(reader)
            writer.write(_ok(b'{"echo":' + body + b"}"))
            await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        for i in range(3):
            async with await pool.post(ep, b'{"n":%d}' % i, "application/json", 1.0) as r:
                assert r.status == 200 and r.content_type == "application/json"
                assert await r.read() == b'{"echo":{"n":%d}}' % i
        assert seen["connections"] == 1
        head = seen["requests"][0]
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nAccept: application/json\r\n" in head and b'\r\nContent-Length: 7\r\n\r\n{"n":0}' in head

    run(handler, scenario)


def test_chunked_body_is_decoded_piece_by_piece_across_split_writes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n")
        writer.write(b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
            frame = b"%x\r\n%s\r\n" % (len(piece), piece)
            for i in range(0, len(frame), 3):  # the chunk framing itself arrives in fragments
                writer.write(frame[i : i + 3])
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.write(b"0\r\nX-Trailer: t\r\n\r\n")
        await writer.drain()
        await _read_request(reader)  # the connection must be reusable afterwards
        writer.write(_ok(b"{}"))
        await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert r.content_type == "text/event-stream"
            pieces = []
            while chunk := await r.read_any():
                pieces.append(chunk)
        assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n"
        assert len(pieces) > 1  # relayed as it arrived, not buffered to the end
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert await r.read() == b"{}"
        assert seen["connections"] == 1

    run(handler, scenario)


def test_close_delimited_body_is_read_to_eof_and_the_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"1}")
        await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        for _ in range(2):
            async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
                assert await r.read() == b'{"a":1}'
        assert seen["connections"] == 2

    run(handler, scenario)


def test_pooled_connection_the_upstream_closed_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_ok(b"{}"))  # keep-alive answer, then the upstream drops the idle connection
        await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert await r.read() == b"{}"
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert r.status == 200 and await r.read() == b"{}"
        assert seen["connections"] == 2

    run(handler, scenario)


def _draining() -> bytes:
    body = b'{"error":{"code":"draining"}}'
    return (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
            + (b"Content-Length: %d\r\n\r\n" % len(body)) + body)


def test_draining_replica_behind_a_pooled_connection_gets_the_request_sent_again_on_a_fresh_one() -> None:
    """A Service spreads new connections over replicas, but a pooled keep-alive connection stays with the replica
    it was opened to. When that replica drains (a rolling update), it answers 503 with Retry-After without
    processing the request: the pool sends it once more on a fresh connection (the Service routes that to a live
    replica), instead of failing a request nothing had answered (seen as dropped requests on the real node)."""
    opened = {"n": 0}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened["n"] += 1
        replica, answered = opened["n"], 0
        while True:
            await _read_request(reader)
            writer.write(_draining() if replica == 1 and answered >= 1 else _ok(b"{}"))
            answered += 1
            await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert r.status == 200 and await r.read() == b"{}"
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:  # pooled connection → the draining replica
            assert r.status == 200 and await r.read() == b"{}"
        assert seen["connections"] == 2 and len(seen["requests"]) == 3

    run(handler, scenario)


def test_a_fresh_connection_answering_draining_is_an_answer_not_a_retry_loop() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(_draining())
            await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert r.status == 503 and b"draining" in await r.read()
        assert seen["connections"] == 1 and len(seen["requests"]) == 1

    run(handler, scenario)


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 2OO OK\r\n\r\n", b"SMTP ready\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"],
    ids=["status", "protocol", "header"],
)
def test_malformed_response_heads_are_connect_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        with pytest.raises(UpstreamConnectError):
            await pool.post(ep, b"{}", "*/*", 1.0)

    run(handler, scenario)


@pytest.mark.parametrize(
    "answer",
    [
        b'HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"a"',
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ndata\r\n",
    ],
    ids=["short-length", "chunked-cut", "chunk-size"],
)
def test_bodies_cut_short_or_malformed_are_protocol_errors(answer: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            with pytest.raises(UpstreamProtocolError):
                await r.read()

    run(handler, scenario)


def test_informational_answer_is_skipped_and_unread_bodies_are_not_pooled() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + _ok(b'{"big":"' + b"x" * 1000 + b'"}'))
            await writer.drain()

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert r.status == 200  # body left unread (e.g. a 5xx the dispatcher does not relay)
        async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
            assert (await r.read()).startswith(b'{"big":')
        assert seen["connections"] == 2

    run(handler, scenario)


def test_refused_connection_is_a_connect_error() -> None:
    async def scenario() -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening: refused
            ep = Endpoint.from_url(f"http://127.0.0.1:{port}/v1/completions", {})
            with pytest.raises(UpstreamConnectError):
                await UpstreamPool().post(ep, b"{}", "*/*", 1.0)

    asyncio.run(scenario())


def test_endpoint_renders_host_path_query_and_fixed_headers_once() -> None:
    ep = Endpoint.from_url("https://user@api.example.com/openai/v1/chat/completions?api-version=1", {"A": "b"})
    assert ep.tls and ep.port == 443 and ep.host == "api.example.com"
    assert ep.head.startswith(b"POST /openai/v1/chat/completions?api-version=1 HTTP/1.1\r\nHost: api.example.com\r\n")
    assert ep.head.endswith(b"A: b\r\n")
    with pytest.raises(ValueError):
        Endpoint.from_url("ftp://x/y", {})


def test_request_path_metric_children_are_bound_once_and_count_into_the_labelled_series() -> None:
    m = RouterMetrics()
    assert m.requests_by("slm", "r", "success") is m.requests_by("slm", "r", "success")
    m.requests_by("slm", "r", "success").inc()
    m.tier("slm").tokens_in.inc(5)
    assert m.requests.labels("slm", "r", "success")._value.get() == 1
    assert m.tokens.labels("slm", "in")._value.get() == 5
    assert m.tier("slm") is m.tier("slm")


def test_reused_connection_closed_without_an_answer_is_retried_once_on_a_fresh_one() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first_connection = not handler.__dict__.setdefault("seen", False)
        handler.__dict__["seen"] = True
        await _read_request(reader)
        writer.write(_ok(b"{}"))
        await writer.drain()
        if first_connection:
            await _read_request(reader)  # the race with a keep-alive timeout: request taken, connection dropped

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        for _ in range(2):
            async with await pool.post(ep, b"{}", "*/*", 1.0) as r:
                assert r.status == 200 and await r.read() == b"{}"
        assert seen["connections"] == 2

    run(handler, scenario)


def test_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    async def scenario(ep: Endpoint, pool: UpstreamPool, seen: dict[str, Any]) -> None:
        with pytest.raises(UpstreamConnectError):
            await pool.post(ep, b"{}", "*/*", 1.0)
        assert seen["connections"] == 1

    run(handler, scenario)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"choices": [{"message": {"content": "x" * 5000}}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}},
         Usage(7, 3)),
        ({"choices": [{"message": {"content": 'say "usage": {"prompt_tokens": 1, "completion_tokens": 1}'}}],
          "usage": {"prompt_tokens": 9, "completion_tokens": 4}}, Usage(9, 4)),
        ({"usage": {"prompt_tokens": 2, "completion_tokens": 5}, "choices": [{"text": "usage"}]}, Usage(2, 5)),
        ({"usage": None, "choices": []}, None),
        ({"usage": {"prompt_tokens": "7", "completion_tokens": 3}}, None),
        ({"choices": []}, None),
    ],
    ids=["last", "quoted-in-content", "not-last", "null", "not-int", "absent"],
)  # fmt: skip
def test_usage_is_read_from_the_body_without_a_full_parse_and_matches_one(body: Any, expected: Usage | None) -> None:
    raw = json.dumps(body).encode()
    assert usage_from_body(raw) == expected
    assert usage_from_body(b'{"usage": {"prompt_tokens": 1') is None  # truncated: no crash, no usage
