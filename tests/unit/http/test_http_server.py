"""tiered_http's server against real sockets: framing, keep-alive, pipelining, request bodies (chunked, encoded,
capped, 100-continue, back-pressure), malformed requests, streamed responses, disconnects, errors, idle timeout
and graceful shutdown.

Every test starts a `Server` on 127.0.0.1 (port 0) in the test's own event loop and talks to it with raw bytes
over `asyncio.open_connection`, so what is asserted is what a client sees on the wire (the Date header, which
changes every second, is cut out before comparing whole answers). A few cases use aiohttp's client as a real
peer. Every read has a timeout: a server that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import ssl
import time
import zlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from raw_http import DATE, Harness, T, echo, error_json, errors_logged, serving, undated

from tiered_http import HTTPError, Request, Response, Server, StreamResponse, error_body, json_response


# -- 1. requests, keep-alive and Connection
async def test_get_and_post_on_one_keep_alive_connection_get_exact_answers() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: t\r\nX-Test: one\r\nx-test: two\r\n\r\n")
        r = await c.response()
        assert r.status == 200 and "Connection" not in r.headers
        assert json.loads(r.body) == {
            "method": "GET", "path": "/a/b", "query": "x=1&y=%20", "version": "1.1", "keep_alive": True,
            "content_length": None, "x_test": ["one", "two"], "body": "",
        }  # fmt: skip
        assert undated(r.raw) == (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(r.body), r.body)
        )
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
        r = await c.response()
        assert json.loads(r.body)["method"] == "POST"
        assert json.loads(r.body)["body"] == "hello world"
        assert json.loads(r.body)["content_length"] == 11
        assert await c.silent(0.05)  # still open


async def test_whole_responses_text_body_status_reason_and_no_body_statuses() -> None:
    async def handler(request: Request) -> StreamResponse:
        if request.path == "/text":
            return Response(text="héllo", headers={"X-A": "1"})
        if request.path == "/204":
            return Response(status=204)
        if request.path == "/418":
            return Response(body=b"tea", status=418, reason="I'm a teapot", content_type="text/x-tea")
        return Response(body=b"raw")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"".join(b"GET /%s HTTP/1.1\r\nHost: t\r\n\r\n" % p for p in (b"text", b"204", b"418", b"raw")))
        text, empty, tea, raw = [await c.response() for _ in range(4)]
        assert undated(text.raw) == (
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n\r\n"
            b"h\xc3\xa9llo"
        )
        assert undated(empty.raw) == b"HTTP/1.1 204 No Content\r\n\r\n"
        assert (
            undated(tea.raw) == b"HTTP/1.1 418 I'm a teapot\r\nContent-Type: text/x-tea\r\nContent-Length: 3\r\n\r\ntea"
        )
        assert undated(raw.raw) == b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nraw"
        assert await c.silent(0.05)


async def test_http10_without_keep_alive_gets_connection_close_and_the_server_closes() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"GET /old HTTP/1.0\r\n\r\n")
        r = await c.response()
        assert r.headers["Connection"] == "close"
        assert json.loads(r.body)["version"] == "1.0" and json.loads(r.body)["keep_alive"] is False
        assert await c.at_eof()


async def test_http10_with_keep_alive_is_answered_keep_alive_and_stays_open() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        for _ in range(2):
            c.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            r = await c.response()
            assert r.status == 200 and r.headers["Connection"] == "keep-alive"
        assert await c.silent(0.05)


async def test_connection_close_from_the_client_closes_after_the_response() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi")
        r = await c.response()
        assert r.headers["Connection"] == "close" and json.loads(r.body)["body"] == "hi"
        assert await c.at_eof()


async def test_client_half_close_after_a_whole_request_still_gets_the_answer() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        c.writer.write_eof()
        r = await c.response()
        assert r.status == 200 and json.loads(r.body)["body"] == "hi"
        assert await c.at_eof()  # (Connection: close only if the FIN was seen before the head was rendered)


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes() -> None:
    """A client that sends part of its body and then nothing: the read fails after body_timeout_s with 408 in the
    error JSON, the handler's error goes back, and the connection closes; a body that arrives in pieces within
    the deadline is read whole."""
    async with serving(echo, body_timeout_s=0.6) as h:
        slow = await h.connect()
        slow.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab")
        for piece in (b"cd", b"ef"):
            await asyncio.sleep(0.1)
            slow.send(piece)
        assert json.loads((await slow.response()).body)["body"] == "abcdef"
        stalled = await h.connect()
        stalled.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        r = await stalled.response()
        assert r.status == 408 and r.headers["Connection"] == "close"
        error = error_json(r)
        assert error["code"] == "request_timeout" and "0.6 s" in error["message"]
        assert await stalled.at_eof()
        assert (await h.get("/")).status == 200  # the server serves on


async def test_absolute_form_target_keeps_path_and_query() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"GET http://example.com/v1/models?limit=3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        data = json.loads((await c.response()).body)
        assert (data["path"], data["query"]) == ("/v1/models", "limit=3")


# -- 2. pipelining
async def test_pipelined_requests_in_one_send_are_answered_in_order() -> None:
    order: list[str] = []

    async def handler(request: Request) -> StreamResponse:
        order.append(request.path)
        if request.path == "/first":
            await asyncio.sleep(0.05)  # the second, quicker one must still wait its turn
        return Response(body=request.path.encode() + b":" + await request.read())

    async with serving(handler) as h:
        c = await h.connect()
        c.send(
            b"POST /first HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /third HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
        )
        bodies = [(await c.response()).body for _ in range(3)]
        assert bodies == [b"/first:abc", b"/second:", b"/third:xy"]
        assert order == ["/first", "/second", "/third"]
        assert await c.silent(0.05)


async def test_pipelined_request_after_connection_close_is_not_served() -> None:
    seen: list[str] = []

    async def handler(request: Request) -> StreamResponse:
        seen.append(request.path)
        return Response(body=b"ok")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response()
        assert r.body == b"ok" and r.headers["Connection"] == "close"
        assert await c.at_eof()
        assert seen == ["/a"]


# -- 3. chunked request bodies
async def test_chunked_request_body_is_read_whole() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1\r\n \r\n")
        await asyncio.sleep(0.02)
        c.send(b"5;ext=1\r\nworld\r\n0\r\nTrailer: x\r\n\r\n")
        data = json.loads((await c.response()).body)
        assert data["body"] == "hello world" and data["content_length"] is None
        assert await c.silent(0.05)


async def test_chunked_request_body_arrives_piece_by_piece_through_iter_chunks() -> None:
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        async for chunk in request.iter_chunks():
            got.append(chunk)
            arrived.set()
        return Response(body=b"|".join(got))

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"alpha", b"be", b"gamma-delta"):
            arrived.clear()
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            await asyncio.wait_for(arrived.wait(), T)  # each piece reaches the handler before the next is sent
        c.send(b"0\r\n\r\n")
        r = await c.response()
        assert got == [b"alpha", b"be", b"gamma-delta"]
        assert r.body == b"alpha|be|gamma-delta"


# -- 4. Expect: 100-continue
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def test_100_continue_is_sent_only_when_the_handler_reads_the_body() -> None:
    gate = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        await gate.wait()
        return Response(body=await request.read())

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert await c.silent(0.1)  # the handler has not read yet: no interim answer
        gate.set()
        assert await c.read_exactly(len(CONTINUE)) == CONTINUE
        c.send(b"hello")
        r = await c.response()
        assert r.status == 200 and r.body == b"hello" and "Connection" not in r.headers
        # the connection is still usable and a request without Expect gets no interim answer
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        assert (await c.response()).raw.startswith(b"HTTP/1.1 200 OK\r\n")


async def test_handler_answering_without_reading_sends_no_100_and_closes() -> None:
    async def handler(request: Request) -> StreamResponse:
        return json_response({"refused": True}, status=403)

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        r = await c.response()
        assert r.raw.startswith(b"HTTP/1.1 403 Forbidden\r\n")  # no 100 Continue before it
        assert r.headers["Connection"] == "close" and json.loads(r.body) == {"refused": True}
        assert await c.at_eof()


async def test_100_continue_with_aiohttp_client() -> None:
    async with (
        serving(echo) as h,
        aiohttp.ClientSession() as session,
        session.post(h.url + "/e", data=b"payload", expect100=True) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["body"] == "payload"


# -- 5. Content-Encoding
def _raw_deflate(data: bytes) -> bytes:
    co = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return co.compress(data) + co.flush()


@pytest.mark.parametrize(
    ("coding", "encode"),
    [("gzip", gzip.compress), ("GZip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "gzip-case", "deflate-zlib", "deflate-raw"],
)
async def test_encoded_bodies_are_decoded(coding: str, encode: Callable[[bytes], bytes]) -> None:
    plain = b'{"messages": "' + b"0123456789" * 5000 + b'"}'
    body = encode(plain)
    async with serving(echo) as h:
        c = await h.connect()
        head = b"POST /z HTTP/1.1\r\nHost: t\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (
            coding.encode(),
            len(body),
        )
        c.send(head + body)
        data = json.loads((await c.response()).body)
        assert data["body"].encode() == plain and data["content_length"] == len(body)
        # chunked and split mid-stream, read piece by piece
        c.send(
            b"POST /z HTTP/1.1\r\nHost: t\r\nContent-Encoding: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
            % coding.encode()
        )
        for i in range(0, len(body), 97):
            piece = body[i : i + 97]
            c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        c.send(b"0\r\n\r\n")
        assert json.loads((await c.response()).body)["body"].encode() == plain


async def test_gzip_body_through_aiohttp_client_compress() -> None:
    async with (
        serving(echo) as h,
        aiohttp.ClientSession() as session,
        session.post(h.url + "/z", data=b"squeeze me " * 100, compress="gzip") as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["body"] == "squeeze me " * 100


@pytest.mark.parametrize(
    "body",
    [b"this is not gzip at all", gzip.compress(b"cut short " * 100)[:-12]],
    ids=["not-gzip", "truncated"],
)
async def test_undecodable_body_raises_400_from_read(body: bytes) -> None:
    async def catching(request: Request) -> StreamResponse:
        try:
            await request.read()
        except HTTPError as exc:
            return json_response({"status": exc.status, "message": exc.message})
        return json_response({"status": None})

    request = b"POST /z HTTP/1.1\r\nHost: t\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )
    async with serving(catching) as h:
        c = await h.connect()
        c.send(request)
        data = json.loads((await c.response()).body)
        assert data["status"] == 400 and data["message"].startswith("request body cannot be decoded: gzip: ")
    async with serving(echo) as h:  # the handler lets it escape: the server answers 400 and closes
        c = await h.connect()
        c.send(request)
        r = await c.response()
        assert r.status == 400 and r.headers["Connection"] == "close"
        err = error_json(r)
        assert err["code"] == "invalid_request" and err["type"] == "invalid_request_error"
        assert err["message"].startswith("request body cannot be decoded: gzip: ")
        assert await c.at_eof()


async def test_unknown_content_encoding_is_415() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST /z HTTP/1.1\r\nHost: t\r\nContent-Encoding: zstd\r\nContent-Length: 4\r\n\r\nabcd")
        r = await c.response()
        assert r.status == 415 and r.headers["Connection"] == "close"
        assert error_json(r) == {
            "message": "unsupported Content-Encoding 'zstd' (gzip, deflate or identity)",
            "type": "invalid_request_error", "param": None, "code": "unsupported_encoding",
        }  # fmt: skip
        assert await c.at_eof()


# -- 6. max_body
async def test_max_body_is_a_hard_cap_with_413() -> None:
    statuses: list[int | None] = []

    async def catching(request: Request) -> StreamResponse:
        try:
            body = await request.read()
        except HTTPError as exc:
            statuses.append(exc.status)
            raise
        statuses.append(None)
        return Response(body=b"%d" % len(body))

    async with serving(catching, max_body=1000) as h:
        c = await h.connect()
        c.send(b"POST /m HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000)
        assert (await c.response()).body == b"1000"  # exactly the cap is fine
        c.send(b"POST /m HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001)
        r = await c.response()
        assert r.status == 413 and r.headers["Connection"] == "close"
        assert error_json(r) == {
            "message": "request body exceeds 1000 bytes", "type": "invalid_request_error", "param": None,
            "code": "body_too_large",
        }  # fmt: skip
        assert await c.at_eof()
        c = await h.connect()  # chunked, over the cap across pieces
        c.send(b"POST /m HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1f4\r\n" + b"b" * 500 + b"\r\n")
        await asyncio.sleep(0.02)
        c.send(b"1f5\r\n" + b"b" * 501 + b"\r\n0\r\n\r\n")
        assert (await c.response()).status == 413
        assert await c.at_eof()
        assert statuses == [None, 413, 413]


# -- 7. malformed requests
def _client_hello() -> bytes:
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="router.example")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"
    return hello


MALFORMED = [
    pytest.param(b"garbage\r\n\r\n", 400, "malformed HTTP request", id="garbage-line"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400, "malformed HTTP request", id="space-in-name"
    ),
    pytest.param(b"GET / HTTP/1.1\r\nHost: t\r\nX-A\r\n\r\n", 400, "malformed HTTP request", id="no-colon"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "malformed HTTP request",
        id="length-and-chunked",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
        "malformed HTTP request",
        id="two-lengths",
    ),
    pytest.param(b"GET / HTTP/2.0\r\n\r\n", 400, "unsupported HTTP version 2.0", id="http2-version"),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (65 * 1024) + b"\r\n\r\n",
        431,
        "request head too large",
        id="header-over-64k",
    ),
    pytest.param(
        b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"\r\n",
        431,
        "request head too large",
        id="too-many-headers",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc",
        400,
        "protocol upgrades are not supported",
        id="upgrade-post-with-body",
    ),
    pytest.param(
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "protocol upgrades are not supported", id="connect"
    ),
]


async def test_bodiless_upgrade_request_is_answered_as_http11_then_closed() -> None:
    """RFC 9110 7.8 lets a server ignore Upgrade: curl --http2's h2c GET gets its answer over HTTP/1.1. llhttp
    reads nothing after an upgrade request's head, so the connection closes after the answer."""
    handled: list[str] = []

    async def handler(request: Request) -> StreamResponse:
        handled.append(request.path)
        return Response(body=b"plain")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
               b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\nGET /second HTTP/1.1\r\nHost: t\r\n\r\n")  # fmt: skip
        r = await c.response()
        assert r.status == 200 and r.body == b"plain" and r.headers["Connection"] == "close"
        assert await c.at_eof()
        assert handled == ["/ws"]  # nothing after the upgrade request is parsed as HTTP/1.1


@pytest.mark.parametrize(("request_bytes", "status", "message"), MALFORMED)
async def test_malformed_requests_get_a_json_error_and_the_connection_closes(
    request_bytes: bytes, status: int, message: str
) -> None:
    handled: list[str] = []

    async def handler(request: Request) -> StreamResponse:
        handled.append(request.path)
        return Response(body=b"should not happen")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(request_bytes)
        r = await c.response()
        assert r.status == status and r.headers["Connection"] == "close"
        err = error_json(r)
        assert err["message"].startswith(message), err
        assert err["code"] == ("header_too_large" if status == 431 else "invalid_request")
        assert await c.at_eof()
        assert handled == []
        assert (await h.get("/after")).body == b"should not happen"  # the server keeps serving


@pytest.mark.parametrize(
    ("start", "filler", "limit", "status", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ", b"a", 64 * 1024, 431, "request head too large"),
        (b"GET /", b"u", 8 * 1024, 414, "request target longer than 8192 bytes"),
    ],
    ids=["header-line", "url"],
)
async def test_head_that_never_ends_is_refused_once_over_its_limit(
    start: bytes, filler: bytes, limit: int, status: int, message: str
) -> None:
    """A head sent in pieces without its end: refused once it passes the limit (the head's 64 KiB: 431; the
    request target's 8 KiB: 414), not buffered forever. The client sends a piece only after the server has read
    the last one, so the close is clean (no reset)."""
    async with serving(echo) as h:
        c = await h.connect()
        c.send(start)
        answer = asyncio.ensure_future(c.response())
        sent = len(start)
        while not answer.done() and sent < 1024 * 1024:
            c.send(filler * 16384)
            sent += 16384
            await asyncio.sleep(0.01)
        r = await answer
        assert limit < sent <= limit + 256 * 1024 + 16384 * 4
        assert r.status == status and r.headers["Connection"] == "close"
        assert error_json(r)["message"] == message
        assert await c.at_eof()


async def test_malformed_body_after_a_good_head_fails_the_read_with_400() -> None:
    """The head was fine, so the handler runs; the bad chunk framing reaches it as a 400 from the read."""
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\nzz\r\n")
        r = await c.response()
        assert r.status == 400 and r.headers["Connection"] == "close"
        assert error_json(r)["message"].startswith("malformed HTTP request: ")
        assert await c.at_eof()


async def test_tls_client_hello_gets_400_or_a_close_never_a_hang() -> None:
    async with serving(echo) as h:
        c = await h.connect()
        c.send(_client_hello())
        try:
            answer = await asyncio.wait_for(c.reader.read(), T)
        except ConnectionResetError:
            answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:100]
        assert (await h.get("/after")).status == 200


async def test_custom_error_body_is_used_for_server_made_errors() -> None:
    def shaped(status: int, message: str) -> bytes:
        return json.dumps({"detail": message, "status": status}).encode()

    async def boom(request: Request) -> StreamResponse:
        raise ValueError("boom")

    async with serving(boom, error_body=shaped) as h:
        c = await h.connect()
        c.send(b"nonsense\r\n\r\n")
        assert json.loads((await c.response()).body)["status"] == 400
        r = await h.get("/")
        assert json.loads(r.body) == {"detail": "internal server error", "status": 500}


# -- 8. HEAD
async def test_head_gets_headers_with_content_length_and_no_body() -> None:
    async def handler(request: Request) -> StreamResponse:
        if request.path == "/stream":
            response = StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            await response.write(b"never sent for HEAD")
            await response.write_eof()
            return response
        return Response(text="hello")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response("HEAD")
        assert (
            undated(r.raw) == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\n"
        )
        c.send(b"HEAD /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response("HEAD")
        assert undated(r.raw) == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # no body bytes were left on the wire before this answer
        r = await c.response()
        assert r.raw.startswith(b"HTTP/1.1 200 OK\r\n") and r.body == b"hello"


# -- 9. StreamResponse
async def _stream_pieces(request: Request) -> StreamResponse:
    response = StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for piece in (b"ab", b"", b"cde", b"f" * 5000):
        await response.write(piece)
    await response.write_eof()
    return response


async def test_stream_response_is_chunked_on_http11_and_decodes_to_the_written_pieces() -> None:
    async with serving(_stream_pieces) as h:
        c = await h.connect()
        c.send(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response()
        assert r.chunks == [b"ab", b"cde", b"f" * 5000]  # an empty write sends nothing (it would end the body)
        assert undated(r.raw) == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nab\r\n3\r\ncde\r\n1388\r\n" + b"f" * 5000 + b"\r\n0\r\n\r\n"
        )
        c.send(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive after a chunked answer
        assert (await c.response()).body == b"abcde" + b"f" * 5000


@pytest.mark.parametrize("connection", [b"", b"Connection: keep-alive\r\n"], ids=["plain", "keep-alive-asked"])
async def test_stream_response_is_close_delimited_on_http10(connection: bytes) -> None:
    async with serving(_stream_pieces) as h:
        c = await h.connect()
        c.send(b"GET /s HTTP/1.0\r\n%s\r\n" % connection)
        r = await c.response()  # read to EOF: the close ends the body
        assert undated(r.raw) == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nabcde" + b"f" * 5000
        )
        assert await c.at_eof()


async def test_stream_response_with_content_length_is_not_chunked_and_keeps_alive() -> None:
    async def handler(request: Request) -> StreamResponse:
        response = StreamResponse(headers={"Content-Length": "6"})
        await response.prepare(request)
        await response.write(b"abc")
        await response.write(b"def")
        return response  # the server finishes it

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(2):
            r = await c.response()
            assert undated(r.raw) == b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabcdef"


async def test_stream_response_from_aiohttp_client() -> None:
    async with serving(_stream_pieces) as h, aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(h.url + "/s") as resp:
                assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
                assert await resp.read() == b"abcde" + b"f" * 5000


def _spy_writes(request: Request, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every transport.write of this connection from now on."""
    transport = request.transport
    assert transport is not None
    writes: list[bytes] = []
    original = transport.write

    def spy(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        original(data)

    monkeypatch.setattr(transport, "write", spy)
    return writes


HEAD_SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("mode", ["defer", "send_head", "immediate"])
async def test_when_the_stream_head_leaves(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What each transport.write carried: with `defer_head` the head waits for the first data and leaves with it
    in one write (one segment); `send_head()` sends it alone; without deferral it leaves at `prepare`."""
    observed: list[list[bytes]] = []
    gate = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        writes = _spy_writes(request, monkeypatch)

        def snapshot() -> None:
            observed.append([undated(w) if w.startswith(b"HTTP/") else w for w in writes])

        response = StreamResponse(headers={"Content-Type": "text/event-stream"}, defer_head=mode != "immediate")
        await response.prepare(request)
        snapshot()
        if mode == "send_head":
            response.send_head()
            snapshot()
        await response.write(b"first")
        snapshot()
        await gate.wait()
        await response.write(b"second")
        await response.write_eof()
        return response

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        if mode == "defer":
            expected = HEAD_SSE + b"5\r\nfirst\r\n"
            received = await asyncio.wait_for(c.reader.read(65536), T)
            while len(undated(received) if DATE.search(received) else received) < len(expected):
                received += await asyncio.wait_for(c.reader.read(65536), T)  # tolerate a split, however unlikely
            assert undated(received) == expected
            gate.set()
            rest = await c.read_exactly(len(b"6\r\nsecond\r\n0\r\n\r\n"))
            assert rest == b"6\r\nsecond\r\n0\r\n\r\n"
        else:
            gate.set()
            r = await c.response()
            assert r.chunks == [b"first", b"second"]
    if mode == "defer":
        assert observed == [[], [HEAD_SSE + b"5\r\nfirst\r\n"]]  # nothing at prepare; head and data in one write
    elif mode == "send_head":
        assert observed == [[], [HEAD_SSE], [HEAD_SSE, b"5\r\nfirst\r\n"]]  # the head alone, then the data
    else:
        assert observed == [[HEAD_SSE], [HEAD_SSE, b"5\r\nfirst\r\n"]]


async def test_deferred_head_never_written_goes_out_with_the_end_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    spied: list[list[bytes]] = []

    async def handler(request: Request) -> StreamResponse:
        spied.append(_spy_writes(request, monkeypatch))
        response = StreamResponse(defer_head=True)
        await response.prepare(request)
        return response  # the server finishes it

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response()
        expected = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        assert undated(r.raw) == expected
        assert [undated(w) for w in spied[0]] == [expected]


async def test_unprepared_stream_response_returned_by_the_handler_is_finished() -> None:
    async def handler(request: Request) -> StreamResponse:
        return StreamResponse(headers={"X-Empty": "1"})

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(2):
            r = await c.response()
            assert undated(r.raw) == b"HTTP/1.1 200 OK\r\nX-Empty: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"


async def test_handler_failing_mid_stream_truncates_the_stream_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: Request) -> StreamResponse:
        response = StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        raise ValueError("upstream broke")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), T)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        rest = await asyncio.wait_for(c.reader.read(), T)
        assert rest == b"7\r\npartial\r\n"  # no terminating chunk, no second (500) answer: the client sees the cut
    assert any("unhandled error" in m for m in errors_logged(caplog))


# -- 10. the client going away
async def test_client_disconnecting_mid_stream_fails_the_write_quietly(caplog: pytest.LogCaptureFixture) -> None:
    failures: list[BaseException] = []
    done = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        if request.path == "/ok":
            return Response(body=b"ok")
        response = StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(1000):
                await response.write(b"x" * 1024)
                await asyncio.sleep(0.005)
        except ConnectionError as exc:
            failures.append(exc)
            raise
        finally:
            done.set()
        return response

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), T)
        await c.read_exactly(100)
        c.writer.transport.abort()
        await asyncio.wait_for(done.wait(), T)
        assert len(failures) == 1 and isinstance(failures[0], ConnectionResetError)
        assert (await h.get("/ok")).body == b"ok"
    assert errors_logged(caplog) == []


async def test_client_gone_before_a_late_answer_is_not_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """The client sends a request and closes at once; the handler answers later with back-to-back writes: the
    first lands on a dead socket (the transport fails it without raising), the next raises, and nothing is logged
    as a server error; `request.transport` tells the handler the client is gone."""
    gate = asyncio.Event()
    failures: list[BaseException] = []
    transports: list[object] = []

    async def handler(request: Request) -> StreamResponse:
        if request.path == "/ok":
            return Response(body=b"ok")
        await gate.wait()
        response = StreamResponse()
        await response.prepare(request)
        await asyncio.sleep(0.05)  # the client's kernel answers the head with a reset
        try:
            await response.write(b"a")
            await response.write(b"b")
        except ConnectionError as exc:
            failures.append(exc)
            # a moment later (not now: the handler must let the error escape at once) the request shows it
            asyncio.get_running_loop().call_later(0.01, lambda: transports.append(request.transport))
            raise
        return response

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /late HTTP/1.1\r\nHost: t\r\n\r\n")
        await c.writer.drain()
        c.close()
        await asyncio.sleep(0.05)
        gate.set()
        for _ in range(100):
            if transports:
                break
            await asyncio.sleep(0.01)
        assert len(failures) == 1 and isinstance(failures[0], ConnectionResetError)
        assert transports == [None]
        assert (await h.get("/ok")).body == b"ok"
    assert errors_logged(caplog) == []


async def test_client_closing_mid_body_fails_the_read_with_400() -> None:
    results: list[object] = []

    async def handler(request: Request) -> StreamResponse:
        try:
            body = await request.read()
        except HTTPError as exc:
            results.append(exc.status)
            raise
        results.append(body)
        return Response(body=body)

    async with serving(handler) as h:
        c = await h.connect()  # half-close: the client stops sending but still reads
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        await asyncio.sleep(0.02)
        c.writer.write_eof()
        r = await c.response()
        assert r.status == 400 and r.headers["Connection"] == "close"
        assert error_json(r)["message"] == "the connection closed before the request body was complete"
        assert await c.at_eof()
        c = await h.connect()  # full close
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        await asyncio.sleep(0.02)
        c.writer.transport.abort()
        for _ in range(100):
            if len(results) == 2:
                break
            await asyncio.sleep(0.01)
        assert results == [400, 400]


# -- 11. handler errors
async def test_handler_exception_is_a_500_json_answer_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: Request) -> StreamResponse:
        if request.path == "/boom":
            raise KeyError("secret detail")
        return Response(body=b"fine")

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"GET /boom HTTP/1.1\r\nHost: t\r\n\r\nGET /never HTTP/1.1\r\nHost: t\r\n\r\n")
        r = await c.response()
        body = error_body(500, "internal server error")
        assert undated(r.raw) == (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )
        assert error_json(r)["type"] == "server_error" and b"secret" not in r.body
        assert await c.at_eof()
        assert (await h.get("/fine")).body == b"fine"
    assert errors_logged(caplog) == ["unhandled error on GET /boom"]


async def test_http_error_escaping_the_handler_is_answered_with_its_status() -> None:
    async def handler(request: Request) -> StreamResponse:
        raise HTTPError(422, "bad field")

    async with serving(handler) as h:
        r = await h.get("/")
        assert r.status == 422 and r.headers["Connection"] == "close"
        assert error_json(r) == {"message": "bad field", "type": "invalid_request_error", "param": None,
                                 "code": "http_error"}  # fmt: skip


# -- 12. idle keep-alive timeout
async def test_idle_keep_alive_connection_is_closed_after_keepalive_s() -> None:
    async with serving(echo, keepalive_s=0.2) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await c.response()
        started = time.monotonic()
        assert await c.at_eof()
        assert 0.1 < time.monotonic() - started < 1.5
        quiet = await h.connect()  # never sends anything
        started = time.monotonic()
        assert await quiet.at_eof()
        assert 0.1 < time.monotonic() - started < 1.5


async def test_busy_connection_is_not_closed_by_the_idle_timer() -> None:
    async def slow(request: Request) -> StreamResponse:
        await asyncio.sleep(0.4)
        return Response(body=b"slow but served")

    async with serving(slow, keepalive_s=0.2) as h:
        assert (await h.get("/")).body == b"slow but served"


async def test_client_stalling_mid_head_gets_408_at_the_head_deadline() -> None:
    async with serving(echo, keepalive_s=30, head_timeout_s=0.2) as h:
        c = await h.connect()
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n")  # the head never ends
        r = await c.response()
        assert r.status == 408 and r.headers["Connection"] == "close"
        assert error_json(r)["message"] == "request head not complete within 0.2 s"
        assert await c.at_eof()


# -- 13. shutdown
async def test_shutdown_finishes_in_flight_requests_closes_idle_ones_and_refuses_new() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        if request.path == "/slow":
            entered.set()
            await gate.wait()
        return Response(body=b"done " + request.path.encode())

    server = Server(handler)
    [(_, port)] = await server.listen("127.0.0.1", 0)
    h = Harness(server, port)
    idle = await h.connect()
    idle.send(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await idle.response()).body == b"done /fast"
    slow = await h.connect()
    slow.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(entered.wait(), T)

    stopping = asyncio.create_task(server.shutdown(5.0))
    assert await idle.at_eof()
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), T)
    assert not stopping.done()
    gate.set()
    r = await slow.response()
    assert r.body == b"done /slow" and r.headers["Connection"] == "close"
    assert await slow.at_eof()
    await asyncio.wait_for(stopping, T)
    for client in h.clients:
        client.close()


async def test_shutdown_timeout_closes_a_connection_whose_handler_does_not_finish() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def handler(request: Request) -> StreamResponse:
        entered.set()
        await gate.wait()
        return Response(body=b"too late")

    server = Server(handler)
    [(_, port)] = await server.listen("127.0.0.1", 0)
    h = Harness(server, port)
    c = await h.connect()
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    await asyncio.wait_for(entered.wait(), T)
    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(0.2), T)
    assert time.monotonic() - started < 1.5
    assert await c.at_eof()
    gate.set()  # the late handler finds the connection gone; nothing breaks
    await asyncio.sleep(0.02)
    c.close()


# -- 14. request body back-pressure
async def test_large_body_to_a_slow_reader_is_read_completely_with_reading_paused() -> None:
    body = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # 3 MiB
    seen: dict[str, Any] = {}

    async def handler(request: Request) -> StreamResponse:
        await asyncio.sleep(0.3)  # let the client fill everything the server will buffer
        conn: Any = request._conn
        seen["paused"] = conn._reading_paused
        seen["buffered"] = conn._unread
        digest = hashlib.sha256()
        size = 0
        peak = 0
        async for chunk in request.iter_chunks():
            peak = max(peak, conn._unread)
            digest.update(chunk)
            size += len(chunk)
            await asyncio.sleep(0.001)
        seen["peak"] = peak
        return json_response({"size": size, "sha256": digest.hexdigest()})

    async with serving(handler) as h:
        c = await h.connect()
        c.send(b"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
        c.send(body)
        sending = asyncio.ensure_future(c.writer.drain())
        r = await c.response()
        await asyncio.wait_for(sending, T)
        assert json.loads(r.body) == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        assert "Connection" not in r.headers
        limit = 1024 * 1024 + 256 * 1024  # the high-water mark plus one socket read
        assert seen["paused"] is True and seen["buffered"] <= limit
        assert seen["peak"] <= limit


async def test_aiohttp_client_reuses_the_keep_alive_connection() -> None:
    peers: set[object] = set()

    async def handler(request: Request) -> StreamResponse:
        transport = request.transport
        assert transport is not None
        peers.add(transport.get_extra_info("peername"))
        return json_response({"got": json.loads(await request.read())})

    async with serving(handler) as h, aiohttp.ClientSession() as session:
        for i in range(3):
            async with session.post(h.url + "/v1/x", json={"i": i}) as resp:
                assert resp.status == 200 and await resp.json() == {"got": {"i": i}}
    assert len(peers) == 1


def _upload_then_read(port: int, body_size: int) -> tuple[bytes, str]:
    """A plain blocking client as most are: send the whole request (head and body), then read the answer."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=T) as sock:
        sent_error = ""
        try:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % body_size)
            sock.sendall(b"x" * body_size)
        except OSError as exc:  # the server may stop reading; what matters is whether the answer arrives
            sent_error = type(exc).__name__
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError as exc:
            return data, f"{sent_error} then {type(exc).__name__}"
        return data, sent_error


async def test_answer_before_a_large_unread_body_reaches_the_client_with_a_lingering_close() -> None:
    """A handler that refuses an upload on its headers (413 on Content-Length) answers before the body is read.
    Closing at once with that body unread makes the kernel send a reset, and a client still sending would see
    "connection reset" instead of the 413; the server half-closes and drains the rest instead."""

    async def refuse(request: Request) -> StreamResponse:
        response = json_response({"error": "too large"}, status=413)
        response.force_close()
        return response

    async with serving(refuse) as h:
        for _ in range(3):
            data, error = await asyncio.to_thread(_upload_then_read, h.port, 8 * 1024 * 1024)
            assert data.startswith(b"HTTP/1.1 413 "), (data[:100], error)
            assert data.endswith(b'{"error": "too large"}'), (data[-100:], error)
            assert "Reset" not in error, error


async def test_a_client_that_half_closed_is_not_kept_for_the_lingering_close() -> None:
    """Found by tests/fuzz/fuzz_http_request.py: a body cut short by the client's EOF is answered 400, and the
    connection closes at once; before, the lingering close waited 2 s for input that could no longer come."""
    async with serving(echo) as h:
        c = await h.connect()
        c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 7\r\n\r\nabc")
        c.writer.write_eof()
        r = await c.response()
        assert r.status == 400 and r.headers["Connection"] == "close"
        assert await c.at_eof()
        for _ in range(50):
            if not h.server.connections:
                break
            await asyncio.sleep(0.01)
        assert not h.server.connections
