"""Helpers for the SLM integration tests: loading tiny models, running servers in-process or as processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tiered_slm.engine import Engine
from tiered_slm.model import ModelOptions, ModelReport, load_engine, warm_up
from tiered_slm.server import DEFAULT_STREAM_INTERVAL_S, SlmServer
from tiered_slm.speculative import SpeculativeConfig

CTX = 1024
THREADS = 1  # the CI box has 2 shared cores; one thread keeps the suite polite and still fast


@dataclass(frozen=True)
class TinyModels:
    f32: Path
    q8_0: Path
    q4_k_m: Path
    draft: Path

    def by_type(self) -> dict[str, Path]:
        return {"F32": self.f32, "Q8_0": self.q8_0, "Q4_K_M": self.q4_k_m}


def options(path: Path, **overrides: object) -> ModelOptions:
    fields: dict[str, object] = {"source": str(path), "n_ctx": CTX, "threads": THREADS,
                                 "cache_dir": path.parent / "cache"}
    fields.update(overrides)
    return ModelOptions(**fields)  # type: ignore[arg-type]


def load(path: Path, speculative: SpeculativeConfig | None = None, **overrides: object) -> tuple[Engine, ModelReport]:
    engine, report = load_engine(options(path, speculative=speculative or SpeculativeConfig(), **overrides))
    warm_up(engine)
    return engine, report


@asynccontextmanager
async def running_server(engine: Engine, report: ModelReport, queue_size: int = 16,
                         stream_interval_s: float = DEFAULT_STREAM_INTERVAL_S) -> AsyncIterator[
        tuple[str, SlmServer]]:
    """A real server on 127.0.0.1 (port picked by the OS) serving ``engine``."""
    server = SlmServer(queue_size=queue_size, stream_interval_s=stream_interval_s)
    server.attach(engine, report)
    port = await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        await server.stop(1.0)
        server.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (comments skipped)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    base_url: str
    log_lines: list[str]


def start_server_process(args: list[str], timeout_s: float = 60.0, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``tiered-slm serve`` as a real subprocess and wait for its 'listening on' line."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tiered_slm", "serve", "--host", "127.0.0.1", "--port", "0",
         "--threads", str(THREADS), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if match:
            return ServerProcess(process, f"http://127.0.0.1:{match.group(1)}", lines)
    process.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


def finish_process(server: ServerProcess, timeout_s: float = 30.0) -> tuple[int, str]:
    """Wait for the process to exit; return its exit code and its whole log.

    The rest of the log is read through the same text stream `start_server_process` read lines from:
    `communicate(timeout=...)` reads the pipe's file descriptor directly and would lose whatever `readline` had
    already buffered past the 'listening on' line (a start-up failure logged right after it went missing so).
    """
    assert server.process.stdout is not None
    stdout = server.process.stdout
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.append(stdout.read()), daemon=True)
    reader.start()
    try:
        server.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        reader.join(timeout=10)
        raise AssertionError("server did not exit in time:\n" + "".join(server.log_lines + rest)) from None
    reader.join(timeout=10)
    return server.process.returncode, "".join(server.log_lines + rest)

