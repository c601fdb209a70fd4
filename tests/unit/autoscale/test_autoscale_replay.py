"""Replays: the algorithm fed whole series, counting the scale changes it makes.

noisy_in_slo.json holds 10 minutes of a healthy tier's p95 at a 15 s evaluation interval (see
data/make_replay_series.py): it wanders above the objective (inside the tolerance band) and dips to where 3
replicas look over-provisioned, but never for a whole stabilization window. A good autoscaler sits still.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tiered_operator.autoscale.algorithm import Recommendation, ScalingPolicy, TierMetrics, desired_replicas

DATA = Path(__file__).parent / "data" / "noisy_in_slo.json"


def replay_recorded(series: list[float], replicas: int, policy: ScalingPolicy, interval: float) -> list[tuple]:
    """Feed a recorded p95 series (independent of replicas); return the (t, from, to) changes."""
    history: tuple[Recommendation, ...] = ()
    changes = []
    for i, ms in enumerate(series):
        decision = desired_replicas(replicas, TierMetrics(ms, 4.0), policy, now=i * interval, history=history)
        history = decision.history
        if decision.changed:
            changes.append((i * interval, replicas, decision.desired))
            replicas = decision.desired
    return changes


def test_noisy_in_slo_series_makes_no_scale_change_in_ten_minutes() -> None:
    data = json.loads(DATA.read_text())
    series = data["p95Ms"]
    assert len(series) * data["intervalSeconds"] == 600
    policy = ScalingPolicy(min_replicas=1, max_replicas=10, slo_p95_ms=data["sloMs"])  # CRD defaults
    assert replay_recorded(series, data["replicas"], policy, data["intervalSeconds"]) == []


def test_the_same_series_without_stabilization_would_scale_down() -> None:
    """Proves the series is noisy enough to matter: with no stabilization window its dips do scale down."""
    data = json.loads(DATA.read_text())
    policy = ScalingPolicy(
        min_replicas=1, max_replicas=10, slo_p95_ms=data["sloMs"], scale_down_stabilization_seconds=0
    )
    changes = replay_recorded(data["p95Ms"], data["replicas"], policy, data["intervalSeconds"])
    assert changes and changes[0][1:] == (3, 2)


def replay_load(demand: list[float], replicas: int, policy: ScalingPolicy, interval: float) -> list[tuple]:
    """A closed loop: p95 follows load per replica (p95 = 0.8 * SLO * demand / replicas)."""
    history: tuple[Recommendation, ...] = ()
    changes = []
    for i, d in enumerate(demand):
        ms = 0.8 * policy.slo_p95_ms * d / replicas
        decision = desired_replicas(replicas, TierMetrics(ms, d), policy, now=i * interval, history=history)
        history = decision.history
        if decision.changed:
            changes.append((i * interval, replicas, decision.desired))
            replicas = decision.desired
    return changes


def test_a_step_breach_makes_exactly_the_expected_changes() -> None:
    policy = ScalingPolicy(min_replicas=1, max_replicas=10, slo_p95_ms=100.0)  # step up 4, down 1, 300 s
    interval = 15.0
    # 3 replicas' worth of load for 2 min, 9 for 5 min, back to 3 for 10 min.
    demand = [3.0] * 8 + [9.0] * 20 + [3.0] * 40
    changes = replay_load(demand, 3, policy, interval)
    drop = 28 * interval  # first evaluation after the load falls back
    # The breach: p95 = 0.8 * 9 / 3 = 2.4 x SLO wants ceil(7.2) = 8, bounded to 3 + 4 = 7, where
    # p95 = 0.8 * 9 / 7 = 1.03 x SLO is inside the band: one change up.
    # The recovery: the last "keep 7" recommendation was at drop - 15 s; the window is covered 300 s
    # later, then one replica per evaluation until p95 = 0.8 x SLO at 3 replicas.
    first_down = drop - interval + 300.0
    assert changes == [
        (8 * interval, 3, 7),
        (first_down, 7, 6),
        (first_down + interval, 6, 5),
        (first_down + 2 * interval, 5, 4),
        (first_down + 3 * interval, 4, 3),
    ]
    assert math.isclose(first_down, 705.0)
