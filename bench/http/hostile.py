"""The router against a hostile client, before and after, in one run: `python bench/http/hostile.py
--baseline-src DIR[:DIR]` (directories holding another tiered_http and tiered_router, e.g. the previous commit's).

Every scenario runs against a fresh `tiered-router serve` process per code version (keyword policy, a real
upstream on 127.0.0.1), the two versions back to back, so both see the same machine:

- flood: one connection with a 4 KiB receive buffer that never reads sends `GET /openapi.json` x 2,000 every
  0.2 s for `--flood-seconds`; the router's RSS (/proc/PID/status) is sampled every 0.2 s while the connection is
  held, then 2 s after the client closed. Target: growth <= 50 MiB and bounded (no growth over the second half).
- bomb: 1 MB of gzip that inflates to 1 GiB, POSTed to /v1/chat/completions, once and then 4 at a time, while a
  second connection asks /healthz every 5 ms. The peak RSS is the kernel's high-water mark (VmHWM, reset through
  /proc/PID/clear_refs before each bomb). Targets: peak growth <= 30 MiB, no /healthz answer over 50 ms.
- slowloris: a request head sent one byte per second; how long until the router closes it (capped at
  `--slowloris-cap` seconds). Target: closed within the head deadline (tiered_http's head_timeout_s, 10 s).
- connections: `--connections` idle connections opened at once, then one more client asks /healthz. Target: the
  cap (1,000 by default) holds, the extra clients get 503 and a close, and a client gets 200 again once some close.

Writes bench/http/hostile.json (figures, load average, settings). Timing and memory targets live here, not in the
tests: tests/unit/http/test_http_hostile.py asserts the behaviour (bounded, closed, 503).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ROUTER_BENCH = REPO / "bench" / "router"
sys.path.insert(0, str(ROUTER_BENCH))
PY = sys.executable
MIB = 1024 * 1024

UPSTREAM_CODE = r"""
import json, sys
from aiohttp import web
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}).encode()
async def h(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application(); app.router.add_post("/v1/chat/completions", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Router:
    """One `tiered-router serve` process of one code version, or (`server`) the router's request logic on another
    HTTP server through bench/router/asgi_router.py (uvicorn, granian-rsgi)."""

    def __init__(self, label: str, pythonpath: str | None, config: Path, workdir: Path,
                 server: str | None = None) -> None:  # fmt: skip
        self.label = label
        self.port = free_port()
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        if server is None:
            cmd = [PY, "-m", "tiered_router", "serve", "--config", str(config), "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "WARNING"]  # fmt: skip
            # cwd is a scratch directory: `python -m` puts the cwd first on sys.path, where it must not shadow the
            # baseline's packages
            cwd = workdir
        else:
            from overhead import server_command

            cmd = server_command(server, self.port)
            env["TIERED_BENCH_ROUTER_CONFIG"] = str(config)
            cwd = ROUTER_BENCH
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_http(f"http://127.0.0.1:{self.port}/readyz")
        code = ("import importlib.metadata as m, tiered_http, tiered_router; print(tiered_http.__file__, "
                f"tiered_router.__file__, {server!r} and m.version({(server or '').split('-')[0]!r}))")  # fmt: skip
        self.code_paths = subprocess.run([PY, "-c", code], env=env, cwd=workdir, capture_output=True, text=True,
                                         check=True).stdout.split()  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        """RSS of the process and its children (granian serves from a worker process)."""
        from overhead import _tree

        return sum(proc_status(pid)["VmRSS"] for pid in _tree(self.pid))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def connect(port: int, rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def read_status(sock: socket.socket) -> int:
    """The status of the next answer on `sock` (the head only; the rest stays unread), 0 on close."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        data += chunk
    parts = data.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def healthz_once(sock: socket.socket) -> float:
    """One GET /healthz on a keep-alive connection: seconds until the whole answer arrived."""
    t0 = time.perf_counter()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            if len(body) >= length:
                return time.perf_counter() - t0


# -- scenarios -----------------------------------------------------------------------------------------------------
def flood(router: Router, seconds: float) -> dict[str, Any]:
    """Pipelined GET /openapi.json x 2,000 every 0.2 s from a client that never reads."""
    payload = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    before = router.rss()
    sock = connect(router.port, rcvbuf=4096)
    sock.setblocking(False)
    samples: list[tuple[float, int]] = []
    sent = 0
    t0 = time.monotonic()
    aborted = False
    while time.monotonic() - t0 < seconds:
        with contextlib.suppress(BlockingIOError):
            sent += sock.send(payload)
        time.sleep(0.2)
        rss = router.rss()
        samples.append((round(time.monotonic() - t0, 2), rss))
        if rss - before > 3 * 1024 * MIB:  # the old server grows without end: stop before the machine suffers
            aborted = True
            break
    held_rss = router.rss()
    sock.close()
    time.sleep(2.0)
    after_close = router.rss()
    growth = [rss - before for _, rss in samples]
    half = len(growth) // 2
    return {
        "seconds": round(samples[-1][0], 1) if samples else 0,
        "aborted_at_3_gib": aborted,
        "bytes_sent": sent,
        "rss_before_mib": round(before / MIB, 1),
        "rss_growth_max_mib": round(max(growth) / MIB, 1),
        "rss_growth_first_half_max_mib": round(max(growth[:half] or [0]) / MIB, 1),
        "rss_growth_second_half_max_mib": round(max(growth[half:] or [0]) / MIB, 1),
        "rss_growth_at_end_held_mib": round((held_rss - before) / MIB, 1),
        "rss_growth_2s_after_close_mib": round((after_close - before) / MIB, 1),
        "rss_growth_trace_mib": [round(g / MIB, 1) for g in growth[:: max(1, len(growth) // 25)]],
        "router_alive": router.alive(),
    }


def gzip_bomb(size: int = 1024 * MIB) -> bytes:
    """gzip of `size` zero bytes, made a MiB at a time (about 1 MB for 1 GiB)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * MIB
    parts = [z.compress(block) for _ in range(size // MIB)]
    parts.append(z.flush())
    return b"".join(parts)


# /healthz polled from a process of its own (no GIL shared with the bomb senders), until SIGTERM; prints latencies.
POLLER_CODE = r"""
import json, signal, socket, sys, time
sys.path.insert(0, sys.argv[2])
from hostile import connect, healthz_once
stop = False
def halt(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, halt)
probe = connect(int(sys.argv[1]))
for _ in range(20):  # warm: the connection and the handler
    healthz_once(probe)
print("ready", flush=True)
latencies = []
while not stop:
    latencies.append(healthz_once(probe))
    time.sleep(0.005)
print(json.dumps(latencies), flush=True)
"""


def bomb(router: Router, payload: bytes, parallel: int) -> dict[str, Any]:
    """`parallel` bombs at once while another process asks /healthz every 5 ms on its own connection."""
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n") % len(payload)  # fmt: skip
    before = router.rss()
    reset_peak(router.pid)
    poller = subprocess.Popen([PY, "-c", POLLER_CODE, str(router.port), str(Path(__file__).parent)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert poller.stdout is not None
    assert poller.stdout.readline().strip() == "ready"

    statuses: list[int] = []
    durations: list[float] = []

    def send_bomb() -> None:
        t0 = time.perf_counter()
        with connect(router.port, timeout=60) as sock:
            with contextlib.suppress(OSError):  # the router may answer 413 and close before reading all of it
                sock.sendall(head + payload)
            try:
                statuses.append(read_status(sock))
            except OSError:
                statuses.append(0)
        durations.append(time.perf_counter() - t0)

    time.sleep(0.2)
    bombs = [threading.Thread(target=send_bomb) for _ in range(parallel)]
    for t in bombs:
        t.start()
    for t in bombs:
        t.join(120)
    time.sleep(0.2)
    poller.terminate()
    latencies: list[float] = json.loads(poller.communicate(timeout=10)[0])
    status = proc_status(router.pid)
    lat_ms = sorted(x * 1000 for x in latencies)
    return {
        "parallel": parallel,
        "statuses": statuses,
        "seconds_to_answer": [round(d, 3) for d in durations],
        "rss_before_mib": round(before / MIB, 1),
        "peak_rss_growth_mib": round((status["VmHWM"] - before) / MIB, 1),
        "rss_growth_after_mib": round((status["VmRSS"] - before) / MIB, 1),
        "healthz_answers": len(lat_ms),
        "healthz_p50_ms": round(statistics.median(lat_ms), 2) if lat_ms else None,
        "healthz_max_ms": round(lat_ms[-1], 2) if lat_ms else None,
        "healthz_over_50ms": sum(x > 50 for x in lat_ms),
        "router_alive": router.alive(),
    }


def slowloris(router: Router, cap_s: float) -> dict[str, Any]:
    """A head sent one byte per second: seconds until the router closes it (None: still open at the cap)."""
    sock = connect(router.port)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    t0 = time.monotonic()
    answer = b""
    closed_after: float | None = None
    sent = 0
    while time.monotonic() - t0 < cap_s:
        readable, _, _ = select.select([sock], [], [], 1.0)
        if readable:
            try:
                chunk = sock.recv(4096)
            except ConnectionError:
                chunk = b""
            if not chunk:
                closed_after = time.monotonic() - t0
                break
            answer += chunk
            continue
        try:
            sock.sendall(b"a")
            sent += 1
        except OSError:
            closed_after = time.monotonic() - t0
            break
    sock.close()
    return {
        "cap_s": cap_s,
        "bytes_trickled": sent,
        "closed_after_s": None if closed_after is None else round(closed_after, 2),
        "answer": answer.split(b"\r\n", 1)[0].decode("latin-1"),
        "router_alive": router.alive(),
    }


def connections(router: Router, count: int) -> dict[str, Any]:
    """`count` idle connections, then extra clients asking /healthz; then some close and one more asks."""
    before = router.rss()
    socks = [connect(router.port) for _ in range(count)]
    time.sleep(1.0)
    rss_held = router.rss()
    answered_503 = 0
    open_idle = 0
    for s in socks:  # which of them the router answered (503) or closed, and which it holds idle
        s.setblocking(False)
        try:
            data = s.recv(4096)
        except BlockingIOError:
            open_idle += 1
            continue
        except ConnectionError:
            data = b""
        if data.startswith(b"HTTP/1.1 503"):
            answered_503 += 1
    extra_statuses = []
    for _ in range(5):
        with connect(router.port) as extra:
            extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                extra_statuses.append(read_status(extra))
            except OSError:
                extra_statuses.append(0)
    for s in socks[:100]:
        s.close()
    time.sleep(0.5)
    with connect(router.port) as later:
        later.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        after_close = read_status(later)
    for s in socks[100:]:
        s.close()
    return {
        "opened": count,
        "held_idle": open_idle,
        "answered_503_and_closed": answered_503,
        "extra_client_statuses": extra_statuses,
        "status_after_100_closed": after_close,
        "rss_growth_with_all_open_mib": round((rss_held - before) / MIB, 1),
        "router_alive": router.alive(),
    }


# -- the run -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def upstream() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([PY, "-c", UPSTREAM_CODE, str(port)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(10)


def router_config(upstream_url: str) -> dict[str, Any]:
    return {"schemaVersion": 1, "policy": "bench", "defaultTier": "cloud",
            "residency": {"namespaceClass": "unrestricted"},
            "tiers": [{"name": "slm", "kind": "local", "baseURL": upstream_url, "model": "m"},
                      {"name": "cloud", "kind": "cloud", "baseURL": upstream_url, "model": "m"}],
            "routes": [{"name": "chat", "tier": "slm", "keywords": ["hello"]}],
            "classifier": {"encoder": {"kind": "lexical"}}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--baseline-src", help="os.pathsep-separated directories holding the old tiered_http and "
                        "tiered_router packages")  # fmt: skip
    parser.add_argument("--baseline-note", default="")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--slowloris-cap", type=float, default=30.0)
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--scenarios", nargs="*", default=["flood", "bomb", "slowloris", "connections"])
    parser.add_argument("--servers", nargs="*", default=[], help="also the router's logic on these servers "
                        "(bench/router/asgi_router.py: uvicorn, granian-rsgi; no Content-Encoding there, so no bomb)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("hostile.json"))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    versions: list[tuple[str, str | None, str | None]] = []
    if args.baseline_src:
        paths = os.pathsep.join(str(Path(p).resolve()) for p in args.baseline_src.split(":"))
        versions.append(("before", paths, None))
    versions.append(("after", None, None))
    versions += [(server, None, server) for server in args.servers]
    payload = gzip_bomb()
    results: dict[str, dict[str, Any]] = {label: {} for label, _, _ in versions}
    loads = {"before": round(os.getloadavg()[0], 2), "during": []}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    code_paths: dict[str, list[str]] = {}
    with upstream() as up, tempfile.TemporaryDirectory(prefix="tiered-hostile-") as tmp:
        config = Path(tmp) / "router.json"
        config.write_text(json.dumps(router_config(up)))
        scenarios: dict[str, Callable[[Router], Any]] = {
            "flood": lambda r: flood(r, args.flood_seconds),
            "bomb": lambda r: {"single": bomb(r, payload, 1), "four_parallel": bomb(r, payload, 4)},
            "slowloris": lambda r: slowloris(r, args.slowloris_cap),
            "connections": lambda r: connections(r, args.connections),
        }
        for name in args.scenarios:
            for label, pythonpath, server in versions:
                if server is not None and name == "bomb":
                    continue
                router = Router(label, pythonpath, config, Path(tmp), server)
                code_paths[label] = router.code_paths
                try:
                    results[label][name] = scenarios[name](router)
                finally:
                    router.stop()
                loads["during"].append(round(os.getloadavg()[0], 2))
                print(label, name, json.dumps(results[label][name])[:400], file=sys.stderr, flush=True)
    loads["after"] = round(os.getloadavg()[0], 2)
    doc = {
        "benchmark": "router against a hostile client (bench/http/hostile.py)",
        "when": started,
        "machine": f"{os.cpu_count()} CPUs shared with other workloads",
        "load_average_1m": loads,
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "bomb_bytes": len(payload),
                     "bomb_inflates_to": 1024 * MIB},
        "code": code_paths,
        "results": results,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
