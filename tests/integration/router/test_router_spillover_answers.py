"""Spillover on a local tier's load answers, with the official `openai` client: a local stand-in that answers 429
(queue full) or 503 (model loading), a cloud stand-in, the real router. What residency lets leave goes to the
cloud tier with the cause in x-tiered-reason and the metrics; what must stay local waits up to the policy's bound,
then gets the local tier's own 429 with Retry-After; nothing with PII ever reaches the cloud.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from router_harness import Servers, metric_value

pytestmark = pytest.mark.integration

PII = "hello, please email ann.smith@example.com the minutes"
WAIT_MS = 1500


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path, spillover={"enabled": True, "maxLocalWaitMs": WAIT_MS})
    try:
        yield s
    finally:
        s.close()


def client(servers: Servers) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{servers.url}/v1", api_key="unused", max_retries=0, timeout=30)


def chat(servers: Servers, content: str) -> tuple[Any, dict[str, str]]:
    raw = client(servers).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": content}], max_tokens=8)
    return raw.parse(), dict(raw.headers)


def test_a_saturated_local_tier_spills_what_may_leave_and_holds_what_may_not(servers: Servers) -> None:
    servers.slm.status, servers.slm.error_code, servers.slm.retry_after = 429, "queue_full", "7"
    _reply, headers = chat(servers, "hello there")
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "SpilloverLocalSaturated")
    assert headers["x-tiered-spilled-from"] == "slm"
    assert len(servers.slm.received) == 1  # tried once, answered 429
    _reply, headers = chat(servers, "hello again")  # within the held second: straight to the cloud tier
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "SpilloverLocalSaturated")
    assert len(servers.slm.received) == 1

    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        chat(servers, PII)
    waited = time.monotonic() - started
    assert WAIT_MS / 1000 - 0.1 <= waited < WAIT_MS / 1000 + 2
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.headers["x-tiered-tier"] == "slm"
    assert len(servers.slm.received) >= 2  # retried within the bound
    assert not any("ann.smith" in text for text in servers.cloud.texts())
    metrics = servers.metrics()
    assert metric_value(metrics, "tiered_router_spillovers_total", from_tier="slm", to_tier="cloud",
                        cause="saturated") == 2
    assert metric_value(metrics, "tiered_router_local_waits_total", tier="slm", outcome="timed_out") == 1


def test_a_request_that_must_stay_local_is_served_when_the_tier_frees_up_within_the_bound(servers: Servers) -> None:
    servers.slm.status, servers.slm.error_code, servers.slm.retry_after = 429, "queue_full", "1"
    threading.Timer(0.5, lambda: setattr(servers.slm, "status", 200)).start()
    _reply, headers = chat(servers, PII)
    assert headers["x-tiered-tier"] == "slm"
    assert not servers.cloud.received
    assert metric_value(servers.metrics(), "tiered_router_local_waits_total", tier="slm", outcome="served") == 1


def test_a_starting_local_tier_spills_and_is_skipped_while_it_loads(servers: Servers) -> None:
    servers.slm.status, servers.slm.error_code, servers.slm.retry_after = 503, "model_not_ready", "5"
    _reply, headers = chat(servers, "hello there")
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "SpilloverLocalStarting")
    _reply, headers = chat(servers, "hello there again")
    assert headers["x-tiered-reason"] == "SpilloverLocalStarting" and len(servers.slm.received) == 1
    metrics = servers.metrics()
    assert metric_value(metrics, "tiered_router_spillovers_total", cause="starting") == 2
    assert metric_value(metrics, "tiered_router_circuit_state", tier="slm") == 0  # loading is not a fault


def test_an_unreachable_local_tier_counts_as_starting(servers: Servers) -> None:
    servers.call(servers.slm.stop())
    _reply, headers = chat(servers, "hello there")
    assert (headers["x-tiered-tier"], headers["x-tiered-reason"]) == ("cloud", "SpilloverLocalStarting")
    with pytest.raises(openai.APIStatusError) as raised:
        chat(servers, PII)
    assert raised.value.status_code == 503 and not servers.cloud.received[1:]


def test_with_spillover_off_the_local_tiers_429_is_relayed_at_once(servers: Servers) -> None:
    servers.apply_config(spillover={"enabled": False, "maxLocalWaitMs": WAIT_MS})
    servers.slm.status, servers.slm.error_code, servers.slm.retry_after = 429, "queue_full", "3"
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as raised:
        chat(servers, "hello there")
    assert time.monotonic() - started < 1.0
    assert raised.value.response.headers["retry-after"] == "3" and not servers.cloud.received
