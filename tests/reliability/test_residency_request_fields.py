"""PII in the parts of a chat request the PII scanner does not read must not reach the cloud either.

The router passes every field it does not understand through to the upstream untouched (request.py: "passes every
other field through untouched"), but scans only `messages[].content` (strings and `type: text` parts) and
`prompt`. OpenAI's API has other fields the provider reads — an assistant turn's `tool_calls[].function.arguments`
(the model sees them), the end-user id `user` (commonly an e-mail), `metadata`, tool descriptions — so a request
whose only PII sits there is classified PII-free and, in a restricted namespace, dispatched to the cloud tier.
Control: the same value in `content` stays local.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pii_corpus import canonical
from reliability_helpers import RouterProcess, Upstream, router_config, write_config

EMAIL = "jane.doe.canary@example.org"
CARD = "4111 1111 1111 1111"


def _tool_call(arguments: str) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": "lookup_customer", "arguments": arguments}}


CASES: dict[str, dict[str, Any]] = {
    "assistant tool_calls arguments": {"messages": [
        {"role": "user", "content": "legal analyse the customer"},
        {"role": "assistant", "content": None, "tool_calls": [_tool_call(json.dumps({"email": EMAIL, "card": CARD}))]},
        {"role": "tool", "tool_call_id": "call_1", "content": "found"},
        {"role": "user", "content": "legal analyse it now"}]},
    "top-level user field": {"user": EMAIL, "messages": [{"role": "user", "content": "legal analyse the contract"}]},
    "metadata": {"metadata": {"customer": EMAIL, "card": CARD},
                 "messages": [{"role": "user", "content": "legal analyse the contract"}]},
    "tool description": {"tools": [{"type": "function", "function": {
        "name": "notify", "description": f"Send the result to {EMAIL}", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "legal analyse the contract"}]},
}  # fmt: skip


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[RouterProcess, Upstream, Upstream]]:
    slm, cloud = Upstream("slm"), Upstream("cloud")
    await slm.start()
    await cloud.start()
    write_config(tmp_path / "router.json", router_config(slm.base_url, cloud.base_url))  # restricted, keepLocal
    router = RouterProcess(tmp_path / "router.json", tmp_path / "router.log")
    router.start()
    try:
        yield router, slm, cloud
    finally:
        router.stop()
        await slm.stop()
        await cloud.stop()


async def _post(router: RouterProcess, body: dict[str, Any]) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(router.url + "/v1/chat/completions", json={"model": "auto", **body}) as rsp,
    ):
        await rsp.read()
        return rsp.status, rsp.headers.get("x-tiered-tier", "")


async def test_pii_in_message_content_stays_local(rig: tuple[RouterProcess, Upstream, Upstream]) -> None:
    router, slm, cloud = rig
    status, tier = await _post(router, {"messages": [{"role": "user", "content": f"legal analyse {EMAIL}"}]})
    assert len(slm.received) == 1
    assert (status, tier) == (200, "slm")
    status, tier = await _post(router, {"messages": [{"role": "user", "content": "legal analyse the contract"}]})
    assert (status, tier) == (200, "cloud")  # the cloud path is live for PII-free requests
    assert len(cloud.received) == 1 and canonical(EMAIL) not in canonical(cloud.received[0].raw.decode())


@pytest.mark.parametrize("case", list(CASES))
async def test_pii_outside_message_content_does_not_reach_the_cloud(
    rig: tuple[RouterProcess, Upstream, Upstream], case: str
) -> None:
    router, _slm, cloud = rig
    status, tier = await _post(router, CASES[case])
    leaked = [r.raw.decode(errors="replace") for r in cloud.received if canonical(EMAIL) in canonical(r.raw.decode())]
    assert leaked == [], f"{case}: PII reached the cloud tier (status {status}, tier {tier}): {leaked[0][:300]}"


async def test_a_repeated_key_cannot_smuggle_a_value_past_the_scan(
    rig: tuple[RouterProcess, Upstream, Upstream],
) -> None:
    """`json.loads` keeps the last of two equal keys, the raw bytes keep both: the first value was never scanned, and
    forwarding the client's bytes as they are would send it. The router forwards what it scanned instead."""
    router, _slm, cloud = rig
    raw = ('{"model": "auto", "messages": [{"role": "user", "content": "legal analyse the contract"}], '
           f'"metadata": {{"card": "{CARD}", "card": "none"}}}}').encode()  # fmt: skip
    async with (
        aiohttp.ClientSession() as session,
        session.post(router.url + "/v1/chat/completions", data=raw,
                     headers={"Content-Type": "application/json"}) as rsp,  # fmt: skip
    ):
        await rsp.read()
        assert rsp.status == 200
    assert len(cloud.received) == 1  # PII-free as parsed, so it went to the cloud ...
    assert canonical(CARD) not in canonical(cloud.received[0].raw.decode())  # ... without the smuggled value
