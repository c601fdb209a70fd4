"""Thresholds derived from the policy itself (`classifier.threshold: auto`, the default).

A route's score is only useful with a threshold under which the request goes to the default tier, and the right
threshold depends on the encoder, the method and the examples: a fixed 0.5 left 11 points of in-scope accuracy on
the table for a policy written from random train utterances. So the router derives it from the policy's own
examples at config load:

- Every example is scored by a classifier that has not seen it: leave-one-out for `knn` (the example's own
  similarity is masked), K-fold for the `linear` head (the head is trained K more times, each time without one
  fold: retraining it once per example would cost hundreds of trainings).
- Examples of routes on a non-default tier are *in scope*: right when their own route wins. Examples of routes on
  the default tier and `defaultExamples` are *out of scope*: right when the decision lands on the default tier.
- Out-of-scope traffic is mostly about topics no example covers, which held-out out-of-scope *examples* do not
  show (their siblings taught the classifier their topic): on CLINC150 a threshold that kept 85 % of them on the
  default tier kept only 66-79 % of the test's out-of-scope requests there. So the in-scope examples are scored a
  second time as *unseen topics*: route by route, by a classifier trained without that route (leave one route
  out); such an example is right when it lands on the default tier. These pseudo out-of-scope examples join the
  out-of-scope ones (measured on CLINC150 val and test: docs/router.md).
- Sweeping the threshold over the held-out scores gives the in-scope vs out-of-scope curve; the chosen point is
  the lowest threshold that sends at least `targetOutOfScopeRate` of the out-of-scope examples to the default tier
  (the lowest one keeps the most in-scope requests).

One threshold is derived for all routes that set none: with tens of out-of-scope examples spread over the routes,
per-route quantiles are too noisy to beat one shared operating point (measured in docs/router.md). A route's own
explicit threshold still wins. The unseen-topic rows alone can calibrate a policy with no out-of-scope examples (two
routes or more); with fewer than MIN_OUT_OF_SCOPE out-of-scope rows in all the rate cannot be estimated, the derived
threshold is then FALLBACK_THRESHOLD and `basis` says why.

Everything here is deterministic (fixed folds, deterministic training), so the same policy gives the same
thresholds wherever it is computed: the router at load, `tiered-router calibrate`, and `tiered explain`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

FALLBACK_THRESHOLD = 0.5  # the previous fixed default, used when the policy cannot be calibrated
MIN_OUT_OF_SCOPE = 10  # fewer out-of-scope rows (examples + unseen-topic rows) cannot estimate an 85 % rate
MIN_IN_SCOPE = 2
CURVE_POINTS = 21  # rows of the printed curve (every threshold is considered when choosing)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldOut:
    """Held-out scores of the policy's examples: `scores[i, r]` route r's score for example i (scored without
    it), `default[i]` the out-of-scope class's score (-1 when the policy has none), `label[i]` the example's
    route (-1: a defaultExamples utterance or an unseen-topic row), which routes lead to the default tier, and
    which rows are in-scope examples scored without their whole route (`unseen`: out of scope by construction)."""

    scores: F32
    default: F32
    label: I64
    route_to_default: B
    unseen: B | None = None


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    in_scope: float  # held-out in-scope examples routed to their own route
    out_of_scope: float  # held-out out-of-scope examples sent to the default tier


@dataclass(frozen=True)
class Calibration:
    """The derived threshold and how it was reached."""

    threshold: float
    target_out_of_scope: float
    basis: str  # "cross-validated" or why the fallback was used
    in_scope_examples: int
    out_of_scope_examples: int
    in_scope: float | None = None  # held-out rates at the chosen threshold
    out_of_scope: float | None = None  # over the out-of-scope and the unseen-topic rows together
    curve: list[CurvePoint] = field(default_factory=list)
    unseen_topic_examples: int = 0  # in-scope examples also scored without their route (out of scope then)

    @property
    def calibrated(self) -> bool:
        return self.basis == "cross-validated"

    def summary(self) -> dict[str, Any]:
        """JSON-ready, without the curve (explain, status)."""
        out: dict[str, Any] = {
            "threshold": round(self.threshold, 4),
            "targetOutOfScopeRate": self.target_out_of_scope,
            "basis": self.basis,
            "inScopeExamples": self.in_scope_examples,
            "outOfScopeExamples": self.out_of_scope_examples,
            "unseenTopicExamples": self.unseen_topic_examples,
        }
        if self.in_scope is not None and self.out_of_scope is not None:
            out["heldOutInScope"] = round(self.in_scope, 4)
            out["heldOutOutOfScope"] = round(self.out_of_scope, 4)
        return out


def outcomes(held: HeldOut, threshold: float) -> tuple[B, B]:
    """Per example at `threshold`: (routed to its own route, sent to the default tier) - the classifier's rule:
    the best route wins if its score passes the threshold and beats the out-of-scope class."""
    best = held.scores.argmax(axis=1)
    score = held.scores[np.arange(len(best)), best]
    routed = (score >= threshold) & (score > held.default)
    own = routed & (best == held.label)
    to_default = ~routed | held.route_to_default[best]
    return own, to_default


def _split(held: HeldOut) -> tuple[B, B]:
    out_of_scope = (held.label < 0) | held.route_to_default[np.maximum(held.label, 0)]
    if held.unseen is not None:
        out_of_scope |= held.unseen
    return ~out_of_scope, out_of_scope


def rates(held: HeldOut, threshold: float) -> tuple[float, float]:
    """(in-scope accuracy, out-of-scope rate to the default tier) of the held-out examples at `threshold`."""
    own, to_default = outcomes(held, threshold)
    ins, oos = _split(held)
    return float(own[ins].mean()) if ins.any() else 0.0, float(to_default[oos].mean()) if oos.any() else 0.0


def calibrate(
    held: HeldOut, target: float, lo: float, hi: float, min_out_of_scope: int = MIN_OUT_OF_SCOPE
) -> Calibration:
    """The lowest threshold in [lo, hi] whose held-out out-of-scope rate reaches `target`."""
    ins, oos = _split(held)
    n_in, n_oos = int(ins.sum()), int(oos.sum())
    n_unseen = int(held.unseen.sum()) if held.unseen is not None else 0
    if n_oos < min_out_of_scope or n_in < MIN_IN_SCOPE:
        why = (
            f"fallback: {n_oos - n_unseen} out-of-scope examples (routes on the default tier or defaultExamples) "
            f"and {n_unseen} in-scope examples scored without their route, at least {min_out_of_scope} needed"
            if n_oos < min_out_of_scope
            else f"fallback: {n_in} in-scope examples, at least {MIN_IN_SCOPE} needed"
        )
        return Calibration(FALLBACK_THRESHOLD, target, why, n_in, n_oos - n_unseen)
    best = held.scores.max(axis=1)
    # Candidate thresholds: just above each held-out best score (the lowest threshold that stops that example),
    # plus the ends; the rate to the default only grows with the threshold.
    above = np.nextafter(best.astype(np.float32), np.float32(np.inf))  # scores are float32: step in float32
    candidates = np.unique(np.clip(np.concatenate([above, [lo, hi]]), lo, hi))
    chosen = float(hi)
    for th in candidates:
        if rates(held, float(th))[1] >= target:
            chosen = float(th)
            break
    in_rate, oos_rate = rates(held, chosen)
    sweep = np.linspace(lo, hi, CURVE_POINTS)
    curve = [CurvePoint(round(float(t), 4), *rates(held, float(t))) for t in sorted({*sweep.tolist(), chosen})]
    return Calibration(chosen, target, "cross-validated", n_in, n_oos - n_unseen, in_rate, oos_rate, curve, n_unseen)


def folds(labels: I64, k: int) -> I64:
    """Fold of each example: round-robin within each label, so every fold holds a share of every route."""
    out = np.zeros(len(labels), dtype=np.int64)
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        out[idx] = np.arange(len(idx)) % k
    return out


def with_unseen_topics(held: HeldOut, scores: F32, default: F32, label: I64) -> HeldOut:
    """`held` plus rows of in-scope examples scored without their route (`label`: the route left out, whose own
    column the caller has set below any threshold), counted as out of scope."""
    unseen = np.concatenate([np.zeros(len(held.label), dtype=np.bool_), np.ones(len(label), dtype=np.bool_)])
    return HeldOut(
        np.concatenate([held.scores, scores]),
        np.concatenate([held.default, default]),
        np.concatenate([held.label, np.full(len(label), -1, dtype=np.int64)]),
        held.route_to_default,
        unseen,
    )


def _code_digest() -> str:
    """The held-out scores depend on this code and the classifier's: a change to either invalidates the cache."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("calibrate.py", "classify.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()


def held_out_cached(inputs_digest: str, cache: Path | None, compute: Callable[[], HeldOut]) -> HeldOut:
    """`compute()` (K+R trainings of the head: ~11 CPU-s on a 10-route, 825-example policy), remembered under
    `cache` keyed by the classifier's inputs, the encoder's fingerprint and this code, so a router restart, a test
    or `tiered-router calibrate` on the same policy reads the scores back. Deterministic either way: a hit returns
    exactly what `compute()` returned. A read-only or missing cache (the router image's root filesystem) only
    costs the computation."""
    if cache is None:
        return compute()
    key = hashlib.sha256(f"{inputs_digest}|{_code_digest()}".encode()).hexdigest()[:32]
    path = cache / "calibration" / f"{key}.npz"
    try:
        with np.load(path) as data:
            unseen = data["unseen"] if "unseen" in data.files else None
            return HeldOut(data["scores"], data["default"], data["label"], data["route_to_default"], unseen)
    except (OSError, KeyError, ValueError):
        pass
    held = compute()
    arrays = {"scores": held.scores, "default": held.default, "label": held.label,
              "route_to_default": held.route_to_default}  # fmt: skip
    if held.unseen is not None:
        arrays["unseen"] = held.unseen
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError as exc:
        log.debug("calibration cache not written (%s): %s", path, exc)
    return held
