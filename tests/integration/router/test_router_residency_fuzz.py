"""Residency under load of variants, and robustness under fuzzed bodies, asserted at the real upstreams."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from router_harness import Servers
from router_pii_variants import pii_variants

from tiered_router.config import PiiEntity
from tiered_router.pii import scan

pytestmark = pytest.mark.integration


def test_every_generated_variant_is_detected_as_its_entity() -> None:
    variants = pii_variants()
    assert len(variants) >= 1000
    missed = [(e, t) for e, t in variants if e not in {f.entity.value for f in scan(t, list(PiiEntity))}]
    assert missed == []


async def test_no_pii_variant_reaches_the_cloud_upstream(tmp_path: Path) -> None:
    """≥1,000 prompts that the policy would send to the cloud (keyword 'legal analyse'), each with one PII value,
    placed in the last user turn, an earlier turn, or a content-part list. The cloud stand-in must see nothing."""
    servers = Servers(tmp_path)
    try:
        variants = pii_variants()
        sem = asyncio.Semaphore(16)

        def body(i: int, text: str) -> dict[str, object]:
            shape = i % 3
            if shape == 0:
                messages: list[dict[str, object]] = [{"role": "user", "content": text}]
            elif shape == 1:
                messages = [{"role": "system", "content": text}, {"role": "user", "content": "legal analyse it"}]
            else:
                messages = [{"role": "user", "content": [{"type": "text", "text": "legal analyse"},
                                                         {"type": "text", "text": text}]}]  # fmt: skip
            return {"model": "auto", "messages": messages, "stream": i % 5 == 0}

        async def send(client: httpx.AsyncClient, i: int, text: str) -> tuple[int, str]:
            async with sem:
                r = await client.post("/v1/chat/completions", json=body(i, text))
                return r.status_code, r.headers.get("x-tiered-tier", "")

        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=servers.url, timeout=30, limits=limits) as client:
            results = await asyncio.gather(*(send(client, i, t) for i, (_, t) in enumerate(variants)))
        assert all(status == 200 and tier == "slm" for status, tier in results)
        assert servers.cloud.received == []
        assert len(servers.slm.received) == len(variants)
        # control: the same prompts without PII do go to the cloud, so the assertion above is not vacuous
        r = servers.chat("legal analyse the account please")
        assert r.headers["x-tiered-tier"] == "cloud" and len(servers.cloud.received) == 1
    finally:
        servers.close()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "assistant"]) | _json,
        "content": st.text(max_size=60) | _json,
    },
)
_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["auto", "slm", "cloud", "smalltalk", "gpt-x", ""]) | _json,
        "messages": st.lists(_message, max_size=3) | _json,
        "prompt": st.text(max_size=40) | _json,
        "stream": st.booleans() | _json,
        "max_tokens": _json,
    },
)


def test_fuzzed_bodies_get_only_success_or_4xx_and_router_stays_alive(tmp_path: Path) -> None:
    servers = Servers(tmp_path)
    statuses: set[int] = set()
    try:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
               payload=_body | _json, raw=st.none() | st.binary(max_size=64))  # fmt: skip
        def check(path: str, payload: object, raw: bytes | None) -> None:
            content = raw if raw is not None else json.dumps(payload).encode()
            r = servers.http.post(path, content=content, headers={"content-type": "application/json"})
            statuses.add(r.status_code)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                err = r.json()["error"]
                assert isinstance(err["message"], str) and err["code"]

        check()
        assert servers.http.get("/healthz").status_code == 200
        assert 400 in statuses  # the fuzzer did reach the validation paths
    finally:
        servers.close()
