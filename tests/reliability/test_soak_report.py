"""The soak's and the restart chaos's pure decisions, on synthetic data: what counts as an error, how RSS growth is
computed after the warm-up, per-minute buckets, and when the operator has acted on a change."""

from __future__ import annotations

import json
from typing import Any

from operator_restart_chaos import Snapshot, child_replaced, gone, reconciled
from soak import Outcome, RssSample, SoakRun, SoakSettings, classify, growth_percent, summarise

GOOD = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}}]}).encode()


def test_only_a_chat_completion_from_the_slm_tier_is_a_success() -> None:
    assert classify(200, {"x-tiered-tier": "slm"}, GOOD) is None
    assert classify(200, {"x-tiered-tier": "cloud"}, GOOD) == "answered by tier 'cloud'"
    assert classify(200, {"x-tiered-tier": "slm"}, b"{}") == "malformed body"
    assert classify(200, {"x-tiered-tier": "slm"}, b'{"choices": [{"message": {"content": null}}]}') == "malformed body"
    error = json.dumps({"error": {"type": "rate_limit_error", "code": "queue_full", "message": "m"}}).encode()
    assert classify(429, {}, error) == "http 429 rate_limit_error/queue_full"
    assert classify(502, {}, b"<html>") == "http 502"


def _sample(t: float, router: int, slm: int) -> RssSample:
    return RssSample(t, router, slm, t / 10, t / 5, 1.0)


def test_rss_growth_is_measured_from_the_first_sample_after_the_warm_up() -> None:
    samples = [_sample(0, 50, 100), _sample(30, 100, 100), _sample(60, 100, 100), _sample(90, 120, 100),
               _sample(120, 105, 100)]  # fmt: skip
    end, peak, base, last = growth_percent(samples, "router_kib", warmup=60)
    assert (base, last) == (100, 105)
    assert round(end, 6) == 5.0 and round(peak, 6) == 20.0
    assert growth_percent(samples, "slm_kib", warmup=60)[:2] == (0.0, 0.0)


def test_summary_counts_errors_per_minute_and_overall() -> None:
    run = SoakRun(SoakSettings(seconds=120, rate=2, warmup_s=60, sample_every_s=30))
    run.outcomes = [Outcome(i * 0.5, 0.0, 0.010, "http 429 x/y" if i == 150 else None) for i in range(240)]
    run.samples = [_sample(t, 1024 * 60, 1024 * 80) for t in (0, 30, 60, 90, 120)]
    run.send_seconds = 120.0
    report = summarise(run)
    assert report["requests"] == 240 and report["errors"] == 1
    assert report["errors_by_kind"] == {"http 429 x/y": 1}
    assert [m["errors"] for m in report["per_minute"]] == [0, 1]
    assert [m["requests"] for m in report["per_minute"]] == [120, 120]
    assert report["achieved_rate_per_s"] == 2.0
    assert report["rss"]["router"]["growth_percent"] == 0.0


def _obj(kind: str, name: str, uid: str, owner_uid: str | None = None, **meta: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": uid, "generation": 2, **meta}
    if owner_uid:
        metadata["ownerReferences"] = [{"controller": True, "uid": owner_uid, "name": "t"}]
    return {"kind": kind, "metadata": metadata}


def test_operator_progress_is_read_from_status_and_owned_children() -> None:
    tier = {**_obj("InferenceTier", "t", "u1"), "status": {"observedGeneration": 2}}
    children = [_obj(k, f"t-{k}", f"c-{k}", "u1") for k in ("Deployment", "Service", "ConfigMap")]
    snap = Snapshot({"t": tier}, children)
    assert reconciled(snap, "t") and not gone(snap, "t")
    assert not reconciled(Snapshot({"t": {**tier, "status": {"observedGeneration": 1}}}, children), "t")
    assert not reconciled(Snapshot({"t": tier}, children[1:]), "t")  # no Deployment
    assert not child_replaced(snap, "t", old_uid="c-Deployment")  # still the deleted object
    assert child_replaced(snap, "t", old_uid="an-older-one")
    assert gone(Snapshot({}, []), "t")
