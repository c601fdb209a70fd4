"""Coverage-guided fuzzing (atheris, libFuzzer) of tiered_http's request handling: parser callbacks, framing,
pipelining, flow control, deadlines and body decoding, through a real connection.

    python tests/fuzz/fuzz_http_request.py [libFuzzer flags] CORPUS_DIR [SEED_DIR ...]

Input format: byte 0 picks the handler (below) and byte 1 how the stream is cut into reads (0: one read; n: pieces
of 1 + (n % 64) bytes, so n = 64 feeds it byte by byte); the rest is what a client sends. Each input gets a fresh
connection over a socketpair on one uvloop event loop kept for the whole run, with the client's end half-closed
after the last byte. Seeds (tests/fuzz/corpus/request/) and a dictionary of HTTP tokens (tests/fuzz/http.dict)
start the search.

A "crash" is any of: an exception the loop reports (a callback or task that failed unseen); an error logged by
tiered_http (a handler failure it turned into a 500); an answer that is not a well-formed sequence of HTTP/1.1
responses, or a status other than the handler's 200 and the server's own refusals; a decoded piece larger than
INFLATE_STEP or a decoded body over max_body; the connection still open 3 s (loop time) after the client's EOF;
a task left running after the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import sys

import atheris

with atheris.instrument_imports(include=["tiered_http"]):
    from tiered_http import Request, Response, Server, StreamResponse, json_response
    from tiered_http.server import INFLATE_STEP

MAX_BODY = 256 * 1024
# what the server itself may answer (parse errors, limits, deadlines, codings, the connection cap)
SERVER_STATUSES = {400, 408, 413, 414, 415, 431, 501, 503}
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r\n]*")


class Finding(AssertionError):
    """An invariant the server broke on this input."""


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


async def _echo_read(request: Request) -> StreamResponse:
    body = await request.read()
    if len(body) > MAX_BODY:
        raise Finding(f"read() returned {len(body)} bytes, over max_body {MAX_BODY}")
    return json_response({"method": request.method, "path": request.path, "length": len(body)},
                         headers={"X-Method": request.method})


async def _echo_pieces(request: Request) -> StreamResponse:
    total = 0
    async for piece in request.iter_chunks():
        if len(piece) > INFLATE_STEP:
            raise Finding(f"a body piece of {len(piece)} bytes, over INFLATE_STEP")
        total += len(piece)
        if total > MAX_BODY:
            raise Finding(f"iter_chunks passed max_body: {total}")
    return Response(body=b"%d" % total, headers={"X-Method": request.method})


async def _no_read(request: Request) -> StreamResponse:
    return Response(text="answered without reading the body", headers={"X-Method": request.method})


async def _streamed(request: Request) -> StreamResponse:
    response = StreamResponse(defer_head=request.path.endswith("d"), headers={"X-Method": request.method})
    await response.prepare(request)
    await response.write(b"first ")
    await response.write(b"")
    await response.write(request.method.encode())
    await response.write_eof()
    return response


HANDLERS = [_echo_read, _echo_pieces, _no_read, _streamed]


def check_responses(out: bytes) -> list[int]:
    """The statuses of the well-formed HTTP/1.1 responses that make up `out`; Finding when it is anything else."""
    statuses: list[int] = []
    pos = 0
    while pos < len(out):
        end = out.find(b"\r\n\r\n", pos)
        if end < 0:
            raise Finding(f"a response head that never ends: {out[pos : pos + 200]!r}")
        lines = out[pos:end].split(b"\r\n")
        match = STATUS_LINE.fullmatch(lines[0])
        if match is None:
            raise Finding(f"bad status line {lines[0][:100]!r}")
        status = int(match.group(1))
        headers: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip() or b"\n" in value or b"\r" in value:
                raise Finding(f"bad header line {line[:100]!r}")
            headers.setdefault(name.lower(), []).append(value.strip())
        pos = end + 4
        statuses.append(status)
        if 100 <= status < 200:
            if headers:
                raise Finding(f"an interim response with headers: {headers}")
            continue
        if len(headers.get(b"date", [])) != 1:
            raise Finding(f"not exactly one Date header: {headers}")
        if headers.get(b"x-method") == [b"HEAD"] or status in (204, 304):
            pass  # no body, whatever the framing headers say
        elif b"content-length" in headers and pos == len(out) and headers.get(b"connection") == [b"close"]:
            pass  # the server's own last answer to a HEAD request (no body; the handler never saw it)
        elif b"transfer-encoding" in headers:
            if headers[b"transfer-encoding"] != [b"chunked"] or b"content-length" in headers:
                raise Finding(f"bad framing headers {headers}")
            while True:
                line_end = out.find(b"\r\n", pos)
                if line_end < 0:
                    raise Finding("a chunk size line that never ends")
                size = int(out[pos:line_end], 16)
                pos = line_end + 2
                if out[pos + size : pos + size + 2] != b"\r\n":
                    raise Finding("a chunk not followed by CRLF")
                pos += size + 2
                if size == 0:
                    break
        elif b"content-length" in headers:
            [length] = headers[b"content-length"]
            pos += int(length)
            if pos > len(out):
                raise Finding("a body shorter than its Content-Length")
        else:
            if headers.get(b"connection") != [b"close"]:
                raise Finding(f"a close-delimited body without Connection: close: {headers}")
            pos = len(out)  # the body runs to the close
        if status >= 300 and status not in SERVER_STATUSES:
            raise Finding(f"status {status} ({out[:300]!r})")
    return statuses


class Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop() if "--asyncio" in sys.argv else _uvloop()
        self.loop_errors: list[str] = []
        self.loop.set_exception_handler(self._loop_error)
        self.log = _Recorder()
        logging.getLogger("tiered_http").addHandler(self.log)
        logging.getLogger("tiered_http").propagate = False
        self.handler_index = 0
        self.server = self.loop.run_until_complete(self._server())

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        self.loop_errors.append(f"{context.get('message')}: {context.get('exception')!r}")

    async def _server(self) -> Server:
        async def dispatch(request: Request) -> StreamResponse:
            return await HANDLERS[self.handler_index](request)

        return Server(dispatch, max_body=MAX_BODY, keepalive_s=0.5, head_timeout_s=0.5, body_timeout_s=0.5,
                      max_connections=8)  # fmt: skip

    def run(self, data: bytes) -> None:
        if len(data) < 2:
            return
        self.handler_index = data[0] % len(HANDLERS)
        step = 0 if data[1] == 0 else 1 + data[1] % 64
        stream = data[2:]
        pieces = [stream] if step == 0 else [stream[i : i + step] for i in range(0, len(stream), step)]
        self.loop_errors.clear()
        self.log.records.clear()
        out = self.loop.run_until_complete(self._one(pieces))
        if self.loop_errors:
            raise Finding(f"the loop reported: {self.loop_errors}")
        if self.log.records:
            raise Finding(f"tiered_http logged errors: {self.log.records}")
        check_responses(out)

    async def _one(self, pieces: list[bytes]) -> bytes:
        from tiered_http.server import _Connection

        server_sock, client_sock = socket.socketpair()
        client_sock.setblocking(False)
        try:
            await self.loop.connect_accepted_socket(lambda: _Connection(self.server), server_sock)
            try:
                for piece in pieces:
                    await self.loop.sock_sendall(client_sock, piece)
                    await asyncio.sleep(0)
                client_sock.shutdown(socket.SHUT_WR)
            except ConnectionError:
                pass  # the server answered and closed before reading it all (a refusal): read what it said
            out = bytearray()
            deadline = self.loop.time() + 3.0
            while True:
                try:
                    chunk = await asyncio.wait_for(self.loop.sock_recv(client_sock, 65536), deadline - self.loop.time())
                except TimeoutError:
                    raise Finding(f"still open 3 s after the client's EOF; sent {pieces!r:.300}") from None
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    break
                out += chunk
        finally:
            client_sock.close()
        for _ in range(5):  # let the connection's task and timers settle
            await asyncio.sleep(0)
        if self.server.connections:
            await asyncio.sleep(0.01)
        if self.server.connections:
            raise Finding("a connection still counted after it closed")
        current = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if left:
            await asyncio.sleep(0.01)
            left = [t for t in left if not t.done()]
            if left:
                raise Finding(f"tasks left running: {left}")
        return bytes(out)


def _uvloop() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


def main() -> None:
    harness = Harness()
    atheris.Setup([a for a in sys.argv if a != "--asyncio"], harness.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
