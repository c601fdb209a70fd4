"""Where the decision runs: inline on the event loop unless it is expensive (server._decide).

A decision sent to a worker thread is costed by the CPU time it spent there, not by its wall time: under load the
wall time of a thread hop is mostly waiting (for the GIL, for the loop), which once kept a ~50 µs classifier on the
thread for good, at a thread hop per request.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from tiered_router import server
from tiered_router.decision import Decision, Reason, RoutingRequest

DECISION = Decision(tier="slm", route=None, reason=Reason.NO_ROUTE_MATCHED, chain=("slm",))
ROUTING = RoutingRequest(text="hello", model="auto", input_tokens=2)


def _state(cost_s: float, dim: int = 256) -> Any:
    """The parts of a RouterState `_decide` reads (a neural-sized encoder unless `dim` is 0)."""
    return SimpleNamespace(config=None, classifier=SimpleNamespace(encoder=SimpleNamespace(dim=dim)),
                           decision_cost_s=cost_s)  # fmt: skip


def _waiting_decide(threads: list[int], wait_s: float) -> Any:
    def decide(config: Any, classifier: Any, routing: RoutingRequest) -> Decision:
        threads.append(threading.get_ident())
        time.sleep(wait_s)  # wall time without CPU time, like waiting for the GIL
        return DECISION

    return decide


async def test_a_threaded_decision_that_only_waits_comes_back_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    monkeypatch.setattr(server, "decide", _waiting_decide(threads, 0.005))
    state = _state(cost_s=2 * server.INLINE_DECISION_S)  # e.g. after a slow first request
    for _ in range(12):
        decision, spent = await server._decide(state, ROUTING)
        assert decision is DECISION and spent >= 0.005  # the metric still sees the pipeline's wall time
        if threads[-1] == threading.get_ident():
            break
    assert threads[0] != threading.get_ident(), "the first decision should have gone to a worker thread"
    assert threads[-1] == threading.get_ident(), "a decision that spends no CPU should come back to the loop"


async def test_cheap_decisions_stay_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    monkeypatch.setattr(server, "decide", _waiting_decide(threads, 0.0))
    state = _state(cost_s=0.0)
    for _ in range(5):
        await server._decide(state, ROUTING)
    assert set(threads) == {threading.get_ident()}
    assert state.decision_cost_s < server.INLINE_DECISION_S


async def test_an_inline_decision_preempted_by_the_os_stays_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wall time without CPU time inline is the OS running other processes (a loaded node): it says nothing about
    what the decision costs, so it must not send the next decisions to a worker thread."""
    threads: list[int] = []
    monkeypatch.setattr(server, "decide", _waiting_decide(threads, 0.003))
    state = _state(cost_s=0.0)
    for _ in range(5):
        _decision, spent = await server._decide(state, ROUTING)
        assert spent >= 0.003  # the decision-latency metric still sees the wall time
    assert set(threads) == {threading.get_ident()}
    assert state.decision_cost_s < server.INLINE_DECISION_S
