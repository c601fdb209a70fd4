"""`classifier.threshold: auto`: thresholds derived from the policy's own held-out examples (calibrate.py)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from tiered_router.calibrate import FALLBACK_THRESHOLD, HeldOut, calibrate, folds, rates
from tiered_router.classify import RouteClassifier
from tiered_router.config import parse_config
from tiered_router.encoders import load_encoder

TIERS = [
    {"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny"},
    {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1/", "model": "big"},
]


def _phrases(templates: list[str], fills: list[str]) -> list[str]:
    return [t.format(f) for t, f in itertools.product(templates, fills)]


WEATHER = _phrases(["will it {} tomorrow", "is it going to {} this weekend", "how likely is {} today"],
                   ["rain", "snow", "be sunny", "hail"])  # fmt: skip
BANKING = _phrases(["what is the balance of my {}", "move money out of my {}", "freeze my {} please"],
                   ["checking account", "savings account", "credit card", "debit card"])  # fmt: skip
MUSIC = _phrases(["play some {} music", "put on a {} playlist", "skip this {} song"],
                 ["jazz", "rock", "classical", "country"])  # fmt: skip
ELSEWHERE = _phrases(["tell me a fact about {}", "who invented {}", "write a poem about {}", "explain {} to me"],
                     ["volcanoes", "the printing press", "penguins", "chess", "the moon"])  # fmt: skip


def policy(default_examples: list[str] | None = None, **classifier: Any) -> Any:
    routes: list[dict[str, Any]] = [
        {"name": "weather", "tier": "slm", "examples": WEATHER},
        {"name": "banking", "tier": "slm", "examples": BANKING},
        {"name": "music", "tier": "slm", "examples": MUSIC},
    ]
    if default_examples is None:
        routes.append({"name": "elsewhere", "tier": "gpt", "examples": ELSEWHERE})
    else:
        classifier["defaultExamples"] = default_examples
    return parse_config({"schemaVersion": 1, "tiers": TIERS, "defaultTier": "gpt", "routes": routes,
                         "classifier": classifier})  # fmt: skip


def classifier(config: Any) -> RouteClassifier:
    return RouteClassifier(config, load_encoder(config.classifier.encoder))


# --- the pure part -------------------------------------------------------------------------------------------


def held(scores: list[list[float]], labels: list[int], to_default: list[bool]) -> HeldOut:
    s = np.array(scores, dtype=np.float32)
    return HeldOut(s, np.full(len(s), -1.0, np.float32), np.array(labels), np.array(to_default))


def test_the_chosen_threshold_is_the_lowest_that_reaches_the_target() -> None:
    # route 0 in scope, route 1 on the default tier; out-of-scope examples (label 1) whose best in-scope score
    # is 0.2, 0.4, 0.6, 0.8 keep reaching route 0 until the threshold passes them.
    ins = [[0.9, 0.1], [0.7, 0.1], [0.5, 0.1]]
    oos = [[0.2, 0.1], [0.4, 0.1], [0.6, 0.1], [0.8, 0.1]]
    h = held(ins + oos, [0, 0, 0, 1, 1, 1, 1], [False, True])
    cal = calibrate(h, 0.75, 0.0, 1.0, min_out_of_scope=1)
    assert cal.calibrated
    assert rates(h, cal.threshold)[1] >= 0.75
    assert rates(h, cal.threshold - 1e-3)[1] < 0.75  # nothing lower reaches it
    assert cal.threshold == pytest.approx(0.6, abs=1e-6)  # just above the third out-of-scope score
    assert cal.in_scope == pytest.approx(2 / 3)  # the 0.5 in-scope example no longer passes
    assert [p.threshold for p in cal.curve] == sorted(p.threshold for p in cal.curve)


def test_out_of_scope_examples_that_win_a_default_tier_route_already_count_as_sent_to_the_default() -> None:
    h = held([[0.9, 0.1], [0.1, 0.95]], [0, 1], [False, True])
    assert rates(h, 0.0) == (1.0, 1.0)


def test_too_few_out_of_scope_examples_fall_back_and_say_why() -> None:
    h = held([[0.9, 0.1], [0.2, 0.1]], [0, 1], [False, True])
    cal = calibrate(h, 0.85, 0.0, 1.0)
    assert not cal.calibrated and cal.threshold == FALLBACK_THRESHOLD
    assert "1 out-of-scope examples" in cal.basis and "at least 10 needed" in cal.basis


def test_folds_spread_every_route_over_every_fold() -> None:
    labels = np.array([0] * 10 + [1] * 5 + [-1] * 7)
    f = folds(labels, 5)
    for value in (0, 1, -1):
        assert set(f[labels == value].tolist()) == set(range(5))


# --- the classifier ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["builtin", "lexical"])
def test_a_policy_without_a_threshold_gets_one_derived_from_its_held_out_examples(encoder: str) -> None:
    clf = classifier(policy(encoder={"kind": encoder}))
    cal = clf.calibration
    assert cal is not None and cal.calibrated, cal
    assert cal.out_of_scope is not None and cal.out_of_scope >= 0.85
    assert cal.in_scope_examples == 36 and cal.out_of_scope_examples == 20
    assert clf.thresholds == [cal.threshold] * 4 and clf.threshold_sources == ["auto"] * 4
    # the derived threshold decides like any other: an in-scope prompt passes, the default tier keeps the rest
    assert clf.classify("is it going to rain on saturday", 10).route == "weather"


def test_a_higher_target_never_lowers_the_threshold() -> None:
    low = classifier(policy(targetOutOfScopeRate=0.6)).calibration
    high = classifier(policy(targetOutOfScopeRate=0.99)).calibration
    assert low is not None and high is not None
    assert high.threshold >= low.threshold
    assert high.out_of_scope is not None and high.out_of_scope >= 0.99


def test_default_examples_count_as_out_of_scope_examples() -> None:
    cal = classifier(policy(default_examples=ELSEWHERE)).calibration
    assert cal is not None and cal.calibrated and cal.out_of_scope_examples == 20


def test_explicit_thresholds_still_win() -> None:
    config = policy()
    own = config.model_copy(update={"routes": [config.routes[0].model_copy(update={"threshold": 0.9}),
                                               *config.routes[1:]]})  # fmt: skip
    clf = classifier(own)
    assert clf.thresholds[0] == 0.9 and clf.threshold_sources[0] == "route"
    assert clf.calibration is not None and clf.thresholds[1] == clf.calibration.threshold
    fixed = classifier(policy(defaultThreshold=0.3))
    assert fixed.calibration is None
    assert fixed.thresholds == [0.3] * 4 and fixed.threshold_sources == ["policy"] * 4


def test_without_out_of_scope_examples_the_unseen_topic_rows_calibrate_alone() -> None:
    config = policy()
    clf = classifier(config.model_copy(update={"routes": config.routes[:3]}))
    cal = clf.calibration
    assert cal is not None and cal.calibrated, cal
    assert cal.out_of_scope_examples == 0 and cal.unseen_topic_examples == 36
    assert cal.out_of_scope is not None and cal.out_of_scope >= 0.85


def test_a_policy_too_small_to_estimate_the_rate_falls_back_and_says_why() -> None:
    config = policy()
    tiny = [r.model_copy(update={"examples": r.examples[:2]}) for r in config.routes[:2]]
    clf = classifier(config.model_copy(update={"routes": tiny}))
    assert clf.calibration is not None and not clf.calibration.calibrated
    assert "4 in-scope examples scored without their route" in clf.calibration.basis
    assert clf.thresholds == [FALLBACK_THRESHOLD] * 2


def test_held_out_scores_are_computed_without_the_example_itself() -> None:
    """Leave-one-out (knn): an example scored by a classifier that still held it would match itself (~1.0)."""
    clf = classifier(policy(encoder={"kind": "lexical"}))
    h = clf.held_out()
    texts = WEATHER + BANKING + MUSIC + ELSEWHERE
    label = h.label[: len(texts)]
    own = h.scores[np.arange(len(texts)), label]
    in_sample = np.array([clf.scores(t).routes[clf.routes[int(lbl)].name] for t, lbl in zip(texts, label, strict=True)])
    assert np.all(own < in_sample - 1e-3)


@pytest.mark.parametrize("encoder", ["builtin", "lexical"])
def test_in_scope_examples_are_scored_again_as_unseen_topics(encoder: str) -> None:
    """Each in-scope example once more, by a classifier trained without its whole route: out of scope then."""
    clf = classifier(policy(encoder={"kind": encoder}))
    h = clf.held_out()
    assert h.unseen is not None
    n = len(WEATHER + BANKING + MUSIC + ELSEWHERE)
    assert not h.unseen[:n].any() and h.unseen[n:].all() and int(h.unseen.sum()) == 36
    assert np.all(h.label[n:] == -1)
    rows = h.scores[n:]
    left_out = np.repeat([0, 1, 2], 12)  # the unseen rows come route by route (weather, banking, music)
    assert np.all(rows[np.arange(36), left_out] == -1.0)  # the route left out can never win
    cal = clf.calibration
    assert cal is not None and cal.unseen_topic_examples == 36 and cal.out_of_scope_examples == 20


def test_explain_shows_the_derived_threshold_its_source_and_the_calibration() -> None:
    from tiered_operator.views import render_explanation
    from tiered_router.explain import explain

    config = policy()
    out = explain("is it going to snow this weekend", config)
    cal = out["calibration"]
    assert cal["basis"] == "cross-validated" and cal["targetOutOfScopeRate"] == 0.85
    assert {s["thresholdSource"] for s in out["scores"]} == {"auto"}
    assert all(s["threshold"] == cal["threshold"] for s in out["scores"])
    text = render_explanation(out)
    assert f"auto threshold: {cal['threshold']} (cross-validated" in text and "(auto)" in text
    fixed = explain("is it going to snow this weekend", policy(defaultThreshold=0.3))
    assert fixed["calibration"] is None and {s["thresholdSource"] for s in fixed["scores"]} == {"policy"}
    assert "auto threshold" not in render_explanation(fixed)
