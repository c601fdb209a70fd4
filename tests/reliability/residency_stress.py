"""Residency under stress: thousands of PII-bearing requests through the real router while the local tier fails,
the budget runs out and the config is swapped under load; every byte the cloud stand-in received is inspected.

Shared by tests/reliability/test_residency_stress.py (asserts) and bench/reliability/residency_stress.py (writes
the figures as JSON). The invariant checked on the cloud side:
- in phases whose config never lets PII leave (keepLocal, local-only, budget exhausted), no request carrying a
  planted value arrives at the cloud stand-in at all;
- in phases that redact (an unrestricted namespace with `pii.action: redact`), requests may arrive, but none of
  the planted values, in any spelling, is in what arrived.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pii_corpus import PiiRequest, control_request, leaked_values, pii_requests
from reliability_helpers import ERROR, HANG, OK, RouterProcess, Upstream, metric_value, router_config, write_config

MARKER = re.compile(r"(control )?ticket q[a-z]{6}")
STRESS_TIMEOUTS = {"connectMs": 300, "firstByteMs": 400, "totalMs": 3000}


def stress_config(local_url: str, cloud_url: str, **overrides: Any) -> dict[str, Any]:
    """Short timeouts; breakers that never open in a phase, so each phase's statuses depend on its faults alone
    (the breaker itself is covered by test_router_faults.py)."""
    config = router_config(local_url, cloud_url, **{"circuitBreaker": {"failureThreshold": 10**6}, **overrides})
    for tier in config["tiers"]:
        tier["timeouts"] = STRESS_TIMEOUTS
    return config


# Config variants, as overrides of the base (restricted namespace, keepLocal, cloud default tier).
RESTRICTED = {"residency": {"namespaceClass": "restricted", "pii": {"action": "keepLocal"}}}
UNRESTRICTED_KEEP_LOCAL = {"residency": {"namespaceClass": "unrestricted", "pii": {"action": "keepLocal"}}}
UNRESTRICTED_REDACT = {"residency": {"namespaceClass": "unrestricted", "pii": {"action": "redact"}}}
LOCAL_ONLY = {"residency": {"namespaceClass": "local-only"}}
BUDGET_LOCAL_ONLY = {**UNRESTRICTED_KEEP_LOCAL, "budget": {"monthlyUSD": 10, "exhausted": True,
                                                           "whenExhausted": "localOnly"}}  # fmt: skip
BUDGET_REJECT = {**UNRESTRICTED_KEEP_LOCAL, "budget": {"monthlyUSD": 10, "exhausted": True,
                                                       "whenExhausted": "reject"}}  # fmt: skip
FALLBACK_EVERYWHERE = {"fallback": {"retries": 3, "on": ["5xx", "timeout", "connect"]}}


@dataclass
class Phase:
    """One combination: a config, the local tier's state, how many requests, what the client must see."""

    name: str
    overrides: dict[str, Any]
    local: str  # up | down | 5xx | hang
    share: float  # fraction of the PII requests
    statuses: set[int]  # allowed statuses for PII requests
    controls: int = 40
    controls_reach_cloud: bool | None = True  # None: not asserted
    redacting: bool = False
    churn: bool = False
    churn_configs: list[dict[str, Any] | None] | None = None  # None: CHURN_CONFIGS


PHASES = [
    Phase("restricted, local up", {**RESTRICTED, **FALLBACK_EVERYWHERE}, "up", 0.14, {200}),
    Phase("restricted, local down", {**RESTRICTED, **FALLBACK_EVERYWHERE}, "down", 0.12, {503}),
    Phase("restricted, local 5xx", {**RESTRICTED, **FALLBACK_EVERYWHERE}, "5xx", 0.10, {502}),
    Phase("restricted, local hangs", RESTRICTED, "hang", 0.03, {504}),
    Phase("unrestricted keepLocal, local down", {**UNRESTRICTED_KEEP_LOCAL, **FALLBACK_EVERYWHERE}, "down", 0.10,
          {503}),
    Phase("local-only namespace, local 5xx", LOCAL_ONLY, "5xx", 0.06, {502}, controls_reach_cloud=False),
    Phase("budget exhausted (localOnly), local down", BUDGET_LOCAL_ONLY, "down", 0.08, {503},
          controls_reach_cloud=False),
    Phase("budget exhausted (reject), local up", BUDGET_REJECT, "up", 0.06, {429}, controls_reach_cloud=False),
    Phase("unrestricted redact, local up", UNRESTRICTED_REDACT, "up", 0.10, {200}, redacting=True),
    Phase("config reload churn + local flapping", RESTRICTED, "up", 0.21, {200, 429, 502, 503, 504},
          controls_reach_cloud=None, redacting=True, churn=True),
]  # fmt: skip

CHURN_CONFIGS: list[dict[str, Any] | None] = [
    RESTRICTED, UNRESTRICTED_KEEP_LOCAL, BUDGET_LOCAL_ONLY, UNRESTRICTED_REDACT, None, LOCAL_ONLY, BUDGET_REJECT,
]  # fmt: skip
"""Cycled during the churn phase; None writes an invalid config (the router must keep the last good one)."""

CHURN_SPAN_S = 1.5
"""The churn phase's requests start spread over this many seconds (the router polls its config every 0.1 s)."""


@dataclass
class PhaseResult:
    name: str
    pii_requests: int
    statuses: Counter[int] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    cloud_bodies: int = 0
    cloud_pii_bodies: int = 0
    cloud_controls: int = 0
    leaks: list[dict[str, Any]] = field(default_factory=list)
    bad_errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    reloads: int = 0
    redacting: bool = False


@dataclass
class StressResult:
    phases: list[PhaseResult]
    total_pii_requests: int
    elapsed_s: float
    requests_per_s: float
    router_alive: bool
    reloads_success: float
    reloads_invalid: float
    entity_counts: dict[str, int]
    placement_counts: dict[str, int]
    disguise_counts: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        return {
            "total_pii_requests": self.total_pii_requests,
            "elapsed_s": round(self.elapsed_s, 2),
            "requests_per_s": round(self.requests_per_s, 1),
            "router_alive": self.router_alive,
            "config_reloads": {"success": self.reloads_success, "invalid": self.reloads_invalid},
            "reached_cloud_unredacted": sum(len(p.leaks) for p in self.phases),
            "pii_bodies_at_cloud_in_keep_local_phases": sum(
                p.cloud_pii_bodies for p in self.phases if not p.redacting
            ),
            "entities": self.entity_counts,
            "placements": self.placement_counts,
            "disguises": self.disguise_counts,
            "phases": [
                {
                    "name": p.name,
                    "pii_requests": p.pii_requests,
                    "statuses": {str(k): v for k, v in sorted(p.statuses.items())},
                    "tiers": dict(p.tiers),
                    "cloud_bodies": p.cloud_bodies,
                    "cloud_pii_bodies": p.cloud_pii_bodies,
                    "cloud_controls": p.cloud_controls,
                    "leaks": len(p.leaks),
                    "elapsed_s": round(p.elapsed_s, 2),
                }
                for p in self.phases
            ],
        }


class Stress:
    """The rig: both stand-ins in the caller's event loop, the router as a process."""

    def __init__(self, tmp: Path, concurrency: int = 48) -> None:
        self.tmp = tmp
        self.slm = Upstream("slm")
        self.cloud = Upstream("cloud")
        self.config_path = tmp / "router.json"
        self.router = RouterProcess(self.config_path, tmp / "router.log", log_level="WARNING")
        self.concurrency = concurrency
        self.local_state = "up"
        self.config_text = ""

    async def __aenter__(self) -> Stress:
        await self.slm.start()
        await self.cloud.start()
        self.config_text = json.dumps(stress_config(self.slm.base_url, self.cloud.base_url, **RESTRICTED))
        write_config(self.config_path, self.config_text)
        await asyncio.to_thread(self.router.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.router.stop)
        await self.slm.stop()
        await self.cloud.stop()

    async def set_config(self, overrides: dict[str, Any] | None, wait: bool = True) -> None:
        old = await asyncio.to_thread(self.router.config_hash)
        text: Any = "{not json" if overrides is None else stress_config(self.slm.base_url, self.cloud.base_url,
                                                                       **overrides)  # fmt: skip
        rendered = text if isinstance(text, str) else json.dumps(text)
        if rendered == self.config_text:
            return
        self.config_text = rendered
        write_config(self.config_path, rendered)
        if wait and overrides is not None:
            await asyncio.to_thread(self.router.wait_for_hash_change, old)

    async def set_local(self, state: str) -> None:
        if state == "down":
            await self.slm.stop()
        elif self.local_state == "down":
            await self.slm.start()
        self.slm.mode = {"up": OK, "down": OK, "5xx": ERROR, "hang": HANG}[state]
        self.slm.status = 503
        self.local_state = state

    async def _send(self, session: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> tuple[int, str, bytes]:
        async with session.post(self.router.url + path, json=body) as rsp:
            raw = await rsp.read()
            return rsp.status, rsp.headers.get("x-tiered-tier", ""), raw

    async def run_phase(
        self,
        phase: Phase,
        requests: Sequence[PiiRequest],
        session: aiohttp.ClientSession,
        control_base: int,
        control: Callable[[int], tuple[str, dict[str, Any]]] | None = None,
    ) -> PhaseResult:
        """`control(k)` gives the k-th PII-free request (path, body) whose arrival at the cloud proves the cloud path
        was live; its marker must read "control ticket q..." (default: pii_corpus.control_request)."""
        result = PhaseResult(phase.name, len(requests), redacting=phase.redacting)
        await self.set_local(phase.local)
        await self.set_config(phase.overrides)
        first_cloud = len(self.cloud.received)
        before = await asyncio.to_thread(self.router.metrics)
        sem = asyncio.Semaphore(self.concurrency)
        stop = asyncio.Event()

        spread = random.Random(7)

        async def one(path: str, body: dict[str, Any], pii: bool) -> None:
            if phase.churn:  # spread over CHURN_SPAN_S, so several reloads land among the requests however fast
                await asyncio.sleep(spread.uniform(0, CHURN_SPAN_S))
            async with sem:
                status, tier, raw = await self._send(session, path, body)
            if not pii:
                return
            result.statuses[status] += 1
            result.tiers[tier or "-"] += 1
            if status >= 400:
                try:
                    err = json.loads(raw)["error"]
                    ok = isinstance(err["message"], str) and isinstance(err["type"], str)
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    result.bad_errors.append(raw[:200].decode(errors="replace"))

        async def churn() -> None:
            rng = random.Random(5)
            states = ["up", "down", "5xx", "up"]
            i = 0
            configs = phase.churn_configs or CHURN_CONFIGS
            while not stop.is_set():
                config = configs[i % len(configs)]
                await self.set_config(config, wait=False)
                if i % 3 == 0:
                    await self.set_local(rng.choice(states))
                i += 1
                # the invalid config stays longer than the router's 0.1 s poll, so it is surely seen and refused
                await asyncio.sleep(0.15 if config is None else 0.06)

        started = time.perf_counter()
        churner = asyncio.create_task(churn()) if phase.churn else None
        try:
            jobs = [one(r.path, r.body, True) for r in requests]
            controls = [control(control_base + k) if control is not None
                        else ("/v1/chat/completions", control_request(control_base + k))
                        for k in range(phase.controls)]  # fmt: skip
            jobs += [one(path, body, False) for path, body in controls]
            random.Random(len(requests)).shuffle(jobs)
            await asyncio.gather(*jobs)
        finally:
            stop.set()
            if churner is not None:
                await churner
        result.elapsed_s = time.perf_counter() - started
        after = await asyncio.to_thread(self.router.metrics)
        result.reloads = int(
            metric_value(after, "tiered_router_config_reloads_total")
            - metric_value(before, "tiered_router_config_reloads_total")
        )
        by_marker = {r.marker: r for r in requests}
        for received in self.cloud.received[first_cloud:]:
            result.cloud_bodies += 1
            text = json.dumps(received.body(), ensure_ascii=False) if received.body() is not None else ""
            text = text or received.raw.decode(errors="replace")
            m = MARKER.search(text)
            if m is not None and m.group(1):
                result.cloud_controls += 1
                continue
            req = by_marker.get(m.group(0)) if m else None
            if req is not None:
                result.cloud_pii_bodies += 1
            # Any planted value of this phase, whoever's body it is in (a marker could in theory be lost).
            candidates = req.values if req is not None else tuple(v for r in requests for v in r.values)
            leaked = leaked_values(text, candidates)
            if leaked or (req is not None and not phase.redacting):
                result.leaks.append({"marker": m.group(0) if m else None, "leaked": leaked,
                                     "placement": req.placement if req else None,
                                     "entities": req.entities if req else None, "body": text[:400]})  # fmt: skip
        return result


async def run_stress(tmp: Path, total: int = 10_000, seed: int = 20261128) -> StressResult:
    return await run_phases(tmp, pii_requests(total, seed), PHASES)


async def run_phases(
    tmp: Path,
    requests: Sequence[PiiRequest],
    phases: list[Phase],
    control: Callable[[int], tuple[str, dict[str, Any]]] | None = None,
) -> StressResult:
    """`requests` shared out over `phases` by their shares, each phase with its own config, faults and controls."""
    total = len(requests)
    results: list[PhaseResult] = []
    started = time.perf_counter()
    async with Stress(tmp) as stress:
        connector = aiohttp.TCPConnector(limit=stress.concurrency)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            pos = 0
            for n, phase in enumerate(phases):
                count = round(total * phase.share) if n < len(phases) - 1 else total - pos
                chunk = requests[pos : pos + count]
                pos += count
                results.append(await stress.run_phase(phase, chunk, session, n * 1000, control))
        elapsed = time.perf_counter() - started
        metrics = await asyncio.to_thread(stress.router.metrics)
        alive = stress.router.alive()
    return StressResult(
        phases=results,
        total_pii_requests=sum(p.pii_requests for p in results),
        elapsed_s=elapsed,
        requests_per_s=sum(p.pii_requests + phases[i].controls for i, p in enumerate(results)) / elapsed,
        router_alive=alive,
        reloads_success=metric_value(metrics, "tiered_router_config_reloads_total", result="success"),
        reloads_invalid=metric_value(metrics, "tiered_router_config_reloads_total", result="invalid"),
        entity_counts=dict(Counter(e for r in requests for e in r.entities)),
        placement_counts=dict(Counter(r.placement for r in requests)),
        disguise_counts=dict(
            Counter(f"{e}:{d}" for r in requests for e, d in zip(r.entities, r.disguises, strict=True))
        ),
    )
