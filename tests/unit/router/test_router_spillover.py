"""Spillover's pure parts: when a local tier is passed over, and which tiers a request may spill to."""

from __future__ import annotations

from typing import Any

import pytest

from tiered_router.classify import RouteClassifier
from tiered_router.config import RouterConfig, SloMetric, TierConfig, parse_config
from tiered_router.decision import Reason, RoutingRequest, decide
from tiered_router.encoders import load_encoder
from tiered_router.spillover import Cause, TierLoad, load_cause, retry_after_s, spill_cause


def tier(slo_ms: int | None = 1500, metric: str = "e2e") -> TierConfig:
    data: dict[str, Any] = {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "m"}
    if slo_ms is not None:
        data["slo"] = {"latencyP95Ms": slo_ms, "metric": metric}
    return TierConfig.model_validate(data)


def loaded(in_flight: int, service_s: float | None, sent_at: float = 0.0) -> TierLoad:
    load = TierLoad(service_s=service_s)
    for _ in range(in_flight):
        load.start(sent_at)
    return load


def test_the_service_time_is_measured_from_when_the_tier_began_on_each_request() -> None:
    load = TierLoad()
    first, second = load.start(0.0), load.start(0.1)
    assert load.in_flight == 2
    assert load.finish(first) == 0.0
    load.answered(0.0, now=0.5)  # sent to an idle tier: 0.5 s
    assert load.service_s == pytest.approx(0.5)
    sent = load.finish(second)
    assert sent == pytest.approx(0.1)
    load.answered(0.1, now=0.8)  # queued behind the first: the tier began on it at 0.5, so 0.3 s
    assert load.service_s == pytest.approx(0.8 * 0.5 + 0.2 * 0.3)
    assert load.service_dev_s == pytest.approx(0.2 * 0.2)
    assert load.finish(second) is None and load.in_flight == 0
    load.answered(2.0, now=2.4)  # sent after an idle gap: from when it was sent
    assert load.service_s == pytest.approx(0.8 * (0.8 * 0.5 + 0.2 * 0.3) + 0.2 * 0.4)


def test_a_tier_whose_predicted_latency_exceeds_its_slo_with_headroom_is_passed_over() -> None:
    assert spill_cause(tier(1875), loaded(2, 0.5), now=0) is None  # (2 + 1) x 0.5 s = 1.5 s = 80 % of 1.875 s
    assert spill_cause(tier(1870), loaded(2, 0.5), now=0) is Cause.OVER_SLO
    assert spill_cause(tier(1875), loaded(3, 0.5), now=0) is Cause.OVER_SLO  # 2.0 s
    assert spill_cause(tier(None), loaded(3, 0.5), now=0) is None  # no objective: only 429 / starting spill
    assert spill_cause(tier(1875, "ttft"), loaded(3, 0.5), now=0) is None  # waits 3 x 0.5 s for its first token
    assert spill_cause(tier(1800, "ttft"), loaded(3, 0.5), now=0) is Cause.OVER_SLO


def test_a_variable_service_time_fills_the_tier_less() -> None:
    steady, jumpy = loaded(2, 0.5), loaded(2, 0.5)
    jumpy.service_dev_s = 0.2
    assert spill_cause(tier(1875), steady, now=0) is None
    assert spill_cause(tier(1875), jumpy, now=0) is Cause.OVER_SLO  # 3 x 0.7 s = 2.1 s > 1.5 s


def test_before_the_first_answer_the_tier_takes_one_request_at_a_time() -> None:
    assert spill_cause(tier(1500), loaded(0, None), now=0) is None
    assert spill_cause(tier(1500), loaded(1, None), now=0) is Cause.OVER_SLO


def test_a_request_in_flight_longer_than_the_slo_marks_the_tier_over_it() -> None:
    load = loaded(1, 0.1, sent_at=10.0)  # the estimate says 0.2 s, but one request has waited 1.6 s
    assert spill_cause(tier(1500), load, now=11.4) is None
    assert spill_cause(tier(1500), load, now=11.6) is Cause.OVER_SLO


def test_an_answer_ends_a_starting_or_saturated_hold() -> None:
    load = TierLoad()
    load.mark(Cause.STARTING, 5.0, now=0.0)
    load.answered(0.0, now=0.3)
    assert spill_cause(tier(None), load, now=1.0) is None


def test_while_a_request_that_may_not_leave_waits_the_tier_is_busy_for_the_others() -> None:
    """Past the hold, a tier a held request still waits for is not offered to requests that may leave: the slot it
    frees goes to the waiting request (without this, back-to-back requests that could have spilled take it)."""
    load = TierLoad()
    load.mark(Cause.SATURATED, 1.0, now=0.0)
    load.waiting = 1
    assert spill_cause(tier(None), load, now=5.0) is Cause.SATURATED
    load.mark(Cause.STARTING, 1.0, now=10.0)
    assert spill_cause(tier(None), load, now=20.0) is Cause.STARTING  # waiting for a model that still loads
    load.waiting = 0
    assert spill_cause(tier(None), load, now=20.0) is None


@pytest.mark.parametrize(("cause", "retry_after", "held"), [
    (Cause.SATURATED, 30.0, 1.0), (Cause.SATURATED, None, 0.2), (Cause.SATURATED, 0.5, 0.5),
    (Cause.STARTING, 5.0, 5.0), (Cause.STARTING, 60.0, 5.0), (Cause.STARTING, None, 0.5),
])
def test_a_busy_or_starting_answer_is_remembered_for_a_clipped_retry_after(cause: Cause, retry_after: float | None,
                                                                          held: float) -> None:
    load = TierLoad()
    load.mark(cause, retry_after, now=100.0)
    assert spill_cause(tier(), load, now=100.0 + held - 0.01) is cause
    assert spill_cause(tier(), load, now=100.0 + held + 0.01) is None


@pytest.mark.parametrize(("status", "code", "cause"), [
    (429, "queue_full", Cause.SATURATED), (429, None, Cause.SATURATED), (503, "model_not_ready", Cause.STARTING),
    (503, "draining", Cause.STARTING), (503, "overloaded", None), (500, "model_not_ready", None), (200, None, None),
])
def test_load_answers_are_told_from_faults(status: int, code: str | None, cause: Cause | None) -> None:
    assert load_cause(status, code) is cause


def test_retry_after_seconds() -> None:
    assert retry_after_s("3") == 3.0 and retry_after_s("0.5") == 0.5 and retry_after_s(None) is None
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") is None and retry_after_s("-2") == 0.0


def test_causes_name_their_reasons() -> None:
    assert Cause.OVER_SLO.reason is Reason.SPILLOVER_OVER_SLO and Cause.SATURATED.reason.value == (
        "SpilloverLocalSaturated")
    assert SloMetric("ttft") is SloMetric.TTFT


def config(namespace_class: str = "restricted") -> RouterConfig:
    return parse_config({
        "policy": "p", "defaultTier": "gpt",
        "tiers": [{"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "m"},
                  {"name": "gpt", "kind": "cloud", "baseURL": "http://127.0.0.1:2/v1", "model": "g"},
                  {"name": "gpt-b", "kind": "cloud", "baseURL": "http://127.0.0.1:3/v1", "model": "g"}],
        "routes": [{"name": "local", "tier": "slm", "keywords": ["hello"], "examples": ["say hi"]}],
        "residency": {"namespaceClass": namespace_class},
        "override": {"enabled": True},
        "fallback": {"retries": 0},
    })


def spill_of(cfg: RouterConfig, text: str, pinned: str | None = None) -> tuple[str, ...]:
    clf = RouteClassifier(cfg, load_encoder(cfg.classifier.encoder))
    decision = decide(cfg, clf, RoutingRequest(text=text, model="auto", pinned_tier=pinned, input_tokens=5))
    assert not decision.rejected
    return decision.spill


def test_a_local_request_may_spill_to_every_other_allowed_tier_whatever_the_fallback_retries() -> None:
    assert spill_of(config(), "hello there") == ("gpt", "gpt-b")


def test_requests_residency_keeps_local_never_have_a_spill_target() -> None:
    assert spill_of(config(), "hello, write to ann@example.com") == ()  # PII in a restricted namespace
    assert spill_of(config("local-only"), "hello there") == ()


def test_pinned_requests_and_cloud_bound_requests_do_not_spill() -> None:
    assert spill_of(config(), "hello there", pinned="slm") == ()
    assert spill_of(config(), "what is the capital of peru") == ()  # the default tier is a cloud tier
