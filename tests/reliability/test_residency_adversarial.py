"""Residency on a corpus the scanner was not written against (pii_adversarial.py): 10,000 disguised values through
the real router in the default `restricted` configuration (strict PII mode, keepLocal, a cloud default tier), while
the local tier is up, down, failing or hanging, the budget runs out, and the config is swapped under load. At most
one value in 10,000 may reach the cloud stand-in; the same requests with their values replaced by PII-free words
must reach it whenever the config allows the cloud at all, so the cloud path was live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pii_adversarial import adversarial_requests, control_for, disguises_for
from residency_stress import FALLBACK_EVERYWHERE, LOCAL_ONLY, Phase, run_phases

pytestmark = pytest.mark.slow

TOTAL = 10_000
MAX_LEAKS = 1  # per 10,000 values (the target)

RESTRICTED_DEFAULT = {"residency": {"namespaceClass": "restricted", "pii": {"action": "keepLocal"}}}
RESTRICTED_BUDGET_LOCAL = {**RESTRICTED_DEFAULT, "budget": {"monthlyUSD": 10, "exhausted": True,
                                                            "whenExhausted": "localOnly"}}  # fmt: skip
RESTRICTED_BUDGET_REJECT = {**RESTRICTED_DEFAULT, "budget": {"monthlyUSD": 10, "exhausted": True,
                                                             "whenExhausted": "reject"}}  # fmt: skip
RESTRICTED_ONE_RETRY = {**RESTRICTED_DEFAULT, "fallback": {"retries": 1, "on": ["5xx", "connect"]}}

PHASES = [
    Phase("restricted, local up", {**RESTRICTED_DEFAULT, **FALLBACK_EVERYWHERE}, "up", 0.20, {200}),
    Phase("restricted, local down (fallback)", {**RESTRICTED_DEFAULT, **FALLBACK_EVERYWHERE}, "down", 0.15, {503}),
    Phase("restricted, local 5xx (fallback)", {**RESTRICTED_DEFAULT, **FALLBACK_EVERYWHERE}, "5xx", 0.12, {502}),
    Phase("restricted, local hangs", RESTRICTED_DEFAULT, "hang", 0.04, {504}),
    Phase("restricted, budget exhausted (localOnly), local down", RESTRICTED_BUDGET_LOCAL, "down", 0.10, {503},
          controls_reach_cloud=False),
    Phase("restricted, budget exhausted (reject), local up", RESTRICTED_BUDGET_REJECT, "up", 0.09, {429},
          controls_reach_cloud=False),
    Phase("restricted, config reload churn + local flapping", RESTRICTED_DEFAULT, "up", 0.30,
          {200, 429, 502, 503, 504}, controls_reach_cloud=None, churn=True,
          churn_configs=[RESTRICTED_DEFAULT, RESTRICTED_BUDGET_LOCAL, None, RESTRICTED_ONE_RETRY, LOCAL_ONLY,
                         RESTRICTED_BUDGET_REJECT, {**RESTRICTED_DEFAULT, **FALLBACK_EVERYWHERE}]),
]  # fmt: skip


def _control(k: int) -> tuple[str, dict[str, Any]]:
    req = control_for(k)
    return req.path, req.body


def test_corpus_covers_every_entity_disguise_and_placement() -> None:
    requests = adversarial_requests(TOTAL)
    assert sum(len(r.planted) for r in requests) == TOTAL
    entities = {p.entity for r in requests for p in r.planted}
    assert entities == {"creditCard", "usSsn", "iban", "email", "phone", "ipAddress", "apiKey"}
    for entity in entities:  # every disguise of every entity occurs
        seen = {p.disguise for r in requests for p in r.planted if p.entity == entity}
        assert seen == set(disguises_for(entity)), (entity, set(disguises_for(entity)) - seen)
    assert len({r.placement for r in requests}) >= 20
    assert sum(not p.valid for r in requests for p in r.planted) >= 100  # broken checksums, kept local by strict
    # a control is the same request shape without the value, and carries none of it
    for k in range(0, TOTAL, 97):
        text = json.dumps(control_for(k).body, ensure_ascii=False)
        assert not any(w in text for p in requests[k].planted for w in p.written if len(w) >= 4)


async def test_disguised_values_stay_local_under_faults_budget_and_reloads(tmp_path: Path) -> None:
    result = await run_phases(tmp_path, adversarial_requests(TOTAL), PHASES, _control)
    report = result.as_json()
    leaks = [leak for p in result.phases for leak in p.leaks]
    print(json.dumps({k: report[k] for k in ("total_pii_requests", "reached_cloud_unredacted", "requests_per_s")}))
    assert result.total_pii_requests == TOTAL
    assert result.router_alive
    assert len(leaks) <= MAX_LEAKS, json.dumps(leaks[:5], indent=1)
    by_name = {p.name: p for p in result.phases}
    for phase in PHASES:
        got = by_name[phase.name]
        allowed = phase.statuses if phase.statuses == {429} else phase.statuses | {504}
        assert set(got.statuses) <= allowed, f"{phase.name}: {dict(got.statuses)}"
        assert got.bad_errors == [], got.bad_errors[:3]
        if phase.controls_reach_cloud is True:  # the cloud path was live: every PII-free twin got there
            assert got.cloud_controls == phase.controls, f"{phase.name}: {got.cloud_controls} controls at cloud"
        elif phase.controls_reach_cloud is False:
            assert got.cloud_controls == 0, phase.name
    churn = by_name["restricted, config reload churn + local flapping"]
    assert churn.reloads >= 5, churn.reloads
    assert result.reloads_invalid >= 1
