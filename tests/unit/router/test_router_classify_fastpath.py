"""The classifier's per-request fast paths compute exactly what the plain numpy formulation computes.

`LexicalIndex.query`, `StaticEncoder._vector` and `LinearHead.probabilities` avoid np.unique / np.linalg.norm /
fancy indexing for speed on short prompts; their outputs must stay bit-identical to the straightforward code (the
router's decisions and scores must not move). `classify` picks its candidate without a per-route token-limit check
when no route has maxInputTokens; both branches must agree, ties included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tiered_router.classify import LexicalIndex, LinearHead, RouteClassifier, _sublinear_tf, softmax
from tiered_router.config import EncoderSpec, parse_config
from tiered_router.encoders import load_encoder
from tiered_router.evaluate import config_from_policy
from tiered_router.static_embed import StaticEncoder

POLICY = Path(__file__).resolve().parents[3] / "router_image" / "policies" / "clinc150-domains.yaml"
EDGE = ["", "   ", "?!", "a", "the the the the the the the", "ÉTÉ à Paris, naïve café?", "x" * 3000,
        "please check the balance of my savings account " * 60]  # fmt: skip


@pytest.fixture(scope="module")
def clinc() -> tuple[RouteClassifier, list[str]]:
    manifest = yaml.safe_load(POLICY.read_text())
    c = config_from_policy(manifest)
    texts = [e for r in manifest["spec"]["routes"] for e in r["examples"]]
    return RouteClassifier(c, load_encoder(c.classifier.encoder)), texts + [t.upper() for t in texts[::7]] + EDGE


def _query_reference(index: LexicalIndex, text: str) -> tuple[np.ndarray, np.ndarray]:
    ids = index._feature_ids(text)
    if not len(ids):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    uniq, counts = np.unique(ids, return_counts=True)
    v = ((1.0 + np.log(counts)) * index.idf[uniq]).astype(np.float32)
    norm = float(np.linalg.norm(v))
    return uniq, (v / norm if norm else v)


def test_lexical_query_is_bit_identical_to_np_unique(clinc: tuple[RouteClassifier, list[str]]) -> None:
    clf, texts = clinc
    assert clf.lexical is not None
    for t in texts:
        ids, vals = clf.lexical.query(t)
        ref_ids, ref_vals = _query_reference(clf.lexical, t)
        assert ids.dtype == ref_ids.dtype and vals.dtype == ref_vals.dtype == np.float32
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(vals, ref_vals)


def test_sublinear_tf_table_is_np_log_of_the_counts_and_grows_for_long_prompts() -> None:
    counts = np.arange(1, 5000, dtype=np.int64)
    np.testing.assert_array_equal(_sublinear_tf(5000)[1:], np.log(counts) + 1.0)
    index = LexicalIndex(["check my savings account balance", "book a flight to paris"])
    initial = len(index._tf)
    text = "check my savings account balance please " * 200  # more known features than the initial table
    assert len(index._feature_ids(text)) >= initial
    ids, vals = index.query(text)
    ref_ids, ref_vals = _query_reference(index, text)
    assert len(index._tf) > initial
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(vals, ref_vals)


def test_static_vector_and_linear_head_are_bit_identical_to_the_plain_formulas(
    clinc: tuple[RouteClassifier, list[str]],
) -> None:
    clf, texts = clinc
    enc, head, lex = clf.encoder, clf.linear, clf.lexical
    assert isinstance(enc, StaticEncoder) and isinstance(head, LinearHead) and lex is not None
    for t in texts:
        idx = np.array(enc.token_ids(t), dtype=np.intp)
        dense = enc.encode_one(t)
        if len(idx):
            v = enc.weights[idx] @ enc.table[idx]
            n = float(np.linalg.norm(v))
            ref = (v / n).astype(np.float32) if n > 0 else v.astype(np.float32)
        else:
            ref = np.zeros(enc.dim, dtype=np.float32)
        assert dense.dtype == np.float32
        np.testing.assert_array_equal(dense, ref)
        ids, vals = lex.query(t)
        z = head.bias + dense @ head.w_dense
        if len(ids):
            z = z + vals @ head.w_lexical[ids]
        np.testing.assert_array_equal(head.probabilities(dense, ids, vals), softmax(z))


def _clf(routes: list[dict[str, Any]], **classifier: Any) -> RouteClassifier:
    tiers = [{"name": "slm", "kind": "local", "baseURL": "http://127.0.0.1:1/v1", "model": "tiny"},
             {"name": "gpt", "kind": "cloud", "baseURL": "https://api.example.com/v1/", "model": "big"}]  # fmt: skip
    c = parse_config({"schemaVersion": 1, "tiers": tiers, "defaultTier": "gpt", "routes": routes,
                      "classifier": {"encoder": {"kind": "lexical"}, **classifier}})  # fmt: skip
    return RouteClassifier(c, load_encoder(EncoderSpec(kind="lexical")))  # type: ignore[arg-type]


def test_classify_without_token_limits_matches_the_limited_branch_ties_included() -> None:
    same = ["what is my account balance", "transfer money to savings"]
    routes = [
        {"name": "weather", "tier": "slm", "examples": ["will it rain tomorrow", "what is the forecast"]},
        {"name": "bank-a", "tier": "slm", "examples": same},
        {"name": "bank-b", "tier": "slm", "examples": same},  # scores exactly like bank-a
    ]
    plain = _clf(routes, defaultThreshold=0.1)
    limited = _clf([dict(r, maxInputTokens=10_000) for r in routes], defaultThreshold=0.1)
    assert not plain._any_limit and limited._any_limit
    tie = plain.classify("what is my savings account balance", 10)
    # Tied scores: the candidate is the later route, the reported best route the first (the original order).
    assert (tie.route, tie.best_route, tie.score) == ("bank-b", "bank-a", tie.best_score)
    for text in ["what is my savings account balance", "will it rain tomorrow in paris", "tell me a joke", ""]:
        assert plain.classify(text, 10) == limited.classify(text, 10)
        assert plain.scores(text) == limited.scores(text)
