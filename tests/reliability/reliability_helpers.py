"""Shared pieces of the reliability suite: a misbehaving OpenAI-compatible upstream, the real router as a process,
router configs, and a metrics reader.

Why a raw asyncio server instead of aiohttp for the upstream: the faults we need (a TCP reset, a connection closed
half way through a body, headers sent and then silence) are about bytes on the wire, which a framework hides. It
still speaks enough HTTP/1.1 (keep-alive, Content-Length, SSE bodies) for the router's pooled client.

Why the router runs as a subprocess (`python -m tiered_router serve`): it is what ships, it has its own event loop
and core, and its log is a file the secrets checks can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Fault modes of `Upstream` (what the stand-in does after reading a request).
OK = "ok"  # answer (JSON, or SSE when the body asks for stream)
ERROR = "error"  # answer `status` with an OpenAI-style error body
HANG = "hang"  # read the request, never answer
RESET = "reset"  # read the request, then reset the TCP connection (RST)
CLOSE_MID_BODY = "close_mid_body"  # headers with Content-Length, half the body, close
STALL_STREAM = "stall_stream"  # SSE headers and one event, then silence
CLOSE_MID_STREAM = "close_mid_stream"  # SSE headers and one event, then close without [DONE]
MODES = (OK, ERROR, HANG, RESET, CLOSE_MID_BODY, STALL_STREAM, CLOSE_MID_STREAM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def strict_json(raw: bytes) -> Any:
    """json.loads that refuses NaN/Infinity, as a real provider's JSON parser would."""

    def bad_constant(name: str) -> Any:
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(raw, parse_constant=bad_constant)


@dataclass
class Received:
    """One request exactly as the upstream read it off the socket."""

    path: str
    headers: dict[str, str]
    raw: bytes

    def body(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return None


@dataclass
class Upstream:
    """A stand-in OpenAI-compatible upstream on 127.0.0.1 whose behaviour (`mode`) can change between requests."""

    name: str
    mode: str = OK
    status: int = 503
    delay_s: float = 0.0  # before the response headers (a slow upstream)
    chunk_delay_s: float = 0.0
    chunks: int = 3
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> Upstream:
        """Listen (again on the same port after a `stop`, so a config pointing here stays valid)."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        """Stop listening and drop every open connection: from now on connects are refused (a tier outage)."""
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                self.received.append(request)
                keep_open = await self._respond(request, reader, writer)
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get("content-length", "0") or 0)
        raw = await reader.readexactly(length) if length else b""
        return Received(parts[1] if len(parts) > 1 else "/", headers, raw)

    async def _respond(self, request: Received, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request per `mode`; False when the connection must not be reused."""
        mode = self.mode
        if mode == HANG:
            await reader.read()  # until the router gives up and closes
            return False
        if mode == RESET:
            sock = writer.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        try:
            body = strict_json(request.raw)
        except ValueError:
            await _send_json(writer, 400, _error("body is not valid JSON", "invalid_request_error"))
            return True
        if not isinstance(body, dict):
            await _send_json(writer, 400, _error("body must be an object", "invalid_request_error"))
            return True
        if mode == ERROR:
            await _send_json(writer, self.status, _error(f"{self.name} failing", "server_error"))
            return True
        stream = body.get("stream") is True
        if mode == CLOSE_MID_BODY and not stream:
            payload = json.dumps(_completion(self.name, body, request.path)).encode()
            writer.write(_head(200, "application/json", len(payload)) + payload[: len(payload) // 2])
            await writer.drain()
            writer.close()  # FIN after half the promised Content-Length
            return False
        if stream or mode in (STALL_STREAM, CLOSE_MID_STREAM, CLOSE_MID_BODY):
            return await self._stream(reader, writer, body, request.path, mode)
        await _send_json(writer, 200, _completion(self.name, body, request.path))
        return True

    async def _stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict[str, Any], path: str, mode: str
    ) -> bool:
        """SSE with chunked transfer encoding (as real servers send it), so a cut stream is detectably cut.
        True when the stream ended normally (the connection stays usable for the next request)."""
        writer.write(_head(200, "text/event-stream", None))
        chat = path.endswith("/chat/completions")
        for i in range(self.chunks):
            choice = {"index": 0, "delta": {"content": f"{self.name}-{i} "}} if chat else {"index": 0, "text": f"{i} "}
            event = {"id": "s", "object": "chat.completion.chunk", "model": body.get("model"), "choices": [choice]}
            writer.write(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
            await writer.drain()
            if i == 0 and mode == STALL_STREAM:
                await reader.read()  # until the router gives up and closes
                return False
            if i == 0 and mode in (CLOSE_MID_STREAM, CLOSE_MID_BODY):
                await asyncio.sleep(0.05)  # let the first event arrive before the FIN (an RST could drop it)
                writer.close()
                return False
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        usage = {"prompt_tokens": 5, "completion_tokens": self.chunks, "total_tokens": 5 + self.chunks}
        writer.write(_chunk(b"data: " + json.dumps({"id": "s", "choices": [], "usage": usage}).encode() + b"\n\n"))
        writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _head(status: int, content_type: str, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send_json(writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
    payload = json.dumps(obj).encode()
    writer.write(_head(status, "application/json", len(payload)) + payload)
    await writer.drain()


def _error(message: str, type_: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": None}}


def _completion(name: str, body: dict[str, Any], path: str) -> dict[str, Any]:
    usage = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    if path.endswith("/chat/completions"):
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": f"answer from {name}"},
                                  "finish_reason": "stop"}  # fmt: skip
        return {"id": "c", "object": "chat.completion", "model": body.get("model"), "choices": [choice],
                "usage": usage}  # fmt: skip
    choice = {"index": 0, "text": f"answer from {name}", "finish_reason": "stop"}
    return {"id": "c", "object": "text_completion", "model": body.get("model"), "choices": [choice], "usage": usage}


# --- router config -------------------------------------------------------------------------------------------


def router_config(local_url: str, cloud_url: str, **overrides: Any) -> dict[str, Any]:
    """A local tier in front of a cloud tier. Keyword routes and the lexical encoder keep decisions deterministic
    and cheap: 'legal'/'analyse' go to the cloud, 'hello' stays local, anything else goes to `defaultTier`."""
    timeouts = {"connectMs": 500, "firstByteMs": 1500, "totalMs": 4000}
    config: dict[str, Any] = {
        "schemaVersion": 1,
        "policy": "reliability",
        "tiers": [
            {"name": "slm", "kind": "local", "baseURL": local_url, "model": "tiny-q4", "timeouts": timeouts,
             "pricing": {"inputPer1M": 0.05, "outputPer1M": 0.1}},
            {"name": "cloud", "kind": "cloud", "baseURL": cloud_url, "model": "frontier", "region": "eu-west-1",
             "timeouts": timeouts, "pricing": {"inputPer1M": 2.5, "outputPer1M": 10.0}},
        ],
        "defaultTier": "cloud",
        "routes": [
            {"name": "smalltalk", "tier": "slm", "keywords": ["hello"], "examples": ["say hello to me"]},
            {"name": "analysis", "tier": "cloud", "keywords": ["legal", "analyse"],
             "examples": ["write a detailed legal analysis"]},
        ],
        "classifier": {"encoder": {"kind": "lexical"}},
        "residency": {"namespaceClass": "restricted"},
        "fallback": {"retries": 1, "on": ["5xx", "timeout", "connect"]},
        "circuitBreaker": {"failureThreshold": 1000, "openSeconds": 30},
    }  # fmt: skip
    config.update(overrides)
    return config


def write_config(path: Path, config: dict[str, Any] | str) -> None:
    """Atomic replace, as a ConfigMap's symlink swap is."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(config if isinstance(config, str) else json.dumps(config))
    tmp.replace(path)


# --- the router process --------------------------------------------------------------------------------------


@dataclass
class RouterProcess:
    """`python -m tiered_router serve` on a free port, logging to a file."""

    config_path: Path
    log_path: Path
    log_level: str = "INFO"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> RouterProcess:
        self.port = free_port()
        cmd = [sys.executable, "-m", "tiered_router", "serve", "--config", str(self.config_path),
               "--host", "127.0.0.1", "--port", str(self.port), "--poll-seconds", "0.1",
               "--log-level", self.log_level]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=dict(os.environ))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"router exited ({self.process.returncode}):\n{self.log()[-3000:]}")
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.1)
        raise AssertionError(f"router not ready after {timeout}s:\n{self.log()[-3000:]}")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as rsp:
                return int(rsp.status), rsp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics(self) -> str:
        status, text = self.get("/metrics")
        assert status == 200, status
        return text

    def config_hash(self) -> str:
        status, text = self.get("/readyz")
        return str(json.loads(text).get("config", "")) if status == 200 else ""

    def wait_for_hash_change(self, old: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.config_hash()
            if new and new != old:
                return new
            time.sleep(0.05)
        raise AssertionError("router did not reload its config")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def is_openai_error(obj: Any) -> bool:
    """`{"error": {"message": str, "type": str, "param": ..., "code": ...}}` as the official SDKs parse it."""
    if not isinstance(obj, dict) or set(obj) != {"error"} or not isinstance(obj["error"], dict):
        return False
    err = obj["error"]
    return (
        isinstance(err.get("message"), str)
        and bool(err["message"])
        and isinstance(err.get("type"), str)
        and "param" in err
        and "code" in err
    )


class BackgroundLoop:
    """An event loop in a thread, for servers that synchronous code (hypothesis) must talk to."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@dataclass
class StandInRig:
    """The real router process in front of two stand-in upstreams (`slm` local, `cloud`) served by a background
    loop, so synchronous tests (hypothesis, schemathesis) and async ones share one set-up."""

    loop: BackgroundLoop
    slm: Upstream
    cloud: Upstream
    router: RouterProcess
    config_path: Path


@contextlib.contextmanager
def stand_in_rig(
    tmp: Path, config: Callable[[Upstream, Upstream], dict[str, Any]], log_level: str = "INFO"
) -> Iterator[StandInRig]:
    """Start the upstreams, write `config(slm, cloud)` and start the router on it; stop everything afterwards."""
    loop = BackgroundLoop()
    slm, cloud = Upstream("slm"), Upstream("cloud")
    loop.call(slm.start())
    loop.call(cloud.start())
    config_path = tmp / "router.json"
    write_config(config_path, config(slm, cloud))
    router = RouterProcess(config_path, tmp / "router.log", log_level=log_level)
    try:
        router.start()
        yield StandInRig(loop, slm, cloud, router, config_path)
    finally:
        router.stop()
        loop.call(slm.stop())
        loop.call(cloud.stop())
        loop.close()
