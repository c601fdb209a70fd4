"""The router in front of two real HTTP upstreams: OpenAI clients, streaming, fallback, breaker, errors, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from router_harness import Servers, metric_value

pytestmark = pytest.mark.integration


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.close()


def test_openai_sync_client_gets_local_answer_with_decision_headers(servers: Servers) -> None:
    client = openai.OpenAI(base_url=servers.url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello, how are you?"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "hello from the stand-in"
    assert raw.headers["x-tiered-tier"] == "slm"
    assert raw.headers["x-tiered-route"] == "smalltalk"
    assert raw.headers["x-tiered-reason"] == "KeywordMatched"
    assert servers.slm.received[0].body["model"] == "tiny-q4"  # model rewritten for the tier
    assert servers.cloud.received == []


async def test_openai_async_client_streaming_relays_every_chunk_in_order(servers: Servers) -> None:
    servers.cloud.chunk_delay_s = 0.05
    client = openai.AsyncOpenAI(base_url=servers.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "legal analyse this"}], stream=True
    )
    pieces: list[str] = []
    arrivals: list[float] = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            arrivals.append(time.perf_counter())
    await client.close()
    assert pieces == [f"cloud-{i} " for i in range(5)]
    # chunk by chunk: the first piece arrived well before the upstream finished (4 delays of 50 ms later)
    assert arrivals[-1] - arrivals[0] > 0.12


def test_legacy_completions_stream_and_plain(servers: Servers) -> None:
    client = openai.OpenAI(base_url=servers.url + "/v1", api_key="unused", max_retries=0)
    plain = client.completions.create(model="auto", prompt="translate cat to french")
    assert plain.choices[0].text == "hello from the stand-in"
    texts = [
        c.choices[0].text for c in client.completions.create(model="auto", prompt="hello", stream=True) if c.choices
    ]
    assert texts == [f"slm-{i} " for i in range(5)]
    assert all(r.path == "/v1/completions" for r in servers.slm.received)


def test_fallback_on_5xx_goes_to_the_next_allowed_tier(servers: Servers) -> None:
    servers.cloud.status = 500
    r = servers.chat("legal analyse this contract")
    assert r.status_code == 200
    assert r.headers["x-tiered-tier"] == "slm" and r.headers["x-tiered-fallback-from"] == "cloud"
    assert len(servers.cloud.received) == 1 and len(servers.slm.received) == 1
    m = servers.metrics()
    assert metric_value(m, "tiered_router_fallbacks_total", from_tier="cloud", to_tier="slm", trigger="5xx") == 1
    assert metric_value(m, "tiered_router_upstream_errors_total", tier="cloud", kind="5xx") == 1


def test_fallback_on_timeout_before_first_byte(servers: Servers) -> None:
    servers.apply_config(fallback={"timeoutMs": 300, "retries": 1})
    servers.cloud.delay_s = 5.0
    started = time.perf_counter()
    r = servers.chat("legal analyse", stream=True)
    assert r.status_code == 200 and r.headers["x-tiered-tier"] == "slm"
    assert "slm-0" in r.text and time.perf_counter() - started < 4.0  # did not wait for the stalled upstream


def test_fallback_on_connect_error(servers: Servers) -> None:
    servers.call(servers.cloud.stop())
    r = servers.chat("legal analyse")
    assert r.status_code == 200 and r.headers["x-tiered-tier"] == "slm"
    assert metric_value(servers.metrics(), "tiered_router_upstream_errors_total", tier="cloud", kind="connect") == 1


def test_streaming_request_falls_back_when_upstream_fails_before_any_byte(servers: Servers) -> None:
    servers.cloud.status = 503
    r = servers.chat("legal analyse", stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "slm-4" in r.text and "data: [DONE]" in r.text


def test_all_tiers_failing_gives_openai_error_with_status(servers: Servers) -> None:
    servers.cloud.status = 500
    servers.slm.status = 502
    r = servers.chat("legal analyse")
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == "upstream_error" and "cloud" in err["message"] and "slm" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}


def test_all_tiers_timing_out_is_504(servers: Servers) -> None:
    servers.apply_config(fallback={"timeoutMs": 200, "retries": 1})
    servers.cloud.delay_s = servers.slm.delay_s = 1.0
    r = servers.chat("legal analyse")
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_all_tiers_unreachable_is_503(servers: Servers) -> None:
    servers.call(servers.cloud.stop())
    servers.call(servers.slm.stop())
    r = servers.chat("legal analyse")
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"


def test_circuit_breaker_stops_calling_a_failing_upstream(servers: Servers) -> None:
    servers.apply_config(circuitBreaker={"failureThreshold": 2, "openSeconds": 60})
    servers.cloud.status = 500
    for _ in range(4):
        assert servers.chat("legal analyse").headers["x-tiered-tier"] == "slm"
    assert len(servers.cloud.received) == 2  # the breaker opened after two failures
    assert metric_value(servers.metrics(), "tiered_router_circuit_state", tier="cloud") == 2


def test_restricted_pii_stays_local_and_never_reaches_cloud(servers: Servers) -> None:
    r = servers.chat("legal analyse the claim of jane.doe@example.com")
    assert r.status_code == 200
    assert r.headers["x-tiered-tier"] == "slm" and r.headers["x-tiered-reason"] == "PiiKeptLocal"
    assert servers.cloud.received == []
    assert metric_value(servers.metrics(), "tiered_router_pii_detections_total", entity="email") == 1


def test_redact_in_unrestricted_namespace_sends_only_redacted_text_to_cloud(servers: Servers) -> None:
    servers.apply_config(residency={"namespaceClass": "unrestricted", "pii": {"action": "redact"}})
    r = servers.chat("legal analyse card 4111 1111 1111 1111 for me")
    assert r.status_code == 200 and r.headers["x-tiered-tier"] == "cloud"
    (text,) = servers.cloud.texts()
    assert "4111" not in text and "[REDACTED:creditCard]" in text


def test_pii_reject_action_is_400_and_nothing_is_dispatched(servers: Servers) -> None:
    servers.apply_config(residency={"namespaceClass": "restricted", "pii": {"action": "reject"}})
    r = servers.chat("hello my ssn is 123-45-6789")
    assert r.status_code == 400 and r.json()["error"]["code"] == "PiiRejected"
    assert servers.slm.received == [] and servers.cloud.received == []


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (json.dumps({"model": "auto"}).encode(), 400, "invalid_request"),
        (json.dumps({"model": "auto", "messages": "hi"}).encode(), 400, "invalid_request"),
        (json.dumps({"model": 3, "messages": [{"role": "user", "content": "x"}]}).encode(), 400, "invalid_request"),
        (json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "UnknownModel"),
    ],
)
def test_error_shapes(servers: Servers, body: bytes, status: int, code: str) -> None:
    r = servers.http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and err["message"] and "Traceback" not in r.text


def test_unknown_path_and_method_are_openai_errors(servers: Servers) -> None:
    r = servers.http.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r2 = servers.http.get("/v1/chat/completions")
    assert r2.status_code == 405 and r2.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413(servers: Servers) -> None:
    servers.apply_config(maxBodyBytes=4096)
    r = servers.chat("hello " + "x" * 5000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # chunked upload: no Content-Length to check up front
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    r2 = servers.http.post("/v1/chat/completions", content=chunks())
    assert r2.status_code == 413
    assert servers.slm.received == []


def test_models_health_and_readiness(servers: Servers) -> None:
    ids = {m["id"] for m in servers.http.get("/v1/models").json()["data"]}
    assert {"auto", "test-policy", "slm", "cloud", "smalltalk", "analysis"} <= ids
    assert servers.http.get("/healthz").status_code == 200
    assert servers.http.get("/readyz").json()["status"] == "ready"


def test_metrics_move_with_traffic(servers: Servers) -> None:
    for _ in range(3):
        servers.chat("hello there")
    servers.chat("legal analyse", stream=True)
    m = servers.metrics()
    assert metric_value(m, "tiered_router_requests_total", tier="slm", route="smalltalk", outcome="success") == 3
    assert metric_value(m, "tiered_router_requests_total", tier="cloud", outcome="success") == 1
    assert metric_value(m, "tiered_router_tokens_total", tier="slm", direction="in") == 33
    assert metric_value(m, "tiered_router_tokens_total", tier="cloud", direction="out") == 5
    slm_cost = (33 * 0.05 + 15 * 0.1) / 1e6
    assert metric_value(m, "tiered_router_cost_usd_total", tier="slm") == pytest.approx(slm_cost)
    avoided = (33 * 2.5 + 15 * 10.0) / 1e6 - slm_cost
    assert metric_value(m, "tiered_router_avoided_cost_usd_total", tier="slm") == pytest.approx(avoided)
    assert metric_value(m, "tiered_router_decisions_total", reason="KeywordMatched") == 4
    assert metric_value(m, "tiered_router_decision_latency_seconds_count") == 4
    assert metric_value(m, "tiered_router_ttft_seconds_count", tier="cloud") == 1
    assert metric_value(m, "tiered_router_request_latency_seconds_count", tier="slm") == 3


def test_config_reload_applies_new_routes_and_keeps_last_good_on_invalid(servers: Servers) -> None:
    assert servers.chat("hello").headers["x-tiered-tier"] == "slm"
    old = servers.config_hash()
    servers.write_config(
        routes=[{"name": "smalltalk", "tier": "cloud", "keywords": ["hello"], "examples": ["hi"]}],
        residency={"namespaceClass": "unrestricted"},
    )
    servers.wait_for_reload(old)
    assert servers.chat("hello").headers["x-tiered-tier"] == "cloud"
    good = servers.config_hash()
    servers.config_path.write_text('{"schemaVersion": 1, "tiers": [], "defaultTier": "x"}')
    deadline = time.monotonic() + 5
    while metric_value(servers.metrics(), "tiered_router_config_reloads_total", result="invalid") < 1:
        assert time.monotonic() < deadline, "invalid config was not noticed"
        time.sleep(0.05)
    assert servers.config_hash() == good
    assert servers.chat("hello").headers["x-tiered-tier"] == "cloud"
    assert metric_value(servers.metrics(), "tiered_router_config_last_reload_valid") == 0


def test_cloud_api_key_is_sent_from_file_and_never_logged(
    servers: Servers, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-" + "s3cr3t" * 6
    key_file = tmp_path / "api-key"
    key_file.write_text(secret + "\n")
    caplog.set_level(logging.DEBUG)
    config = servers.write_config()
    config["tiers"][1]["apiKeyFile"] = str(key_file)
    old = servers.config_hash()
    servers.write_config(tiers=config["tiers"])
    servers.wait_for_reload(old)
    servers.cloud.status = 500  # a failure path logs too
    servers.chat("legal analyse")
    assert servers.cloud.received[-1].headers["Authorization"] == f"Bearer {secret}"
    assert "Authorization" not in servers.slm.received[-1].headers
    assert secret not in caplog.text and "s3cr3t" not in servers.metrics()


async def test_concurrent_streams_are_independent(servers: Servers) -> None:
    servers.slm.chunk_delay_s = 0.02

    async def one(client: httpx.AsyncClient) -> str:
        r = await client.post(
            "/v1/chat/completions",
            json={"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hello"}]},
        )
        return r.text

    async with httpx.AsyncClient(base_url=servers.url, timeout=20) as client:
        texts = await asyncio.gather(*(one(client) for _ in range(20)))
    assert all(t.count("slm-") == 5 and t.rstrip().endswith("data: [DONE]") for t in texts)


def test_client_leaving_mid_stream_is_recorded_and_router_keeps_serving(servers: Servers) -> None:
    servers.slm.chunk_delay_s = 0.2
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    with servers.http.stream("POST", "/v1/chat/completions", json=body) as r:
        first = next(r.iter_bytes())
        assert b"slm-0" in first
    deadline = time.monotonic() + 5
    while metric_value(servers.metrics(), "tiered_router_requests_total", outcome="client_closed") < 1:
        assert time.monotonic() < deadline, "client disconnect was not recorded"
        time.sleep(0.1)
    servers.slm.chunk_delay_s = 0.0
    assert servers.chat("hello").status_code == 200
