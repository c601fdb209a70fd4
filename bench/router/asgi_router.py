"""The router's request logic behind a bare ASGI callable (`app`) and a bare RSGI one (`rsgi_app`), so that
bench/router/overhead.py can run the same `RouterService.handle` on uvicorn and granian beside tiered_http.

Bench only, never shipped: it carries exactly what the bench's requests take (a whole JSON answer; the body read
through `iter_chunks`), no streaming, no Content-Encoding decoding, no config watching. The service is built from
the config file named by TIERED_BENCH_ROUTER_CONFIG, with the same upstream pool and dispatcher `RouterService.start`
creates, and the heap frozen after start-up as `tiered_router.__main__` does.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

from tiered_http import Response
from tiered_router.proxy import Dispatcher
from tiered_router.server import build_service
from tiered_router.upstream_http import UpstreamPool

SERVICE = build_service(Path(os.environ["TIERED_BENCH_ROUTER_CONFIG"]))
gc.collect()
gc.freeze()


def _start() -> None:
    if SERVICE.dispatcher is None:  # first request: the pool lives in the server's running loop
        SERVICE.pool = UpstreamPool(keepalive_s=60.0)
        SERVICE.dispatcher = Dispatcher(SERVICE.pool, SERVICE.metrics)


class BenchRequest:
    """What `RouterService.handle` reads from a request (tiered_http.Request's names)."""

    __slots__ = ("_chunks", "content_length", "headers", "keep_alive", "method", "path", "query_string", "version")

    def __init__(self, method: str, path: str, query: str, version: str, headers: CIMultiDict[str],
                 chunks: AsyncIterator[bytes]) -> None:  # fmt: skip
        self.method = method
        self.path = path
        self.query_string = query
        self.version = version
        self.headers = CIMultiDictProxy(headers)
        length = headers.get("Content-Length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.keep_alive = True
        self._chunks = chunks

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def read(self) -> bytes:
        return b"".join([c async for c in self._chunks])


async def _one(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data


def _whole(response: object) -> Response:
    if not isinstance(response, Response):
        raise RuntimeError("streamed answers are not part of this bench")
    return response


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:  # fmt: skip
    """ASGI 3."""
    if scope["type"] != "http":
        return
    _start()

    async def chunks() -> AsyncIterator[bytes]:
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
            body = message.get("body", b"")
            if body:
                yield body

    headers = CIMultiDict([(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]])
    request = BenchRequest(scope["method"], scope["path"], scope["query_string"].decode("latin-1"),
                           scope["http_version"], headers, chunks())  # fmt: skip
    response = _whole(await SERVICE.handle(request))  # type: ignore[arg-type]
    out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    out.append((b"content-length", b"%d" % len(response.body)))
    await send({"type": "http.response.start", "status": response.status, "headers": out})
    await send({"type": "http.response.body", "body": response.body})


class _Rsgi:
    """granian's native interface: the body arrives whole from `protocol()`, the answer leaves in one call."""

    async def __rsgi__(self, scope: Any, protocol: Any) -> None:
        _start()
        headers = CIMultiDict(list(scope.headers.items()))
        body = await protocol()
        request = BenchRequest(scope.method, scope.path, scope.query_string, scope.http_version, headers, _one(body))
        response = _whole(await SERVICE.handle(request))  # type: ignore[arg-type]
        protocol.response_bytes(response.status, list(response.headers.items()), response.body)


rsgi_app = _Rsgi()
