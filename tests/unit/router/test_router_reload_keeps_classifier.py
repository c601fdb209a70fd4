"""A reload that leaves the classifier's inputs alone (a budget flip, a price edit) reuses the trained classifier;
one that changes them (a route's examples) builds a new one. Building one calibrates auto thresholds (seconds of
CPU on a real policy), which a budget flip must not wait for."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tiered_router.metrics import RouterMetrics
from tiered_router.state import ConfigHolder

CONFIG: dict[str, Any] = {
    "schemaVersion": 1,
    "tiers": [
        {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "m"},
        {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1", "model": "g",
         "pricing": {"inputPer1M": 2.5, "outputPer1M": 10}},
    ],
    "defaultTier": "gpt",
    "routes": [
        {"name": "billing", "tier": "slm", "examples": ["refund my order", "my invoice is wrong", "charge twice"]},
        {"name": "weather", "tier": "slm", "examples": ["will it rain tomorrow", "weather in paris", "is it sunny"]},
        {"name": "other", "tier": "gpt", "examples": ["write a poem", "explain quantum physics", "plan a trip"]},
    ],
    "classifier": {"encoder": {"kind": "lexical"}},
}


def _holder(tmp_path: Path) -> tuple[ConfigHolder, Path]:
    path = tmp_path / "router.json"
    path.write_text(json.dumps(CONFIG))
    holder = ConfigHolder(path, RouterMetrics())
    assert holder.load_once()
    return holder, path


def _reload(holder: ConfigHolder, path: Path, config: dict[str, Any]) -> None:
    path.write_text(json.dumps(config))
    assert holder.load_once(), holder.last_error


def test_a_budget_flip_or_a_price_edit_reuses_the_classifier(tmp_path: Path) -> None:
    holder, path = _holder(tmp_path)
    assert holder.state is not None
    first = holder.state.classifier
    flipped = copy.deepcopy(CONFIG)
    flipped["budget"] = {"monthlyUSD": 10, "exhausted": True, "whenExhausted": "localOnly"}
    flipped["tiers"][1]["pricing"] = {"inputPer1M": 3, "outputPer1M": 12}
    _reload(holder, path, flipped)
    assert holder.state.config.budget.exhausted
    assert holder.state.classifier is first


def test_a_route_edit_builds_a_new_classifier(tmp_path: Path) -> None:
    holder, path = _holder(tmp_path)
    assert holder.state is not None
    first = holder.state.classifier
    edited = copy.deepcopy(CONFIG)
    edited["routes"][0]["examples"].append("where is my refund")
    _reload(holder, path, edited)
    assert holder.state.classifier is not first
    assert holder.state.classifier.routes[0].examples[-1] == "where is my refund"
    second = holder.state.classifier
    moved = copy.deepcopy(edited)
    moved["defaultTier"] = "slm"  # the out-of-scope examples change with the default tier
    _reload(holder, path, moved)
    assert holder.state.classifier is not second
