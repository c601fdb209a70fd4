"""The request-body fast path (one read of Content-Length bytes) keeps the body limit intact.

A compressed body is decoded while it is read, so the limit must apply to its decoded size (a small gzip body that
expands past maxBodyBytes is a 413, and nothing is dispatched); an uncompressed body of exactly the limit passes.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from router_harness import Servers


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.close()


def _post(servers: Servers, body: bytes, **headers: str) -> tuple[int, dict[str, object]]:
    r = servers.http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json", **headers})
    return r.status_code, r.json()


def test_gzip_body_within_the_limit_compressed_but_over_it_decoded_is_413(servers: Servers) -> None:
    servers.apply_config(maxBodyBytes=4096)
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello " + "x" * 20000}]}).encode()
    packed = gzip.compress(body)
    assert len(packed) < 4096 < len(body)
    status, answer = _post(servers, packed, **{"Content-Encoding": "gzip"})
    assert status == 413 and answer["error"]["code"] == "body_too_large"  # type: ignore[index]
    assert servers.slm.received == [] and servers.cloud.received == []


def test_small_gzip_body_is_decoded_and_routed(servers: Servers) -> None:
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}).encode()
    status, _ = _post(servers, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert status == 200
    assert len(servers.slm.received) + len(servers.cloud.received) == 1


def test_uncompressed_body_at_the_limit_passes_and_one_byte_over_is_413(servers: Servers) -> None:
    servers.apply_config(maxBodyBytes=4096)
    head = json.dumps({"model": "auto", "messages": [{"role": "user", "content": ""}]}).encode()
    pad = 4096 - len(head)
    at_limit = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * pad}]}).encode()
    assert len(at_limit) == 4096
    assert _post(servers, at_limit)[0] == 200
    over = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "x" * (pad + 1)}]}).encode()
    status, answer = _post(servers, over)
    assert status == 413 and answer["error"]["code"] == "body_too_large"  # type: ignore[index]
