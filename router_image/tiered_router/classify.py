"""Route classification: nearest route examples in an embedding space, per-route thresholds, keywords.

A route's score for a prompt is the mean of its k most similar examples (k=3; 1-NN is noisier, centroids blur
routes made of several intents — measured in docs/router.md). Similarity blends the encoder's cosine with a
small lexical (word + character n-gram TF-IDF) cosine, which rescues rare domain words the encoder maps poorly.
A prompt goes to the best route only if the score passes that route's threshold and the prompt is not closer to
the policy's out-of-scope examples; otherwise to the default tier.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .config import RouterConfig
from .decision import Classification, Reason
from .encoders import Encoder

F32 = npt.NDArray[np.float32]

TOP_K = 3
LEXICAL_WEIGHT = 0.1  # chosen on CLINC150 val (bench/router/encoder_comparison.json)
LEXICAL_MAX_CHARS = 1024  # n-gram features of a long prompt's head are enough to add lexical evidence
_WORD = re.compile(r"[a-z0-9']+")


def _features(text: str) -> list[str]:
    words = _WORD.findall(text[:LEXICAL_MAX_CHARS].lower())
    feats = ["w:" + w for w in words]
    feats += ["b:" + a + " " + b for a, b in itertools.pairwise(words)]
    for w in words:
        padded = f" {w} "
        for n in (3, 4, 5):
            feats += ["c:" + padded[i : i + n] for i in range(max(1, len(padded) - n + 1))]
    return feats


class LexicalIndex:
    """Sublinear TF-IDF over word, word-bigram and character 3-5-gram features of the examples.

    Stored as posting lists (feature -> examples, weights): a query touches only its own few hundred features,
    so scoring costs microseconds and memory stays proportional to the examples' features, not vocab x examples.
    """

    def __init__(self, docs: Sequence[str]) -> None:
        counted = [Counter(_features(d)) for d in docs]
        df = Counter(f for c in counted for f in c)
        self.vocab = {f: i for i, f in enumerate(df)}
        self.size = len(docs)
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[f])) + 1.0 for f in df], dtype=np.float32)
        postings: list[list[tuple[int, float]]] = [[] for _ in self.vocab]
        for row, counts in enumerate(counted):
            weights = {self.vocab[f]: (1.0 + math.log(c)) * float(self.idf[self.vocab[f]]) for f, c in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for j, w in weights.items():
                postings[j].append((row, w / norm))
        self.post_rows = [np.array([r for r, _ in p], dtype=np.int64) for p in postings]
        self.post_vals = [np.array([v for _, v in p], dtype=np.float32) for p in postings]

    def query(self, text: str) -> tuple[list[int], F32]:
        """Known feature ids of `text` and their normalised TF-IDF weights."""
        ids: list[int] = []
        vals: list[float] = []
        for feat, count in Counter(_features(text)).items():
            j = self.vocab.get(feat)
            if j is not None:
                ids.append(j)
                vals.append((1.0 + math.log(count)) * float(self.idf[j]))
        v = np.array(vals, dtype=np.float32)
        norm = float(np.linalg.norm(v)) if vals else 0.0
        return ids, (v / norm if norm else v)

    def similarities(self, text: str) -> F32:
        """Cosine similarity of `text` to every indexed document."""
        ids, vals = self.query(text)
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        rows = np.concatenate([self.post_rows[j] for j in ids])
        weights = np.concatenate([self.post_vals[j] * w for j, w in zip(ids, vals, strict=True)])
        return np.bincount(rows, weights=weights, minlength=self.size).astype(np.float32)

    def transform(self, docs: Sequence[str]) -> F32:
        """Dense TF-IDF rows over the index's vocabulary (offline use: bench, eval of many texts)."""
        out = np.zeros((len(docs), len(self.vocab)), dtype=np.float32)
        for row, doc in enumerate(docs):
            ids, vals = self.query(doc)
            out[row, ids] = vals
        return out

    @property
    def matrix(self) -> F32:
        """The indexed documents as dense rows (offline use only; the router scores with posting lists)."""
        out = np.zeros((self.size, len(self.vocab)), dtype=np.float32)
        for j, (rows, vals) in enumerate(zip(self.post_rows, self.post_vals, strict=True)):
            out[rows, j] = vals
        return out


@dataclass(frozen=True)
class RouteScores:
    """Per-route scores and the out-of-scope score for one prompt (for explain and eval)."""

    routes: dict[str, float]
    default: float


class RouteClassifier:
    """Built once per config (encodes the examples), then answers per request with no further allocation."""

    def __init__(self, config: RouterConfig, encoder: Encoder, lexical_weight: float = LEXICAL_WEIGHT) -> None:
        self.encoder = encoder
        self.lexical_weight = 1.0 if encoder.dim == 0 else lexical_weight
        self.routes = list(config.routes)
        self.thresholds = [
            r.threshold if r.threshold is not None else config.classifier.default_threshold for r in self.routes
        ]
        self.keywords = [
            re.compile(r"\b(?:" + "|".join(re.escape(k.lower()) for k in r.keywords) + r")\b") if r.keywords else None
            for r in self.routes
        ]
        examples: list[str] = []
        labels: list[int] = []
        for i, route in enumerate(self.routes):
            examples += route.examples
            labels += [i] * len(route.examples)
        self.n_routes = len(self.routes)
        default_examples = list(config.classifier.default_examples)
        all_docs = examples + default_examples
        self.labels = np.array(labels + [-1] * len(default_examples), dtype=np.int64)
        self.vectors: F32 = encoder.encode(all_docs) if all_docs else np.zeros((0, encoder.dim), np.float32)
        self.lexical = LexicalIndex(all_docs) if all_docs and lexical_weight > 0 else None
        self.masks = [self.labels == i for i in range(self.n_routes)]
        self.default_mask = self.labels == -1

    def scores(self, text: str) -> RouteScores:
        """Top-k mean similarity per route and to the out-of-scope examples."""
        if self.labels.shape[0] == 0:
            return RouteScores({r.name: 0.0 for r in self.routes}, 0.0)
        sims = np.zeros(self.labels.shape[0], dtype=np.float32)
        if self.lexical_weight < 1.0:
            sims += (1.0 - self.lexical_weight) * (self.vectors @ self.encoder.encode([text])[0])
        if self.lexical is not None:
            sims += self.lexical_weight * self.lexical.similarities(text)
        per_route: dict[str, float] = {}
        for route, mask in zip(self.routes, self.masks, strict=True):
            s = sims[mask]
            k = min(TOP_K, s.shape[0])
            per_route[route.name] = float(np.partition(s, -k)[-k:].mean()) if k else 0.0
        d = sims[self.default_mask]
        kd = min(TOP_K, d.shape[0])
        default = float(np.partition(d, -kd)[-kd:].mean()) if kd else -1.0
        return RouteScores(per_route, default)

    def classify(self, text: str, input_tokens: int) -> Classification:
        """The route for `text`, or None (default tier) with the reason."""
        lowered = text.lower()
        for route, kw in zip(self.routes, self.keywords, strict=True):
            if kw is not None and kw.search(lowered) and _fits(route.max_input_tokens, input_tokens):
                return Classification(route.name, 1.0, route.name, 1.0, Reason.KEYWORD_MATCHED)
        if not self.routes:
            return Classification(None, 0.0, None, 0.0, Reason.NO_ROUTE_MATCHED)
        sc = self.scores(text)
        ranked = sorted(
            ((s, i) for i, s in enumerate(sc.routes.values()) if _fits(self.routes[i].max_input_tokens, input_tokens)),
            reverse=True,
        )
        best_name = max(sc.routes, key=lambda n: sc.routes[n])
        best_score = sc.routes[best_name]
        if not ranked:
            return Classification(None, best_score, best_name, best_score, Reason.NO_ROUTE_MATCHED)
        score, i = ranked[0]
        if score >= self.thresholds[i] and score > sc.default:
            return Classification(self.routes[i].name, score, best_name, best_score, Reason.ROUTE_MATCHED)
        return Classification(None, score, best_name, best_score, Reason.NO_ROUTE_MATCHED)


def _fits(limit: int | None, tokens: int) -> bool:
    return limit is None or tokens <= limit
