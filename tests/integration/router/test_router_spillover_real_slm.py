"""Spillover with the real model: a load that saturates one SLM replica (SmolLM2-135M-Instruct, one thread), the
official `openai` client, the cloud stand-in. The local tier's p95 stays inside its SLO while the overflow goes to
the stand-in, and no PII-bearing request ever spills; a cold start sends what may leave to the cloud and holds
what may not until the model is ready.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from real_slm_harness import RealTiers, SlmProcess
from router_harness import metric_value

pytestmark = pytest.mark.integration

CLIENTS = 6  # non-PII clients, each sending requests back to back
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
    for prompt in PROMPTS[:4]:
        started = time.perf_counter()
        client.chat.completions.create(model="slm", messages=[{"role": "user", "content": prompt}],
                                       max_tokens=MAX_TOKENS, temperature=0)
        times.append(time.perf_counter() - started)
    return max(times[1:])


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
