"""The RFC 9112 probes of issue 21 against the router's request logic on three servers: `python
bench/http/rfc_probe.py` -> bench/http/rfc_probe.json.

tiered_http is the router itself (`tiered-router serve`); uvicorn and granian (RSGI) serve the same
`RouterService.handle` through bench/router/asgi_router.py. Each probe is one raw request on a fresh connection; what
comes back in 1.5 s is recorded (status line, and whether the server closed the connection or left it open).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUTER_BENCH = Path(__file__).resolve().parents[1] / "router"
sys.path.insert(0, str(ROUTER_BENCH))

from overhead import PY, free_port, router_config, server_command  # noqa: E402

PROBES = {
    "no Host (HTTP/1.1)": b"GET /healthz HTTP/1.1\r\n\r\n",
    "two Host fields": b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "Transfer-Encoding: identity, chunked": b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: "
    b"application/json\r\nTransfer-Encoding: identity, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "HTTP/1.0 + Expect: 100-continue": b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 2\r\n"
    b"Expect: 100-continue\r\n\r\n",
    "100 KB request target": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
    "HTTP/1.0 + chunked + keep-alive": b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
}


def probe(port: int, raw: bytes) -> str:
    data = b""
    with socket.create_connection(("127.0.0.1", port), 3) as s:
        s.settimeout(1.5)
        try:
            s.sendall(raw)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    end = "closed"
                    break
                data += chunk
        except TimeoutError:
            end = "left open"
        except OSError as exc:
            end = type(exc).__name__
    first = data.split(b"\r\n", 1)[0].decode("latin-1")
    body = data.split(b"\r\n\r\n", 1)[1][:120].decode("latin-1", "replace") if b"\r\n\r\n" in data else ""
    return f"{first} | {end} | {body}"


def main() -> int:
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "router.json"
        config.write_text(json.dumps(router_config("http://127.0.0.1:9/v1", "keyword")))
        for server in ("tiered_http", "uvicorn", "granian-rsgi"):
            port = free_port()
            env = {**os.environ, "TIERED_BENCH_ROUTER_CONFIG": str(config)}
            if server == "tiered_http":
                cmd = [PY, "-m", "tiered_router", "serve", "--config", str(config), "--host", "127.0.0.1",
                       "--port", str(port), "--log-level", "ERROR"]  # fmt: skip
            else:
                cmd = server_command(server, port)
            proc = subprocess.Popen(cmd, env=env, cwd=ROUTER_BENCH, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)  # fmt: skip
            try:
                for _ in range(200):
                    try:
                        socket.create_connection(("127.0.0.1", port), 0.5).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                results[server] = {name: probe(port, raw) for name, raw in PROBES.items()}
            finally:
                proc.terminate()
                proc.wait(10)
    doc = {"benchmark": "RFC 9112 probes (bench/http/rfc_probe.py)",
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}  # fmt: skip
    out = Path(__file__).with_name("rfc_probe.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
