"""Route classification: per-route thresholds and keywords over one of two scorers.

- ``linear`` (the default with the ``builtin`` static encoder): a multinomial logistic regression trained at
  config load on the policy's examples (one class per route, plus the out-of-scope examples as their own class),
  over the static sentence vector concatenated with the lexical TF-IDF vector. A route's score is its softmax
  probability. Per request: one tokenization, a gather, a 256x(R+1) product and a sparse lexical product.
- ``knn`` (other encoders): nearest route examples in the embedding space, described below.

kNN: a route's score for a prompt is the mean of its k most similar examples (k=3; 1-NN is noisier, centroids blur
routes made of several intents — measured in docs/router.md). Similarity blends the encoder's cosine with a
small lexical (word + character n-gram TF-IDF) cosine, which rescues rare domain words the encoder maps poorly.
A prompt goes to the best route only if the score passes that route's threshold and the prompt is not closer to
the policy's out-of-scope examples; otherwise to the default tier.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .calibrate import (
    FALLBACK_THRESHOLD,
    Calibration,
    HeldOut,
    calibrate,
    folds,
    held_out_cached,
    with_unseen_topics,
)
from .config import ClassifierMethod, EncoderKind, RouterConfig
from .decision import Classification, Reason
from .encoders import Encoder
from .static_embed import cache_dir

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

TOP_K = 3
LEXICAL_WEIGHT = 0.1  # chosen on CLINC150 val (bench/router/encoder_comparison.json)
LEXICAL_MAX_CHARS = 1024  # n-gram features of a long prompt's head are enough to add lexical evidence
WORD_CACHE_SIZE = 100_000  # per index: a word's known feature ids (bounded; words past it are computed each time)
_WORD = re.compile(r"[a-z0-9']+")
# For an ASCII (lower-cased) head, `_WORD.findall` is `translate(_NOT_WORD_TO_SPACE).split()`, at half the cost.
_NOT_WORD_TO_SPACE = str.maketrans({c: " " for c in map(chr, range(128)) if not _WORD.fullmatch(c)})


# Words longer than this are not cached: real words are short, and a cache entry grows with the word (its
# n-grams), so a client sending endless unique long "words" must not grow the router's memory.
MAX_CACHED_WORD = 40


def _word_features_uncached(word: str) -> tuple[str, ...]:
    padded = f" {word} "
    grams = ["c:" + padded[i : i + n] for n in (3, 4, 5) for i in range(max(1, len(padded) - n + 1))]
    return ("w:" + word, *grams)


_word_features_cached = functools.lru_cache(maxsize=65536)(_word_features_uncached)


def _word_features(word: str) -> tuple[str, ...]:
    """A word's own features (the word and its character 3-5-grams), cached for words up to MAX_CACHED_WORD
    characters: words repeat within and across prompts, and this is most of the lexical cost of a long prompt."""
    return _word_features_cached(word) if len(word) <= MAX_CACHED_WORD else _word_features_uncached(word)


def _words(text: str) -> list[str]:
    """The lower-cased words of the text's head, in order."""
    head = text[:LEXICAL_MAX_CHARS].lower()
    return head.translate(_NOT_WORD_TO_SPACE).split() if head.isascii() else _WORD.findall(head)


def _features(text: str) -> list[str]:
    words = _words(text)
    feats = [f for w in words for f in _word_features(w)]
    feats += ["b:" + a + " " + b for a, b in itertools.pairwise(words)]
    return feats


def _packed(ids: list[int]) -> bytes:
    return np.array(ids, dtype=np.int64).tobytes()


def _sublinear_tf(size: int) -> F64:
    """1 + log(c) for every count c < size (index 0 unused), from the same float64 `np.log` of int64 counts the
    weights are defined by: per request a look-up, not a log and an addition over the prompt's counts."""
    table = np.zeros(size, dtype=np.float64)
    np.log(np.arange(1, size, dtype=np.int64), out=table[1:])
    table[1:] += 1.0
    return table


class LexicalIndex:
    """Sublinear TF-IDF over word, word-bigram and character 3-5-gram features of the examples.

    Stored as posting lists (feature -> examples, weights): a query touches only its own few hundred features,
    so scoring costs microseconds and memory stays proportional to the examples' features, not vocab x examples.
    """

    def __init__(self, docs: Sequence[str], features: Callable[[str], list[str]] | None = None) -> None:
        self.features = features  # None: the word/bigram/char-gram features above, with a per-word cache
        counted = [Counter((features or _features)(d)) for d in docs]
        df = Counter(f for c in counted for f in c)
        self.vocab = {f: i for i, f in enumerate(df)}
        self.size = len(docs)
        n = len(docs)
        self.idf = np.array([math.log((1 + n) / (1 + df[f])) + 1.0 for f in df], dtype=np.float32)
        self._idf64 = self.idf.astype(np.float64)  # what the float64 weights multiply by, converted once
        self._tf = _sublinear_tf(1024)  # grown when a prompt has more features (a count never exceeds their number)
        postings: list[list[tuple[int, float]]] = [[] for _ in self.vocab]
        for row, counts in enumerate(counted):
            weights = {self.vocab[f]: (1.0 + math.log(c)) * float(self.idf[self.vocab[f]]) for f, c in counts.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for j, w in weights.items():
                postings[j].append((row, w / norm))
        self.post_rows = [np.array([r for r, _ in p], dtype=np.int64) for p in postings]
        self.post_vals = [np.array([v for _, v in p], dtype=np.float32) for p in postings]
        # Per word, its known feature ids; per word pair, its bigram's id; both as packed int64 bytes, so that a
        # prompt's ids are one `bytes.join` and one `np.frombuffer` rather than ~1,300 Python ints converted.
        self._word_ids: dict[str, bytes] = {}
        self._bigram_ids: dict[str, dict[str, bytes]] = {}  # first word -> second word -> id
        for f, j in self.vocab.items():
            if f.startswith("b:"):
                first, second = f[2:].split(" ", 1)
                self._bigram_ids.setdefault(first, {})[second] = _packed([j])

    def _feature_ids(self, text: str) -> I64:
        """Vocabulary ids of `text`'s known features, repeated as often as they occur (in no particular order)."""
        vocab = self.vocab
        if self.features is not None:
            return np.array([j for f in self.features(text) if (j := vocab.get(f)) is not None], dtype=np.int64)
        parts: list[bytes] = []
        cache = self._word_ids
        bigrams = self._bigram_ids
        after: dict[str, bytes] | None = None  # the bigrams that start with the previous word
        for w in _words(text):
            known = cache.get(w)
            if known is None:
                known = _packed([j for f in _word_features(w) if (j := vocab.get(f)) is not None])
                if len(cache) < WORD_CACHE_SIZE and len(w) <= MAX_CACHED_WORD:
                    cache[w] = known
            parts.append(known)
            if after is not None and (bigram := after.get(w)) is not None:
                parts.append(bigram)
            after = bigrams.get(w)
        return np.frombuffer(b"".join(parts), dtype=np.int64)

    def query(self, text: str) -> tuple[I64, F32]:
        """Known feature ids of `text` (sorted, unique) and their normalised sublinear TF-IDF weights."""
        ids = self._feature_ids(text)
        n = len(ids)
        if not n:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        # np.unique(ids, return_counts=True) and np.linalg.norm, without their per-call Python overhead (most of a
        # short prompt's cost): the same sort, run boundaries and arithmetic, so the same ids, counts and float32s.
        # (`take` is indexing without the fancy-indexing machinery: the same elements, a third of the cost.)
        ordered = ids.copy()  # `ids` may be a read-only view of the packed bytes
        ordered.sort()
        starts = np.empty(n + 1, dtype=np.bool_)  # run starts, plus the end
        starts[0] = starts[n] = True
        np.not_equal(ordered[1:], ordered[:-1], out=starts[1:n])
        bounds = starts.nonzero()[0]
        uniq = ordered.take(bounds[:-1])
        if n >= len(self._tf):
            self._tf = _sublinear_tf(2 * n)
        v64 = self._tf.take(bounds[1:] - bounds[:-1])  # sublinear tf: 1 + log(count), in float64
        v64 *= self._idf64.take(uniq)
        v = v64.astype(np.float32)
        norm = math.sqrt(v.dot(v))  # np.linalg.norm's arithmetic; see static_embed.StaticEncoder._vector
        if norm:
            v /= norm
        return uniq, v

    def similarities(self, text: str) -> F32:
        """Cosine similarity of `text` to every indexed document."""
        ids, vals = self.query(text)
        if not len(ids):
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


# Linear head hyperparameters, chosen on CLINC150 val/oos_val (bench/router/encoder_comparison.json).
LINEAR_STEPS = 100
LINEAR_LR = 0.05
LINEAR_L2 = 1e-4
# Targets (1 - s) on the true class and s/C spread over all C: softer, better-calibrated probabilities, so the
# threshold that rejects out-of-scope prompts costs fewer in-scope ones (val: +1.3 points at 85 % and 90 % of
# oos_val to the default tier; 0.05/0.1/0.2/0.3 tried, docs/router.md).
LINEAR_LABEL_SMOOTHING = 0.1
CALIBRATION_FOLDS = 5  # auto thresholds: the linear head is retrained this many times at load (calibrate.py)
UNSEEN_TOPIC_GROUPS = 10  # ... plus at most this many times, each without a group of routes
LINEAR_MIN_NEGATIVES = 20  # `auto` picks the linear head only with this many examples of the default tier


@dataclass(frozen=True)
class SparseRows:
    """A CSR-like batch of sparse rows (the lexical TF-IDF vectors of the training examples)."""

    rows: I64  # row of each non-zero, non-decreasing
    cols: I64
    vals: F32
    n_rows: int
    n_cols: int

    @classmethod
    def from_index(cls, index: LexicalIndex, docs: Sequence[str]) -> SparseRows:
        rows: list[I64] = []
        cols: list[I64] = []
        vals: list[F32] = []
        for r, doc in enumerate(docs):
            ids, v = index.query(doc)
            rows.append(np.full(len(ids), r, dtype=np.int64))
            cols.append(np.array(ids, dtype=np.int64))
            vals.append(v.astype(np.float32))
        cat = np.concatenate
        return cls(cat(rows) if rows else np.zeros(0, np.int64), cat(cols) if cols else np.zeros(0, np.int64),
                   cat(vals) if vals else np.zeros(0, np.float32), len(docs), len(index.vocab))  # fmt: skip

    @functools.cached_property
    def _runs(self) -> tuple[I64, I64]:
        """Where each row's non-zeros start, and which row that is (computed once: training calls matmul 200
        times per head)."""
        starts = np.flatnonzero(np.r_[True, self.rows[1:] != self.rows[:-1]])
        return starts, self.rows[starts]

    def matmul(self, w: F32) -> F32:
        """self @ w, for w [n_cols, C]."""
        out = np.zeros((self.n_rows, w.shape[1]), dtype=np.float32)
        if self.rows.size:
            contrib = w.take(self.cols, axis=0)
            contrib *= self.vals[:, None]
            starts, rows = self._runs
            out[rows] = np.add.reduceat(contrib, starts, axis=0)
        return out

    def select(self, keep: npt.NDArray[np.bool_]) -> SparseRows:
        """The rows where `keep` is true, renumbered in order (for cross-validation folds)."""
        new_row = np.cumsum(keep) - 1
        nz = keep[self.rows]
        return SparseRows(new_row[self.rows[nz]], self.cols[nz], self.vals[nz], int(keep.sum()), self.n_cols)

    def transposed(self) -> SparseRows:
        """The transpose, with its non-zeros sorted by (new) row: for `self.T @ g` via `matmul`."""
        order = np.argsort(self.cols, kind="stable")
        return SparseRows(self.cols[order], self.rows[order], self.vals[order], self.n_cols, self.n_rows)


def softmax(z: F32) -> F32:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


class LinearHead:
    """Multinomial logistic regression over [dense sentence vector ⊕ sparse lexical TF-IDF], trained with Adam
    (full batch, zero init: deterministic) at config load. Both parts are unit-norm, so they weigh alike."""

    def __init__(self, dense: F32, lexical: SparseRows, labels: I64, n_classes: int,
                 steps: int = LINEAR_STEPS, lr: float = LINEAR_LR, l2: float = LINEAR_L2,
                 label_smoothing: float = LINEAR_LABEL_SMOOTHING) -> None:  # fmt: skip
        n = dense.shape[0]
        y = np.eye(n_classes, dtype=np.float32)[labels] * (1.0 - label_smoothing) + label_smoothing / n_classes
        params = [
            np.zeros((dense.shape[1], n_classes), np.float32),
            np.zeros((lexical.n_cols, n_classes), np.float32),
            np.zeros(n_classes, np.float32),
        ]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        lexical_t = lexical.transposed()
        for t in range(1, steps + 1):
            wd, wl, b = params
            g = (softmax(dense @ wd + lexical.matmul(wl) + b) - y) / n
            grads = [dense.T @ g + l2 * wd, lexical_t.matmul(g) + l2 * wl, g.sum(axis=0)]
            for i, (p, gr) in enumerate(zip(params, grads, strict=True)):
                m[i] = 0.9 * m[i] + 0.1 * gr
                v[i] = 0.999 * v[i] + 0.001 * gr * gr
                p -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
        self.w_dense, self.w_lexical, self.bias = params

    def batch_probabilities(self, dense: F32, lexical: SparseRows) -> F32:
        """Class probabilities for many prompts at once (offline: calibration, bench)."""
        return softmax(dense @ self.w_dense + lexical.matmul(self.w_lexical) + self.bias)

    def probabilities(self, dense: F32, lex_ids: I64, lex_vals: F32) -> F32:
        """Class probabilities for one prompt (1-D): the arithmetic of `softmax(bias + dense @ w_dense + lex @
        w_lexical)`, in place on the one fresh logits array."""
        z = dense @ self.w_dense
        z += self.bias
        if len(lex_ids):
            z += lex_vals @ self.w_lexical.take(lex_ids, axis=0)
        z -= np.maximum.reduce(z)  # z.max() and z.sum() without their Python-level wrappers
        np.exp(z, out=z)
        z /= np.add.reduce(z)
        return z if z.dtype == np.float32 else z.astype(np.float32)


@dataclass(frozen=True)
class RouteScores:
    """Per-route scores and the out-of-scope score for one prompt (for explain and eval).

    knn: top-k mean similarities; linear: softmax probabilities (default: the out-of-scope class's, -1 if none).
    """

    routes: dict[str, float]
    default: float


def classifier_inputs_digest(config: RouterConfig) -> str:
    """What a RouteClassifier is built from: the routes, the classifier settings and the default tier (routes on
    it are the out-of-scope examples). Nothing else in the config changes its answers."""
    inputs = {
        "routes": [r.model_dump(mode="json") for r in config.routes],
        "classifier": config.classifier.model_dump(mode="json"),
        "default_tier": config.default_tier,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def encoder_fingerprint(encoder: Encoder) -> str:
    """Which vectors the encoder gives (its spec names a kind, not the weights behind it): a digest of one fixed
    sentence's embedding."""
    probe = encoder.encode(["tiered calibration probe: does this encoder give the same vectors?"])
    digest = hashlib.sha256(np.ascontiguousarray(probe).tobytes()).hexdigest()[:16]
    return f"{type(encoder).__name__}:{encoder.dim}:{digest}"


class RouteClassifier:
    """Built once per config (encodes the examples), then answers per request with no further allocation."""

    def __init__(self, config: RouterConfig, encoder: Encoder, lexical_weight: float = LEXICAL_WEIGHT) -> None:
        self.encoder = encoder
        self.lexical_weight = 1.0 if encoder.dim == 0 else lexical_weight
        self.routes = list(config.routes)
        self._names = [r.name for r in self.routes]
        self._limits = [r.max_input_tokens for r in self.routes]
        self._any_limit = any(limit is not None for limit in self._limits)
        self.keywords = [
            re.compile(r"\b(?:" + "|".join(re.escape(k.lower()) for k in r.keywords) + r")\b") if r.keywords else None
            for r in self.routes
        ]
        self._keyword_routes = [(r, kw) for r, kw in zip(self.routes, self.keywords, strict=True) if kw is not None]
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
        self.method = resolve_method(config)
        self.linear: LinearHead | None = None
        self.has_default_class = bool(default_examples)
        if self.method is ClassifierMethod.LINEAR and all_docs:
            self.lexical: LexicalIndex | None = LexicalIndex(all_docs)
            classes = np.where(self.labels < 0, self.n_routes, self.labels)
            self._lexical_rows: SparseRows | None = SparseRows.from_index(self.lexical, all_docs)
            self.linear = LinearHead(
                self.vectors, self._lexical_rows, classes, self.n_routes + int(self.has_default_class)
            )
        else:
            self.lexical = LexicalIndex(all_docs) if all_docs and lexical_weight > 0 else None
            self._lexical_rows = None
        self.masks = [self.labels == i for i in range(self.n_routes)]
        self.default_mask = self.labels == -1
        self._route_to_default = np.array([r.tier == config.default_tier for r in self.routes], dtype=np.bool_)
        # Thresholds: a route's own, else the policy's number, else (auto) one derived from the held-out examples.
        default = config.classifier.default_threshold
        needs_auto = default == "auto" and any(r.threshold is None for r in self.routes)
        self.calibration: Calibration | None = None
        if needs_auto:
            digest = f"{classifier_inputs_digest(config)}|{encoder_fingerprint(encoder)}"
            held = held_out_cached(digest, cache_dir(), self.held_out)
            self.calibration = calibrate(held, config.classifier.target_out_of_scope_rate, 0.0, 1.0)
        fallback = self.calibration.threshold if self.calibration is not None else default
        self.thresholds = [
            r.threshold if r.threshold is not None else float(fallback if fallback != "auto" else FALLBACK_THRESHOLD)
            for r in self.routes
        ]
        self.threshold_sources = [
            "route" if r.threshold is not None else ("auto" if default == "auto" else "policy") for r in self.routes
        ]
        encode_one = getattr(encoder, "encode_one", None)
        self._encode_one = encode_one if callable(encode_one) else (lambda text: encoder.encode([text])[0])

    def held_out(self) -> HeldOut:
        """Every example scored by a classifier that has not seen it (see calibrate.py): K-fold retraining of the
        linear head, leave-one-out for knn."""
        n = self.labels.shape[0]
        scores = np.zeros((n, self.n_routes), dtype=np.float32)
        default = np.full(n, -1.0, dtype=np.float32)
        if n == 0:
            return HeldOut(scores, default, self.labels, self._route_to_default)
        if self.linear is not None:
            assert self._lexical_rows is not None
            classes = np.where(self.labels < 0, self.n_routes, self.labels)
            n_classes = self.n_routes + int(self.has_default_class)
            rows = self._lexical_rows

            def score_without(test: npt.NDArray[np.bool_]) -> tuple[F32, F32]:
                head = LinearHead(self.vectors[~test], rows.select(~test), classes[~test], n_classes)
                p = head.batch_probabilities(self.vectors[test], rows.select(test))
                d = p[:, self.n_routes] if self.has_default_class else np.full(int(test.sum()), -1.0, np.float32)
                return p[:, : self.n_routes], d

            fold = folds(self.labels, CALIBRATION_FOLDS)
            for f in range(CALIBRATION_FOLDS):
                test = fold == f
                if test.any() and not test.all():
                    scores[test], default[test] = score_without(test)
            return self._with_unseen_topics(HeldOut(scores, default, self.labels, self._route_to_default),
                                            score_without)  # fmt: skip
        sims = np.zeros((n, n), dtype=np.float32)
        if self.lexical_weight < 1.0:
            sims += (1.0 - self.lexical_weight) * (self.vectors @ self.vectors.T)
        if self.lexical is not None:
            sims += self.lexical_weight * self.lexical.matrix @ self.lexical.matrix.T
        np.fill_diagonal(sims, -np.inf)  # leave one out

        def top_mean(mask: npt.NDArray[np.bool_]) -> F32:
            k = min(TOP_K, int(mask.sum()))
            if k == 0:
                return np.zeros(n, dtype=np.float32)
            part = np.sort(sims[:, mask], axis=1)[:, -k:]
            finite = np.isfinite(part)  # an example's own column, when its group has <= k members
            return (np.where(finite, part, 0.0).sum(1) / np.maximum(finite.sum(1), 1)).astype(np.float32)

        for i, mask in enumerate(self.masks):
            scores[:, i] = top_mean(mask)
        if self.default_mask.any():
            default = top_mean(self.default_mask)

        def knn_without(test: npt.NDArray[np.bool_]) -> tuple[F32, F32]:
            return scores[test], default[test]  # other routes' top-k never include the example itself

        return self._with_unseen_topics(HeldOut(scores, default, self.labels, self._route_to_default), knn_without)

    def _with_unseen_topics(
        self, held: HeldOut, score_without: Callable[[npt.NDArray[np.bool_]], tuple[F32, F32]]
    ) -> HeldOut:
        """`held` plus every in-scope example scored by a classifier trained without its route (at most
        UNSEEN_TOPIC_GROUPS trainings: routes are left out in that many groups), its group's columns set to -1."""
        in_scope = [i for i in range(self.n_routes) if not self._route_to_default[i] and self.masks[i].any()]
        if len(in_scope) < 2:
            return held  # leaving the only route out leaves nothing to mistake its examples for
        groups = [in_scope[g::UNSEEN_TOPIC_GROUPS] for g in range(min(UNSEEN_TOPIC_GROUPS, len(in_scope)))]
        parts: list[tuple[F32, F32, I64]] = []
        for group in groups:
            test = np.isin(self.labels, group)
            sc, d = score_without(test)
            sc = sc.copy()
            sc[:, group] = -1.0
            parts.append((sc, d, self.labels[test]))
        return with_unseen_topics(
            held,
            np.concatenate([p[0] for p in parts]).astype(np.float32),
            np.concatenate([p[1] for p in parts]).astype(np.float32),
            np.concatenate([p[2] for p in parts]),
        )

    def scores(self, text: str) -> RouteScores:
        """Per-route scores and the out-of-scope score: softmax probabilities (linear head) or top-k mean
        similarities to the route's and to the out-of-scope examples (knn)."""
        values, default = self._score_values(text)
        return RouteScores(dict(zip(self._names, values, strict=True)), default)

    def _score_values(self, text: str) -> tuple[list[float], float]:
        """`scores` as a list in route order (the per-request path: no dict)."""
        if self.labels.shape[0] == 0:
            return [0.0] * self.n_routes, 0.0
        if self.linear is not None:
            assert self.lexical is not None
            ids, vals = self.lexical.query(text)
            p = self.linear.probabilities(self._encode_one(text), ids, vals).tolist()
            return p[: self.n_routes], (p[self.n_routes] if self.has_default_class else -1.0)
        sims = np.zeros(self.labels.shape[0], dtype=np.float32)
        if self.lexical_weight < 1.0:
            sims += (1.0 - self.lexical_weight) * (self.vectors @ self._encode_one(text))
        if self.lexical is not None:
            sims += self.lexical_weight * self.lexical.similarities(text)
        per_route: list[float] = []
        for mask in self.masks:
            s = sims[mask]
            k = min(TOP_K, s.shape[0])
            per_route.append(float(np.partition(s, -k)[-k:].mean()) if k else 0.0)
        d = sims[self.default_mask]
        kd = min(TOP_K, d.shape[0])
        default = float(np.partition(d, -kd)[-kd:].mean()) if kd else -1.0
        return per_route, default

    def classify(self, text: str, input_tokens: int) -> Classification:
        """The route for `text`, or None (default tier) with the reason."""
        if self._keyword_routes:
            lowered = text.lower()
            for route, kw in self._keyword_routes:
                if kw.search(lowered) and _fits(route.max_input_tokens, input_tokens):
                    return Classification(route.name, 1.0, route.name, 1.0, Reason.KEYWORD_MATCHED)
        if not self.routes:
            return Classification(None, 0.0, None, 0.0, Reason.NO_ROUTE_MATCHED)
        values, default = self._score_values(text)
        best_score = max(values)
        best_name = self._names[values.index(best_score)]  # the first best route
        # The candidate: the best (score, index) among the routes that fit the prompt - ties go to the later route.
        if self._any_limit:
            fitting = [(s, i) for i, s in enumerate(values) if _fits(self._limits[i], input_tokens)]
            if not fitting:
                return Classification(None, best_score, best_name, best_score, Reason.NO_ROUTE_MATCHED)
            score, i = max(fitting)
        else:
            i = len(values) - 1 - values[::-1].index(best_score)  # the last best route
            score = values[i]
        if score >= self.thresholds[i] and score > default:
            return Classification(self.routes[i].name, score, best_name, best_score, Reason.ROUTE_MATCHED)
        return Classification(None, score, best_name, best_score, Reason.NO_ROUTE_MATCHED)


def resolve_method(config: RouterConfig) -> ClassifierMethod:
    """`auto`: the linear head for the builtin static encoder when the policy has at least LINEAR_MIN_NEGATIVES
    examples of what goes to the default tier (classifier.defaultExamples plus the examples of routes on the
    default tier); nearest examples otherwise.

    A softmax over the routes alone has no way to say "none of these" (two routes: every prompt scores ~0.5-1),
    and a handful of examples cannot teach it, so without enough such examples similarity thresholds (knn) are
    the safer reading of a policy.
    """
    method = config.classifier.method
    if method is not ClassifierMethod.AUTO:
        return method
    negatives = len(config.classifier.default_examples) + sum(
        len(r.examples) for r in config.routes if r.tier == config.default_tier
    )
    builtin = config.classifier.encoder.kind is EncoderKind.BUILTIN
    return ClassifierMethod.LINEAR if builtin and negatives >= LINEAR_MIN_NEGATIVES else ClassifierMethod.KNN


def _fits(limit: int | None, tokens: int) -> bool:
    return limit is None or tokens <= limit
