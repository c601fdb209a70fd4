"""SIGTERM on the real server process: in-flight work finishes, new work gets 503, the process exits 0."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
from slm_helpers import TinyModels, finish_process, start_server_process


async def wait_ready(http: aiohttp.ClientSession, url: str, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        async with http.get(f"{url}/readyz") as response:
            if response.status == 200:
                return
            assert (await response.json())["status"] == "loading"
        await asyncio.sleep(0.05)
    raise AssertionError("server never became ready")


async def test_sigterm_drains_in_flight_requests_and_refuses_new_ones(
        tiny_models: TinyModels, http: aiohttp.ClientSession) -> None:
    # The in-flight request must outlast the refusals below: the longest generation the test model's context
    # allows (4000 tokens, a few seconds on one thread; 2000 once finished first on a loaded machine).
    server = start_server_process(["--model", str(tiny_models.q4_k_m), "--ctx", "4096",
                                   "--cache-dir", str(tiny_models.q4_k_m.parent / "cache")])
    try:
        await wait_ready(http, server.base_url)
        max_tokens = 4000
        in_flight = await http.post(f"{server.base_url}/v1/completions",
                                    json={"prompt": "drain", "max_tokens": max_tokens, "stream": True,
                                          "temperature": 0, "ignore_eos": True})
        first = await in_flight.content.readline()
        assert first.startswith(b"data: ")
        server.process.send_signal(signal.SIGTERM)
        # Once the server has taken the signal (readiness turns 503 "draining"; a request sent before that is
        # rightly admitted, queues behind the in-flight one and lets the drain end before the test could look),
        # new requests are refused while the admitted one keeps streaming.
        for _ in range(500):
            async with http.get(f"{server.base_url}/readyz") as response:
                if response.status == 503:
                    assert (await response.json())["status"] == "draining"
                    break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("readiness never turned to draining after SIGTERM")
        async with http.post(f"{server.base_url}/v1/completions",
                             json={"prompt": "late", "max_tokens": 2}) as late:
            assert late.status == 503, await late.text()
            assert (await late.json())["error"]["code"] == "draining"
            assert late.headers["Retry-After"] == "1"
        events = [first] + [line async for line in in_flight.content]
        payloads = [line.decode().removeprefix("data: ").strip() for line in events if line.startswith(b"data: ")]
        assert payloads[-1] == "[DONE]"
        assert json.loads(payloads[-2])["choices"][0]["finish_reason"] == "length"
        texts = [json.loads(p)["choices"][0]["text"] for p in payloads[:-1]]
        assert len(texts) > 1
    except BaseException:
        server.process.kill()
        raise
    code, log = finish_process(server)
    assert code == 0, log
    assert "draining: 1 running" in log and "stopped (drained)" in log
