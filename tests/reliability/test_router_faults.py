"""Router under upstream faults: every request ends within its deadline with a fallback answer or a clean
OpenAI-style error, and circuit breakers open and close as configured.

The real router runs as a process; the two upstreams are stand-ins that fail at the socket level (5xx, hang, TCP
reset, connection closed half way through a body or a stream, slow answers). Deadlines are computed from the
config the router runs with: each attempt is bounded by its tier's totalMs, the chain has retries+1 attempts.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from reliability_helpers import (
    CLOSE_MID_BODY,
    CLOSE_MID_STREAM,
    ERROR,
    HANG,
    MODES,
    OK,
    RESET,
    STALL_STREAM,
    BackgroundLoop,
    RouterProcess,
    Upstream,
    is_openai_error,
    metric_value,
    router_config,
    stand_in_rig,
    write_config,
)

FIRST_BYTE_MS = 700
TOTAL_MS = 1500
MARGIN_S = 2.0  # scheduling slack on a busy 2-core machine; a hang would blow far past it
TIMEOUTS = {"connectMs": 300, "firstByteMs": FIRST_BYTE_MS, "totalMs": TOTAL_MS}
ATTEMPTS = 2  # retries=1
DEADLINE_S = ATTEMPTS * TOTAL_MS / 1000 + MARGIN_S


def fault_config(slm: Upstream, cloud: Upstream, **overrides: Any) -> dict[str, Any]:
    config = router_config(slm.base_url, cloud.base_url, **overrides)
    for tier in config["tiers"]:
        tier["timeouts"] = TIMEOUTS
    return config


@dataclass
class Rig:
    loop: BackgroundLoop
    slm: Upstream
    cloud: Upstream
    router: RouterProcess
    config_path: Path

    def reconfigure(self, **overrides: Any) -> None:
        old = self.router.config_hash()
        write_config(self.config_path, fault_config(self.slm, self.cloud, **overrides))
        self.router.wait_for_hash_change(old)

    def reset(self) -> None:
        for up in (self.slm, self.cloud):
            up.mode, up.status, up.delay_s, up.chunk_delay_s = OK, 503, 0.0, 0.0
            up.received.clear()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with stand_in_rig(tmp_path_factory.mktemp("faults"), fault_config) as stand_in:
        yield Rig(stand_in.loop, stand_in.slm, stand_in.cloud, stand_in.router, stand_in.config_path)


@pytest.fixture
def r(rig: Rig) -> Rig:
    rig.reset()
    return rig


@dataclass
class Outcome:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[Any]:
        """The SSE data payloads, parsed ([DONE] kept as the string)."""
        out: list[Any] = []
        for line in self.body.decode(errors="replace").splitlines():
            if line.startswith("data:"):
                data = line[5:].strip()
                out.append(data if data == "[DONE]" else json.loads(data))
        return out


async def call(url: str, content: str, stream: bool = False, deadline: float = DEADLINE_S) -> Outcome:
    """One request, body read to the end; fails the test (not just times out) when it outlives `deadline`."""
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], "stream": stream}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:

        async def run() -> Outcome:
            async with session.post(url + "/v1/chat/completions", json=body) as rsp:
                raw = await rsp.read()
                return Outcome(rsp.status, dict(rsp.headers), raw, time.perf_counter() - started)

        try:
            return await asyncio.wait_for(run(), deadline + 5)
        except TimeoutError:
            raise AssertionError(
                f"request hung: no complete answer after {time.perf_counter() - started:.1f}s"
            ) from None


def assert_within_deadline(out: Outcome, deadline: float = DEADLINE_S) -> None:
    assert out.elapsed <= deadline, f"took {out.elapsed:.2f}s, deadline {deadline:.2f}s"


def assert_completion_from(out: Outcome, tier: str) -> None:
    assert out.status == 200, out.body[:300]
    assert out.headers["x-tiered-tier"] == tier
    obj = out.json()
    assert obj["object"] == "chat.completion" and obj["choices"][0]["message"]["content"] == f"answer from {tier}"


# --- one tier fails, the next answers ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [ERROR, HANG, RESET, CLOSE_MID_BODY])
async def test_local_fault_falls_back_to_next_tier_within_deadline(r: Rig, mode: str) -> None:
    r.slm.mode = mode
    r.slm.status = 500
    out = await call(r.router.url, "hello there")  # keyword route -> slm first, cloud second
    assert_within_deadline(out)
    assert_completion_from(out, "cloud")
    assert out.headers["x-tiered-fallback-from"] == "slm"
    assert len(r.slm.received) == 1 and len(r.cloud.received) == 1


@pytest.mark.parametrize("mode", [ERROR, HANG, RESET])
async def test_streamed_request_falls_back_when_upstream_fails_before_first_byte(r: Rig, mode: str) -> None:
    r.slm.mode = mode
    out = await call(r.router.url, "hello there", stream=True)
    assert_within_deadline(out)
    assert out.status == 200 and out.headers["x-tiered-tier"] == "cloud"
    events = out.events()
    assert events[-1] == "[DONE]" and "cloud-0" in json.dumps(events[0])


async def test_hang_costs_no_more_than_first_byte_timeout(r: Rig) -> None:
    r.slm.mode = HANG
    out = await call(r.router.url, "hello there")
    assert_completion_from(out, "cloud")
    assert FIRST_BYTE_MS / 1000 <= out.elapsed <= FIRST_BYTE_MS / 1000 + MARGIN_S


async def test_slow_upstream_within_first_byte_is_waited_for(r: Rig) -> None:
    r.slm.delay_s = FIRST_BYTE_MS / 1000 / 3
    out = await call(r.router.url, "hello there")
    assert_within_deadline(out)
    assert_completion_from(out, "slm")
    assert "x-tiered-fallback-from" not in out.headers


async def test_upstream_slower_than_first_byte_times_out_and_falls_back(r: Rig) -> None:
    r.slm.delay_s = FIRST_BYTE_MS / 1000 * 2
    out = await call(r.router.url, "hello there")
    assert_within_deadline(out)
    assert_completion_from(out, "cloud")
    assert metric_value(r.router.metrics(), "tiered_router_upstream_errors_total", tier="slm", kind="timeout") >= 1


async def test_slow_stream_within_total_is_relayed_whole(r: Rig) -> None:
    r.slm.chunk_delay_s = 0.15
    out = await call(r.router.url, "hello there", stream=True)
    assert_within_deadline(out)
    assert out.status == 200 and out.headers["x-tiered-tier"] == "slm"
    assert out.events()[-1] == "[DONE]"


# --- failures after the first byte: the stream ends with an OpenAI error event ---------------------------------


@pytest.mark.parametrize("mode", [CLOSE_MID_STREAM, STALL_STREAM])
async def test_stream_broken_after_first_byte_ends_with_error_event(r: Rig, mode: str) -> None:
    r.slm.mode = mode
    out = await call(r.router.url, "hello there", stream=True)
    # a stalled stream is cut at the tier's totalMs; a closed one at once
    assert out.elapsed <= TOTAL_MS / 1000 + MARGIN_S, out.elapsed
    assert out.status == 200 and out.headers["x-tiered-tier"] == "slm"
    events = out.events()
    assert "slm-0" in json.dumps(events[0])
    assert is_openai_error(events[-1]), events[-1]
    assert r.cloud.received == []  # after the first byte there is no fallback (the client already has slm's text)


# --- every tier fails: a clean OpenAI error ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slm_mode", "cloud_mode", "status"),
    [
        (ERROR, ERROR, 502),
        (HANG, HANG, 504),
        (RESET, RESET, 503),  # a reset is counted as a connect failure: "upstream_unavailable"
        (ERROR, HANG, 502),
        (CLOSE_MID_BODY, RESET, 502),
    ],
)
async def test_all_tiers_failing_gives_openai_error_within_deadline(
    r: Rig, slm_mode: str, cloud_mode: str, status: int
) -> None:
    r.slm.mode, r.cloud.mode = slm_mode, cloud_mode
    out = await call(r.router.url, "hello there")
    assert_within_deadline(out)
    assert out.status == status, out.body[:300]
    assert out.headers["Content-Type"].startswith("application/json")
    obj = out.json()
    assert is_openai_error(obj), obj
    assert obj["error"]["type"] == "api_error"


async def test_local_outage_gives_503_unavailable(r: Rig) -> None:
    r.loop.call(r.slm.stop())
    try:
        r.cloud.mode = ERROR
        out = await call(r.router.url, "hello there")
        assert_within_deadline(out)
        assert out.status == 502 and is_openai_error(out.json())
        r.cloud.mode = RESET
        r.cloud.received.clear()
        out = await call(r.router.url, "hello there")
        assert out.status in (502, 503) and is_openai_error(out.json())
    finally:
        r.loop.call(r.slm.start())


# --- many concurrent requests while the upstream changes fault every few ms ---------------------------------


async def test_no_request_hangs_under_random_faults(r: Rig) -> None:
    rng = random.Random(9)
    stop = asyncio.Event()

    async def chaos() -> None:
        while not stop.is_set():
            r.slm.mode = rng.choice(MODES)
            r.cloud.mode = rng.choice([OK, OK, ERROR, RESET, HANG])
            r.slm.delay_s = rng.choice([0.0, 0.0, 0.3, 1.0])
            await asyncio.sleep(0.05)

    sem = asyncio.Semaphore(32)

    async def one(i: int) -> Outcome:
        async with sem:
            return await call(r.router.url, rng.choice(["hello there", "legal analyse this"]), stream=i % 3 == 0)

    chaos_task = asyncio.create_task(chaos())
    try:
        outcomes = await asyncio.gather(*(one(i) for i in range(240)))
    finally:
        stop.set()
        await chaos_task
    statuses: dict[int, int] = {}
    for out in outcomes:
        statuses[out.status] = statuses.get(out.status, 0) + 1
        assert_within_deadline(out)
        if out.status == 200 and out.headers.get("Content-Type", "").startswith("text/event-stream"):
            last = out.events()[-1]
            assert last == "[DONE]" or is_openai_error(last), last
        elif out.status == 200:
            assert out.json()["object"] == "chat.completion"
        else:
            assert out.status in (502, 503, 504), out.status
            assert is_openai_error(out.json())
    assert statuses.get(200, 0) > 0 and sum(v for k, v in statuses.items() if k != 200) > 0, statuses
    assert r.router.alive()
    r.slm.mode = r.cloud.mode = OK
    r.slm.delay_s = 0.0
    assert_completion_from(await call(r.router.url, "hello there"), "slm")


# --- circuit breaker ------------------------------------------------------------------------------------------


async def test_circuit_breaker_opens_after_threshold_and_closes_after_open_period(r: Rig) -> None:
    threshold, open_s = 3, 1.0
    r.reconfigure(circuitBreaker={"failureThreshold": threshold, "openSeconds": open_s})
    try:
        r.slm.mode, r.slm.status = ERROR, 503
        for _ in range(threshold):
            assert_completion_from(await call(r.router.url, "hello there"), "cloud")
        assert len(r.slm.received) == threshold
        assert metric_value(r.router.metrics(), "tiered_router_circuit_state", tier="slm") == 2  # open

        # open: slm is skipped without being contacted, the request goes straight to the cloud tier
        for _ in range(3):
            out = await call(r.router.url, "hello there")
            assert_completion_from(out, "cloud")
            assert out.elapsed < 1.0
        assert len(r.slm.received) == threshold

        # after openSeconds: one probe; it fails -> open again for a full period
        await asyncio.sleep(open_s + 0.2)
        assert_completion_from(await call(r.router.url, "hello there"), "cloud")
        assert len(r.slm.received) == threshold + 1
        assert_completion_from(await call(r.router.url, "hello there"), "cloud")
        assert len(r.slm.received) == threshold + 1

        # the upstream recovers; after the next open period the probe succeeds and the circuit closes
        r.slm.mode = OK
        await asyncio.sleep(open_s + 0.2)
        assert_completion_from(await call(r.router.url, "hello there"), "slm")
        assert metric_value(r.router.metrics(), "tiered_router_circuit_state", tier="slm") == 0
        for _ in range(3):
            assert_completion_from(await call(r.router.url, "hello there"), "slm")
        assert len(r.slm.received) == threshold + 5
    finally:
        r.reconfigure()


async def test_open_circuits_on_every_tier_give_503_without_contacting_upstreams(r: Rig) -> None:
    r.reconfigure(circuitBreaker={"failureThreshold": 1, "openSeconds": 30})
    try:
        r.slm.mode = r.cloud.mode = ERROR
        first = await call(r.router.url, "hello there")
        assert first.status == 502
        before = (len(r.slm.received), len(r.cloud.received))
        out = await call(r.router.url, "hello there")
        assert out.status == 503 and out.json()["error"]["code"] == "upstream_unavailable"
        assert out.elapsed < 1.0
        assert (len(r.slm.received), len(r.cloud.received)) == before
    finally:
        r.reconfigure()
