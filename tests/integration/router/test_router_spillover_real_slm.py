"""Spillover with the real model: a load that saturates one SLM replica (SmolLM2-135M-Instruct, one thread), the
official `openai` client, the cloud stand-in. The local tier's p95 stays inside its SLO while the overflow goes to
the stand-in, and no PII-bearing request ever spills; a cold start sends what may leave to the cloud and holds
what may not until the model is ready; the SLM's own full queue (429) spills what may leave and holds what may
not, and with spillover off its 429 and Retry-After reach the client at once.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from real_slm_harness import RealTiers, SlmProcess
from router_harness import metric_value

pytestmark = pytest.mark.integration

CLIENTS = 8  # non-PII clients, each sending requests back to back
PII_CLIENTS = 1
LOAD_SECONDS = 25
MAX_TOKENS = 16
PROMPTS = ["hello, say something kind about mornings", "hello, name three colours", "hello, how are you today?",
           "hello, tell me a fact about the sea", "hello, what is a good name for a cat?"]
PII_PROMPTS = [f"hello, my card 4111 1111 1111 {1111 + i:04d} was declined, why?" for i in range(8)]


@dataclass(frozen=True)
class Sent:
    pii: bool
    status: int
    tier: str
    reason: str
    seconds: float


def _send(client: openai.OpenAI, content: str, pii: bool) -> Sent:
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": content}], max_tokens=MAX_TOKENS, temperature=0)
        raw.parse()
        status, headers = raw.status_code, raw.headers
    except openai.APIStatusError as error:
        status, headers = error.status_code, error.response.headers
    return Sent(pii, status, headers.get("x-tiered-tier", ""), headers.get("x-tiered-reason", ""),
                time.perf_counter() - started)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


@pytest.fixture
def slm(real_model: Path, tmp_path: Path) -> Iterator[SlmProcess]:
    process = SlmProcess(real_model, tmp_path / "slm.log")
    try:
        yield process
    finally:
        process.stop()


def _single_request_seconds(slm: SlmProcess) -> float:
    """What one request takes alone on this machine now (the SLO is set from it, so the test means the same on a
    fast and a loaded machine)."""
    client = openai.OpenAI(base_url=f"{slm.url}/v1", api_key="unused", max_retries=0, timeout=120)
    times = []
    for prompt in PROMPTS + PROMPTS[:2]:
        started = time.perf_counter()
        client.chat.completions.create(model="slm", messages=[{"role": "user", "content": prompt}],
                                       max_tokens=MAX_TOKENS, temperature=0)
        times.append(time.perf_counter() - started)
    # The median, not the slowest: one request slowed by a burst of other work on the machine would set an
    # objective that the test's load cannot reach.
    return statistics.median(times[1:])


def test_local_p95_stays_inside_its_slo_while_the_overflow_goes_to_the_cloud_tier_and_pii_never_spills(
        slm: SlmProcess, tmp_path: Path) -> None:
    alone = _single_request_seconds(slm)
    slo_ms = max(500, round(5 * alone * 1000))  # a few requests in flight on the one replica, and slack
    tiers = RealTiers(tmp_path, slm.url, spillover={"enabled": True, "maxLocalWaitMs": 120000})
    try:
        config = tiers.router_config(spillover={"enabled": True, "maxLocalWaitMs": 120000})
        config["tiers"][0]["slo"] = {"latencyP95Ms": slo_ms, "metric": "e2e"}
        tiers.apply(config)
        tiers.cloud.delay_s = 1.0  # a provider's time to answer: the clients keep the load up
        sent: list[Sent] = []
        lock = threading.Lock()

        deadline = time.monotonic() + LOAD_SECONDS

        def client_loop(index: int, pii: bool) -> None:
            client = tiers.client()
            prompts = PII_PROMPTS if pii else PROMPTS
            n = 0
            while time.monotonic() < deadline:
                result = _send(client, prompts[(index + n) % len(prompts)], pii)
                n += 1
                with lock:
                    sent.append(result)

        threads = [threading.Thread(target=client_loop, args=(i, False)) for i in range(CLIENTS)]
        threads += [threading.Thread(target=client_loop, args=(i, True)) for i in range(PII_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
        metrics = tiers.metrics()
        cloud_texts = tiers.cloud.texts()
    finally:
        tiers.close()
    service_s = metric_value(metrics, "tiered_router_tier_service_seconds", tier="slm")

    local = [s.seconds for s in sent if s.tier == "slm" and s.status == 200]
    spilled = [s for s in sent if s.reason == "SpilloverLocalOverSlo"]
    local_free = [s for s in sent if s.tier == "slm" and not s.pii]
    print(f"\none request alone {alone * 1000:.0f} ms, SLO {slo_ms} ms; {len(sent)} requests in {LOAD_SECONDS} s: "
          f"{len(local)} local ({len(local_free)} without PII; p95 {_p95(local) * 1000:.0f} ms, max "
          f"{max(local) * 1000:.0f} ms), {len(spilled)} spilled to the cloud stand-in; service time "
          f"{service_s * 1000:.0f} ms")
    # The load saturates the replica: every client's request in its queue would take longer than the objective.
    assert (CLIENTS + PII_CLIENTS) * service_s * 1000 > slo_ms
    assert sent and all(s.status == 200 for s in sent)
    assert len(spilled) >= CLIENTS and all(s.tier == "cloud" and not s.pii for s in spilled)
    assert len(local_free) >= 3  # the local tier keeps serving what may leave, up to its objective
    assert _p95(local) * 1000 <= slo_ms
    pii = [s for s in sent if s.pii]
    assert all(s.tier == "slm" for s in pii)
    assert not any("4111" in text for text in cloud_texts)
    assert metric_value(metrics, "tiered_router_spillovers_total", cause="over_slo") == len(spilled)


def test_a_cold_start_sends_what_may_leave_to_the_cloud_and_holds_what_may_not(real_model: Path,
                                                                               tmp_path: Path) -> None:
    slm = SlmProcess(real_model, tmp_path / "slm.log", wait_ready=False)  # listening, model still loading
    try:
        tiers = RealTiers(tmp_path, slm.url, spillover={"enabled": True, "maxLocalWaitMs": 60000})
        try:
            client = tiers.client()
            results: dict[str, Any] = {}
            holder = threading.Thread(target=lambda: results.update(pii=_send(client, PII_PROMPTS[0], True)))
            holder.start()
            early = _send(client, PROMPTS[0], False)
            holder.join(timeout=120)
            later = _send(client, PROMPTS[1], False)
            metrics = tiers.metrics()
        finally:
            tiers.close()
    finally:
        slm.stop()
    assert (early.status, early.tier, early.reason) == (200, "cloud", "SpilloverLocalStarting")
    pii = results["pii"]
    assert (pii.status, pii.tier) == (200, "slm")  # waited for the model, never left
    assert (later.status, later.tier) == (200, "slm")
    assert metric_value(metrics, "tiered_router_local_waits_total", tier="slm", outcome="served") >= 1
    assert not any("4111" in text for text in tiers.cloud.texts())


def test_a_real_full_queue_sends_what_may_leave_to_the_cloud_and_holds_what_may_not(real_model: Path,
                                                                                    tmp_path: Path) -> None:
    """The SLM's own bounded queue (no waiting room: one request generating, any other answered 429 queue_full)
    under back-to-back clients: what may leave spills as saturated, PII-bearing requests wait and are served."""
    slm = SlmProcess(real_model, tmp_path / "slm.log", queue_size=0)
    try:
        tiers = RealTiers(tmp_path, slm.url, spillover={"enabled": True, "maxLocalWaitMs": 60000})
        try:
            tiers.cloud.delay_s = 0.02  # the others come back at once: a freed slot is raced for
            sent: list[Sent] = []
            lock = threading.Lock()
            deadline = time.monotonic() + 12

            def client_loop(index: int, pii: bool) -> None:
                client = tiers.client()
                prompts = PII_PROMPTS if pii else PROMPTS
                n = 0
                while time.monotonic() < deadline:
                    result = _send(client, prompts[(index + n) % len(prompts)], pii)
                    n += 1
                    with lock:
                        sent.append(result)

            threads = [threading.Thread(target=client_loop, args=(i, False)) for i in range(6)]
            threads += [threading.Thread(target=client_loop, args=(i, True)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            metrics = tiers.metrics()
            cloud_texts = tiers.cloud.texts()
        finally:
            tiers.close()
        slm_metrics = _slm_metrics(slm)
    finally:
        slm.stop()
    spilled = [s for s in sent if s.reason == "SpilloverLocalSaturated"]
    pii = [s for s in sent if s.pii]
    print(f"\n{len(sent)} requests: {len(spilled)} spilled as saturated, "
          f"{sum(s.tier == 'slm' for s in sent)} local of which {len(pii)} with PII (all local, slowest "
          f"{max(s.seconds for s in pii):.1f} s); the SLM answered "
          f"{metric_value(slm_metrics, 'tiered_slm_rejected_requests_total', reason='queue_full'):.0f} "
          "with 429 queue_full")
    assert metric_value(slm_metrics, "tiered_slm_rejected_requests_total", reason="queue_full") >= 1  # really full
    assert sent and all(s.status == 200 for s in sent)
    assert spilled and all(s.tier == "cloud" and not s.pii for s in spilled)
    assert metric_value(metrics, "tiered_router_spillovers_total", cause="saturated") == len(spilled)
    assert pii and all(s.tier == "slm" for s in pii)
    # The waiting requests get the slots the tier frees: requests that may leave do not take them while one waits.
    # Before that rule the PII clients got 2 of the 10 local answers in the 12 s; with it, 9 of 10 (how many
    # answers fit in 12 s depends on the machine's load, the share does not). Among requests that may not leave
    # there is no order: a waiting one retries at most every second, and a fresh one can take the slot first
    # (docs/router.md).
    local = [s for s in sent if s.tier == "slm"]
    assert sum(s.pii for s in local) >= 0.5 * len(local)
    assert metric_value(metrics, "tiered_router_local_waits_total", tier="slm", outcome="served") >= 1
    assert metric_value(metrics, "tiered_router_local_waits_total", tier="slm", outcome="timed_out") == 0
    assert not any("4111" in text for text in cloud_texts)


def test_with_spillover_off_a_real_full_queue_is_a_429_with_retry_after(real_model: Path, tmp_path: Path) -> None:
    slm = SlmProcess(real_model, tmp_path / "slm.log", queue_size=0)
    try:
        tiers = RealTiers(tmp_path, slm.url, spillover={"enabled": False, "maxLocalWaitMs": 60000})
        try:
            direct = openai.OpenAI(base_url=f"{slm.url}/v1", api_key="unused", max_retries=0, timeout=120)
            holder = threading.Thread(target=lambda: direct.chat.completions.create(
                model="slm", messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=200,
                temperature=0, extra_body={"ignore_eos": True}))
            holder.start()
            while not re.search(r"^tiered_slm_in_flight_requests 1\.0$", _slm_metrics(slm), re.MULTILINE):
                assert holder.is_alive(), "the long request ended before the test could use it"
                time.sleep(0.02)
            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as raised:
                tiers.client().chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hello there"}], max_tokens=8)
            answered_s = time.monotonic() - started
            holder.join(timeout=120)
            metrics = tiers.metrics()
        finally:
            tiers.close()
    finally:
        slm.stop()
    headers = raised.value.response.headers
    assert answered_s < 2.0  # relayed at once, not waited on
    assert headers["x-tiered-tier"] == "slm" and int(headers["retry-after"]) >= 1
    assert not tiers.cloud.received
    assert metric_value(metrics, "tiered_router_spillovers_total") == 0


def _slm_metrics(slm: SlmProcess) -> str:
    with urllib.request.urlopen(f"{slm.url}/metrics", timeout=10) as response:
        return str(response.read().decode())
