"""Auto thresholds are computed once per policy and encoder: the held-out scores are cached on disk, read back
bit-identical, invalidated by any change of the classifier's inputs, and a cache that cannot be written only costs
the computation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiered_router.classify import RouteClassifier
from tiered_router.config import load_config
from tiered_router.encoders import load_encoder

ROUTES = {
    "billing": ["refund my order", "my invoice is wrong", "i was charged twice", "cancel my subscription",
                "update my card on file", "why is my bill so high"],
    "weather": ["will it rain tomorrow", "weather in paris", "is it sunny today", "how cold is it outside",
                "forecast for the weekend", "do i need an umbrella"],
    "travel": ["book a flight to rome", "find a hotel near the station", "change my train ticket",
               "rent a car at the airport", "what time does boarding start", "is my flight delayed"],
    "other": ["write a poem about the sea", "explain quantum physics", "tell me a joke", "who won the match",
              "translate this into german", "summarize this article", "what is the meaning of life",
              "recommend a good book", "how do magnets work", "draw a cat in ascii"],
}
CONFIG: dict[str, Any] = {
    "schemaVersion": 1,
    "tiers": [
        {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "m"},
        {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1", "model": "g"},
    ],
    "defaultTier": "gpt",
    "routes": [{"name": n, "tier": "gpt" if n == "other" else "slm", "examples": ex} for n, ex in ROUTES.items()],
    "classifier": {"encoder": {"kind": "lexical"}},
}


def _build(config: dict[str, Any]) -> RouteClassifier:
    parsed = load_config(json.dumps(config))
    return RouteClassifier(parsed, load_encoder(parsed.classifier.encoder))


def _forbid_held_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self: RouteClassifier) -> Any:
        raise AssertionError("held-out scores recomputed although they are cached")

    monkeypatch.setattr(RouteClassifier, "held_out", fail)


def test_a_second_build_reads_the_same_thresholds_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_ROUTER_CACHE", str(tmp_path))
    first = _build(CONFIG)
    assert first.calibration is not None and first.calibration.calibrated
    assert list((tmp_path / "calibration").glob("*.npz"))
    _forbid_held_out(monkeypatch)
    second = _build(CONFIG)
    assert second.thresholds == first.thresholds
    assert second.calibration is not None
    assert second.calibration.summary() == first.calibration.summary()


def test_a_changed_example_is_calibrated_anew(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERED_ROUTER_CACHE", str(tmp_path))
    _build(CONFIG)
    edited = copy.deepcopy(CONFIG)
    edited["routes"][0]["examples"].append("dispute a transaction")
    calls: list[int] = []
    original = RouteClassifier.held_out

    def counting(self: RouteClassifier) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(RouteClassifier, "held_out", counting)
    fresh = _build(edited)
    assert calls == [1]
    monkeypatch.setenv("TIERED_ROUTER_CACHE", str(tmp_path / "empty"))
    uncached = _build(edited)
    assert calls == [1, 1]
    assert np.allclose(fresh.thresholds, uncached.thresholds)


def test_an_unwritable_cache_only_costs_the_computation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would go")
    monkeypatch.setenv("TIERED_ROUTER_CACHE", str(blocker))
    built = _build(CONFIG)
    assert built.calibration is not None and built.calibration.calibrated
