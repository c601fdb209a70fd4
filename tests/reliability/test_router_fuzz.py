"""≥10,000 fuzzed requests against the real router: methods, paths, headers, encodings and bodies (valid, almost
valid, random JSON, random bytes, oversized) and malformed HTTP on a raw socket → only 2xx/4xx, never 5xx, and the
process is alive and ready afterwards.

hypothesis strategies generate the requests here, including what the router's OpenAPI document cannot describe
(raw sockets, encodings, oversized bodies, unknown paths); schemathesis drives the document's operations in
test_router_schemathesis.py. Requests go out in batches of 50 in parallel (one hypothesis example
= one batch) so 10,000 finish in well under a minute; failures are collected, not raised at the first one, so a
run reports every distinct 5xx it found.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import BackgroundLoop, RouterProcess, Upstream, router_config, stand_in_rig

pytestmark = pytest.mark.slow

BATCH = 50
EXAMPLES = 202  # x BATCH = 10,100 HTTP requests, plus the raw-socket ones
KNOWN_PATHS = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
]


@dataclass
class Fuzz:
    loop: BackgroundLoop
    router: RouterProcess
    session: aiohttp.ClientSession
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    sent: int = 0


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    def config(slm: Upstream, cloud: Upstream) -> dict[str, Any]:
        return router_config(slm.base_url, cloud.base_url, override={"enabled": True, "allowedTiers": ["slm"]})

    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            # A fresh connection per request: the router rightly closes a connection whose request body it did not
            # read (413, undecodable, unknown path), and a pooled client could race that close; a transport error
            # then means the router failed, not the pool.
            connector=aiohttp.TCPConnector(limit=BATCH, force_close=True),
            timeout=aiohttp.ClientTimeout(total=30),
            auto_decompress=False,
        )

    with stand_in_rig(tmp_path_factory.mktemp("fuzz"), config, log_level="WARNING") as rig:
        session = rig.loop.call(make_session())
        try:
            yield Fuzz(rig.loop, rig.router, session)
        finally:
            rig.loop.call(session.close())


# --- strategies -------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
roles = st.sampled_from(["user", "system", "assistant", "tool", "developer", ""]) | json_values
content_part = st.fixed_dictionaries(
    {}, optional={"type": st.sampled_from(["text", "image_url", "input_audio"]) | json_values,
                  "text": st.text(max_size=40) | json_values,
                  "image_url": st.fixed_dictionaries({"url": st.text(max_size=20)})},
)  # fmt: skip
message = st.fixed_dictionaries(
    {}, optional={"role": roles, "content": st.text(max_size=80) | st.lists(content_part, max_size=3) | json_values,
                  "name": st.text(max_size=10), "tool_calls": json_values},
)  # fmt: skip
models = st.sampled_from(["auto", "reliability", "slm", "cloud", "smalltalk", "analysis", "gpt-4o", ""]) | json_values
chat_body = st.fixed_dictionaries(
    {"messages": st.lists(message, min_size=0, max_size=4) | json_values},
    optional={"model": models, "stream": st.booleans() | json_values, "max_tokens": json_values,
              "temperature": json_values, "stream_options": json_values, "tools": json_values, "n": json_values},
)  # fmt: skip
completion_body = st.fixed_dictionaries(
    {"prompt": st.text(max_size=80) | st.lists(st.text(max_size=20), max_size=3) | json_values},
    optional={"model": models, "stream": st.booleans() | json_values, "max_tokens": json_values},
)
valid_chat = st.builds(
    lambda text, model, stream: {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]},
    st.text(min_size=1, max_size=200),
    st.sampled_from(["auto", "reliability", "smalltalk", "analysis"]),
    st.booleans(),
)
bodies = st.one_of(
    chat_body.map(lambda b: json.dumps(b).encode()),
    completion_body.map(lambda b: json.dumps(b).encode()),
    valid_chat.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"{", b"[]", b"null", b'{"messages": NaN}', b"\xff\xfe{}", b'{"a":1}{"b":2}',
                     b"x" * (1024 * 1024 + 10)]),
)  # fmt: skip
path_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/_-.%~:@!$&'()*+,;=", max_size=40)
paths = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.sampled_from(KNOWN_PATHS).map(lambda p: p + "/"),
    st.sampled_from(KNOWN_PATHS).map(lambda p: p.upper()),
    st.tuples(st.sampled_from(KNOWN_PATHS), path_chars).map(lambda t: f"{t[0]}?{t[1]}"),
    path_chars.map(lambda p: "/" + p),
    st.sampled_from(["/v1/../v1/models", "//v1//chat//completions", "/v1/chat/completions%00", "/%ff%fe",
                     "/v1/" + "a" * 4000, "/v1/models?" + "q=1&" * 500, "/v1/%2e%2e/healthz"]),
)  # fmt: skip
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
headers = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                         "multipart/form-data; boundary=zz", "application/json; charset=latin-1",
                                         "", "*/*"]) | header_text,
        "x-tiered-tier": st.sampled_from(["slm", "cloud", "nope", ""]) | header_text,
        "Accept": st.sampled_from(["text/event-stream", "application/json", "*/*"]) | header_text,
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "br", "identity", "zstd"]),
        "Authorization": header_text,
        "Transfer-Encoding": st.sampled_from(["chunked"]),
        "Expect": st.sampled_from(["100-continue"]),
    },
)  # fmt: skip
methods = st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


fuzzy_requests = st.builds(FuzzRequest, methods, paths, headers, bodies)
clean_requests = st.builds(
    FuzzRequest,
    st.just("POST"),
    st.just("/v1/chat/completions"),
    st.just({"Content-Type": "application/json"}),
    valid_chat.map(lambda b: json.dumps(b).encode()),
)
requests = st.one_of(fuzzy_requests, fuzzy_requests, clean_requests)

RAW_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 500 + b"\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello on the plain port
]


async def send_batch(fz: Fuzz, batch: list[FuzzRequest]) -> list[tuple[int, str]]:
    async def one(req: FuzzRequest) -> tuple[int, str]:
        try:
            async with fz.session.request(
                req.method, fz.router.url + req.path, data=req.body, headers=req.headers, allow_redirects=False
            ) as rsp:
                raw = await rsp.read()
                return rsp.status, raw[:300].decode(errors="replace")
        except aiohttp.ClientResponseError as exc:  # the client refused to parse the router's answer
            return exc.status or 0, f"client parse error: {exc}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return -1, f"{req.method} {req.path[:60]} {type(exc).__name__}: {exc}"

    return list(await asyncio.gather(*(one(r) for r in batch)))


async def send_raw(port: int, payload: bytes) -> int:
    """The status the router answers a raw payload with; -2 when it is (rightly) still waiting for the rest of an
    incomplete request after 3 s, 0 when it closes without an HTTP answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(payload)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(200), 3)
        except TimeoutError:
            return -2
    except ConnectionError:
        return 0
    finally:
        writer.close()
    parts = answer.split(b"\r\n", 1)[0].split()
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/1.") and parts[1].isdigit() else 0


def test_router_serves_its_openapi_document_and_nothing_else_there(fuzz: Fuzz) -> None:
    status, text = fuzz.router.get("/openapi.json")
    assert status == 200 and json.loads(text)["openapi"].startswith("3.1"), text[:300]
    for path in ("/openapi.yaml", "/v1/openapi.json", "/docs", "/swagger.json"):
        status, _ = fuzz.router.get(path)
        assert status == 404, path


def test_fuzzed_requests_get_only_2xx_or_4xx_and_router_survives(fuzz: Fuzz) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(batch=st.lists(requests, min_size=BATCH, max_size=BATCH))
    def check(batch: list[FuzzRequest]) -> None:
        for (status, text), req in zip(fuzz.loop.call(send_batch(fuzz, batch)), batch, strict=True):
            fuzz.sent += 1
            fuzz.statuses[status] += 1
            if status >= 500 or status < 100:
                fuzz.server_errors.append(f"{status} {req.method} {req.path[:80]} {req.headers} "
                                          f"{req.body[:120]!r} -> {text}")  # fmt: skip

    check()

    async def raw_all() -> list[int]:
        return list(await asyncio.gather(*(send_raw(fuzz.router.port, p) for p in RAW_REQUESTS)))

    for payload, code in zip(RAW_REQUESTS, fuzz.loop.call(raw_all()), strict=True):
        fuzz.sent += 1
        fuzz.statuses[code] += 1
        if code >= 500:
            fuzz.server_errors.append(f"raw {payload[:60]!r} -> {code}")
    summary = dict(sorted(fuzz.statuses.items()))
    print(f"\nfuzzed requests: {fuzz.sent}, statuses: {summary}")
    report = os.environ.get("TIERED_FUZZ_REPORT")  # bench/reliability/router_fuzz.py asks for the figures
    if report:
        encoded = sum("'Content-Encoding'" in e for e in fuzz.server_errors)
        Path(report).write_text(json.dumps({
            "requests": fuzz.sent, "hypothesis_examples": EXAMPLES, "batch": BATCH,
            "statuses": {str(k): v for k, v in summary.items()}, "server_errors": len(fuzz.server_errors),
            "server_errors_with_content_encoding_header": encoded, "server_error_samples": fuzz.server_errors[:2]
            + [e for e in fuzz.server_errors if "'Content-Encoding'" not in e][:3],
            "router_alive": fuzz.router.alive(), "router_ready": fuzz.router.get("/readyz")[0] == 200,
        }, indent=2) + "\n")  # fmt: skip
    assert fuzz.sent >= 10_000
    assert fuzz.server_errors == [], f"{len(fuzz.server_errors)} 5xx/transport errors, e.g. {fuzz.server_errors[:5]}"
    assert fuzz.statuses[200] > 500 and sum(v for k, v in fuzz.statuses.items() if 400 <= k < 500) > 5000, summary
    assert fuzz.router.alive()
    assert fuzz.router.get("/readyz")[0] == 200
    log_text = fuzz.router.log()
    assert "unhandled error" not in log_text, log_text[log_text.find("unhandled error") :][:3000]


def test_deeply_nested_json_body_is_a_client_error_not_a_500(fuzz: Fuzz) -> None:
    """A body nested deeper than Python's recursion limit is malformed input and must get 400, like any other
    undecodable body. Today json.loads raises RecursionError, which parse_body does not catch, and the middleware
    answers 500 internal_error."""

    async def post(body: bytes) -> tuple[int, Any]:
        async with fuzz.session.post(fuzz.router.url + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"}) as rsp:  # fmt: skip
            return rsp.status, await rsp.json(content_type=None)

    for body in (b"[" * 100_000, b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"a":' * 30_000):
        status, payload = fuzz.loop.call(post(body))
        assert status == 400, (status, payload)
    assert fuzz.router.alive()


def test_body_not_matching_its_content_encoding_is_a_client_error_not_a_500(fuzz: Fuzz) -> None:
    """`Content-Encoding: gzip` (or deflate) on a body that is not compressed is the client's mistake: 400.
    Today aiohttp raises ContentEncodingError while server.py:_read_body iterates the body; it is not an
    HTTPException, so the catch-all middleware answers 500 internal_error."""

    async def post(encoding: str) -> tuple[int, Any]:
        async with fuzz.session.post(fuzz.router.url + "/v1/chat/completions",
                                     data=b'{"messages": [{"role": "user", "content": "hi"}]}',
                                     headers={"Content-Type": "application/json",
                                              "Content-Encoding": encoding}) as rsp:  # fmt: skip
            return rsp.status, await rsp.json(content_type=None)

    for encoding in ("gzip", "deflate"):
        status, payload = fuzz.loop.call(post(encoding))
        assert status == 400, (encoding, status, payload)
    assert fuzz.router.alive()
