"""A real HTTP process exposing the router's own collectors (tiered_router.metrics.RouterMetrics), driven by
the test, for exact control of what the histograms hold.

The series are the router's (same class, names, labels and buckets); only the traffic is synthetic, so a test
can assert an exact p95. test_autoscale_router.py runs the real router in front of a stand-in upstream instead.

Control endpoints (POST, query parameters):
  /observe?tier=T&metric=e2e|ttft&seconds=0.3&count=100   record latencies
  /inflight?tier=T&value=3                                 set requests in flight
  /cost?tier=T&usd=1.5&avoided=0.5                         add to the cost counters
  /touch?tier=T                                            create the tier's series at zero
The router's config_info gauge says it serves policy POLICY (argv[2], default "default").

Run: python standin_router_metrics.py PORT_FILE [POLICY]   (binds 127.0.0.1:0, writes the port to PORT_FILE)
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tiered_router.metrics import RouterMetrics

METRICS = RouterMetrics()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/metrics":
            self._reply(200, generate_latest(METRICS.registry), CONTENT_TYPE_LATEST)
        else:
            self._reply(404, b"not found\n")

    def do_POST(self) -> None:
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        tier = q.get("tier", "slm")
        if url.path == "/observe":
            hist = METRICS.ttft if q.get("metric") == "ttft" else METRICS.latency
            for _ in range(int(q.get("count", "1"))):
                hist.labels(tier).observe(float(q["seconds"]))
        elif url.path == "/inflight":
            METRICS.in_flight.labels(tier).set(float(q["value"]))
        elif url.path == "/cost":
            METRICS.cost.labels(tier).inc(float(q.get("usd", "0")))
            METRICS.avoided.labels(tier).inc(float(q.get("avoided", "0")))
        elif url.path == "/touch":
            for metric in (METRICS.latency, METRICS.ttft, METRICS.in_flight, METRICS.cost, METRICS.avoided):
                metric.labels(tier)
        else:
            self._reply(404, b"not found\n")
            return
        self._reply(200, b"ok\n")


def main() -> None:
    METRICS.config_info.labels(sys.argv[2] if len(sys.argv) > 2 else "default", "standin").set(1)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(sys.argv[1]).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
