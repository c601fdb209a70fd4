"""Send the demo workload to the router the way an application would: with the official `openai` SDK.

Each request records what the router said about it (`x-tiered-tier`, `x-tiered-route`, `x-tiered-reason`), the
status and the client-side latency. The summary's headline figures come from Prometheus; these records are the
per-request cross-check (and let the demo say which PII request went where).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tiered_dev.demo.workload import WorkItem

MAX_TOKENS = 16
TEMPERATURE = 0.2
"""What an application would send to a 135M-parameter model (SmolLM2's model card suggests 0.2); the cloud
stand-in ignores it."""


@dataclass(frozen=True)
class Outcome:
    item: WorkItem
    status: int
    tier: str | None
    route: str | None
    reason: str | None
    latency_s: float
    error: str | None = None
    text: str = ""
    """The start of the answer (non-streamed requests), to show what each tier returns."""
    spilled_from: str | None = None
    """The local tier the router passed over because it was busy (x-tiered-spilled-from)."""


async def _one_openai(client: object, item: WorkItem) -> Outcome:
    import openai

    assert isinstance(client, openai.AsyncOpenAI)
    started = time.perf_counter()
    try:
        messages: list[Any] = [{"role": "user", "content": item.text}]
        text = ""
        if item.stream:
            raw_stream = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages, max_tokens=MAX_TOKENS, temperature=TEMPERATURE, stream=True,
                stream_options={"include_usage": True},
            )
            async for _chunk in raw_stream.parse():
                pass
            status, headers = raw_stream.status_code, raw_stream.headers
        else:
            raw = await client.chat.completions.with_raw_response.create(
                model="auto", messages=messages, max_tokens=MAX_TOKENS, temperature=TEMPERATURE
            )
            completion = raw.parse()
            status, headers = raw.status_code, raw.headers
            text = (completion.choices[0].message.content or "") if completion.choices else ""
        return Outcome(item, status, headers.get("x-tiered-tier"), headers.get("x-tiered-route") or None,
                       headers.get("x-tiered-reason"), time.perf_counter() - started, text=text[:80],
                       spilled_from=headers.get("x-tiered-spilled-from"))
    except openai.APIStatusError as exc:
        h = exc.response.headers
        return Outcome(item, exc.status_code, h.get("x-tiered-tier"), h.get("x-tiered-route") or None,
                       h.get("x-tiered-reason"), time.perf_counter() - started, str(exc)[:200])
    except openai.APIError as exc:
        return Outcome(item, 0, None, None, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:200])


def client_name() -> str:
    try:
        import openai

        return f"openai {openai.__version__}"
    except ImportError:
        return "aiohttp (openai not installed)"


async def _one_aiohttp(session: object, base_url: str, item: WorkItem) -> Outcome:
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    body: dict[str, object] = {"model": "auto", "messages": [{"role": "user", "content": item.text}],
                               "max_tokens": MAX_TOKENS, "temperature": TEMPERATURE, "stream": item.stream}
    if item.stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    try:
        async with session.post(f"{base_url}/chat/completions", json=body) as resp:
            await resp.read()
            h = resp.headers
            error = None if resp.status == 200 else f"HTTP {resp.status}"
            return Outcome(item, resp.status, h.get("x-tiered-tier"), h.get("x-tiered-route") or None,
                           h.get("x-tiered-reason"), time.perf_counter() - started, error,
                           spilled_from=h.get("x-tiered-spilled-from"))
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(item, 0, None, None, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")


async def run_workload(
    base_url: str,
    items: Sequence[WorkItem],
    concurrency: int,
    progress: Callable[[str], None],
    timeout_s: float = 60.0,
) -> list[Outcome]:
    """Send `items` with at most `concurrency` in flight; report progress about every tenth of the way."""
    results: list[Outcome | None] = [None] * len(items)
    gate = asyncio.Semaphore(concurrency)
    done = 0
    step = max(1, len(items) // 10)
    started = time.monotonic()

    def report() -> None:
        got = [r for r in results if r is not None]
        tiers: dict[str, int] = {}
        for r in got:
            tiers[r.tier or "error"] = tiers.get(r.tier or "error", 0) + 1
        split = ", ".join(f"{k} {v}" for k, v in sorted(tiers.items()))
        progress(f"  sent {len(got):4d}/{len(items)}  ({split})  {time.monotonic() - started:5.1f}s")

    try:
        import openai
    except ImportError:
        openai = None  # type: ignore[assignment]

    if openai is not None:
        client: object = openai.AsyncOpenAI(base_url=base_url, api_key="demo-client", timeout=timeout_s,
                                            max_retries=0)
        one = _one_openai
    else:
        import aiohttp

        client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

        async def one(session: object, item: WorkItem) -> Outcome:
            return await _one_aiohttp(session, base_url, item)

    async def worker(i: int, item: WorkItem) -> None:
        nonlocal done
        async with gate:
            results[i] = await one(client, item)
        done += 1
        if done % step == 0 or done == len(items):
            report()

    try:
        await asyncio.gather(*(worker(i, item) for i, item in enumerate(items)))
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            await close()
    return [r for r in results if r is not None]
