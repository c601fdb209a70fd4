"""Raw-socket helpers for tiered_http's tests: a client that reads answers byte-exact off the wire, and a server
started in the test's own event loop (127.0.0.1, port 0). Every read has a timeout: a server that hangs fails the
test instead of hanging it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict

from tiered_http import Request, Server, StreamResponse, json_response

T = 3.0  # the longest any single read waits before the test fails
Handler = Callable[[Request], Awaitable[StreamResponse]]
DATE = re.compile(rb"Date: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n")


def undated(raw: bytes) -> bytes:
    """The answer with its (one, well-formed) Date header cut out."""
    assert len(DATE.findall(raw)) == 1, raw[:300]
    return DATE.sub(b"", raw)


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: bytes
    chunks: list[bytes] | None  # the chunk payloads of a chunked body, in order
    raw: bytes  # head and body exactly as received


class Client:
    """One raw TCP connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_exactly(self, n: int) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), T)

    async def response(self, method: str = "GET") -> Reply:
        reader = self.reader
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, _reason = lines[0].split(" ", 2)
        assert version == "HTTP/1.1"
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name == name.strip(), line
            headers.add(name, value.strip())
        code = int(status)
        raw = head
        chunks: list[bytes] | None = None
        if method == "HEAD" or code in (204, 304) or 100 <= code < 200:
            body = b""
        elif headers.get("Transfer-Encoding") == "chunked":
            chunks = []
            while True:
                size_line = await asyncio.wait_for(reader.readuntil(b"\r\n"), T)
                size = int(size_line[:-2], 16)
                data = await asyncio.wait_for(reader.readexactly(size + 2), T)
                raw += size_line + data
                assert data.endswith(b"\r\n")
                if size == 0:
                    break
                chunks.append(data[:-2])
            body = b"".join(chunks)
        elif "Content-Length" in headers:
            body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), T)
            raw += body
        else:
            body = await asyncio.wait_for(reader.read(), T)  # close-delimited
            raw += body
        return Reply(code, headers, body, chunks, raw)

    async def at_eof(self) -> bool:
        """Whether the server closed the connection (a reset counts), with nothing more to read."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), T)
        except ConnectionResetError:
            return True
        return data == b""

    async def silent(self, seconds: float) -> bool:
        """Whether nothing arrives (and the connection stays open) for `seconds`."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        assert not data, f"unexpected bytes {data!r}"
        return False

    def close(self) -> None:
        self.writer.close()


class Harness:
    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port
        self.clients: list[Client] = []

    async def connect(self) -> Client:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), T)
        client = Client(reader, writer)
        self.clients.append(client)
        return client

    async def get(self, path: str = "/") -> Reply:
        client = await self.connect()
        client.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return await client.response()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serving(handler: Handler, **kwargs: Any) -> AsyncIterator[Harness]:
    server = Server(handler, **kwargs)
    [(host, port)] = await server.listen("127.0.0.1", 0)
    assert host == "127.0.0.1" and port > 0
    harness = Harness(server, port)
    try:
        yield harness
    finally:
        for client in harness.clients:
            client.close()
        await server.shutdown(1.0)


async def echo(request: Request) -> StreamResponse:
    """What the server parsed, and the body read whole."""
    body = await request.read()
    return json_response({
        "method": request.method, "path": request.path, "query": request.query_string,
        "version": request.version, "keep_alive": request.keep_alive, "content_length": request.content_length,
        "x_test": request.headers.getall("X-Test", []), "body": body.decode("latin-1"),
    })  # fmt: skip


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tiered_http" and r.levelno >= logging.ERROR]


def error_json(reply: Reply) -> dict[str, Any]:
    assert reply.headers["Content-Type"] == "application/json"
    data = json.loads(reply.body)
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    return dict(data["error"])
