"""A freshly loaded config declares every per-tier series at zero, before the first request."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import generate_latest

from tiered_router.metrics import IN_FLIGHT, REQUEST_LATENCY, RouterMetrics
from tiered_router.state import ConfigHolder

CONFIG = {
    "schemaVersion": 1,
    "tiers": [
        {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "m"},
        {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1", "model": "g"},
    ],
    "defaultTier": "slm",
    "classifier": {"encoder": {"kind": "lexical"}},
}


def test_loading_a_config_creates_each_tiers_series_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "router.json"
    path.write_text(json.dumps(CONFIG))
    metrics = RouterMetrics()
    assert ConfigHolder(path, metrics).load_once()
    text = generate_latest(metrics.registry).decode()
    for tier in ("slm", "gpt"):
        assert f'{IN_FLIGHT}{{tier="{tier}"}} 0.0' in text
        assert f'{REQUEST_LATENCY}_count{{tier="{tier}"}} 0.0' in text
