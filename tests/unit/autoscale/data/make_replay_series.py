"""Regenerate noisy_in_slo.json: 10 minutes of a tier's p95 as the autoscaler would read it every 15 s.

The series imitates what a rolling 5-minute p95 looks like under steady, healthy load: an AR(1) walk around
85 % of the objective (a rolling window makes consecutive readings strongly correlated), with noise large
enough to dip below the level at which 3 replicas look over-provisioned (ratio < 0.667) several times, but
never for a whole stabilization window, and never above the tolerance band (ratio > 1.1).

Run: python tests/unit/autoscale/data/make_replay_series.py  (seeded: the output is reproducible)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SLO_MS = 100.0
INTERVAL_S = 15
DURATION_S = 600


def generate(seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    level, value, out = 0.85, 0.85, []
    for _ in range(DURATION_S // INTERVAL_S):
        value = level + 0.8 * (value - level) + rng.gauss(0.0, 0.12)
        ratio = min(1.08, max(0.45, value))
        out.append(round(ratio * SLO_MS, 1))
    return out


if __name__ == "__main__":
    target = Path(__file__).with_name("noisy_in_slo.json")
    series = generate()
    payload = {
        "sloMs": SLO_MS,
        "intervalSeconds": INTERVAL_S,
        "replicas": 3,
        "p95Ms": series,
    }
    target.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {len(series)} samples to {target}; min {min(series)} max {max(series)}")
