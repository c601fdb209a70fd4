"""Speculative decoding: something cheap proposes tokens, the served model verifies them in one batch.

Two proposers, matching ``InferenceTier.spec.local.speculative``:

* ``prompt-lookup`` - copy the continuation of the last n-gram's earlier occurrence in the context
  (llama-cpp-python's LlamaPromptLookupDecoding); free, and good at echo-heavy tasks (extraction, editing);
* ``draft`` - a small model with the same vocabulary generates greedily (:class:`DraftModelProposer`).

llama-cpp-python's ``Llama.generate`` verifies proposals by sampling the target at every proposed position and
keeping the longest agreeing prefix, so the output distribution is the target's own; under greedy sampling the
tokens are exactly those of plain decoding. :class:`CountingProposer` wraps either proposer to measure the
acceptance rate, which the server exports as a metric.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from llama_cpp.llama_speculative import LlamaDraftModel, LlamaPromptLookupDecoding

if TYPE_CHECKING:
    from llama_cpp import Llama

SpeculativeMode = Literal["off", "prompt-lookup", "draft"]
VerifyMode = Literal["exact", "batched"]


@dataclass(frozen=True)
class SpeculativeConfig:
    """How to speculate. ``num_tokens`` is the proposal length per verification step.

    ``verify`` decides how greedy requests check proposals: ``exact`` one token per llama.cpp call, so the
    output is token-for-token that of plain decoding on every quantization type (and speculation saves
    nothing); ``batched`` all proposals in one call, faster when proposals are good, but llama.cpp's CPU kernels
    round a batch differently from single tokens, so near-ties may flip (K-quants). Sampled requests always
    verify in a batch.
    """

    mode: SpeculativeMode = "off"
    num_tokens: int = 8
    max_ngram: int = 3
    draft_model: Path | None = None
    verify: VerifyMode = "exact"

    def __post_init__(self) -> None:
        if self.mode == "draft" and self.draft_model is None:
            raise ValueError("speculative mode 'draft' needs a draft model (--draft-model PATH)")
        if self.verify not in ("exact", "batched"):
            raise ValueError(f"speculative verify must be 'exact' or 'batched', not {self.verify!r}")
        if self.num_tokens < 1 or self.max_ngram < 1:
            raise ValueError("speculative num_tokens and max_ngram must be at least 1")


def settle_proposal(proposal: Sequence[int], actual: Sequence[int]) -> tuple[int, int]:
    """(proposed, accepted) for one proposal, given the tokens that really followed it.

    Proposed tokens are only counted once they were decided: a proposal cut short because generation ended
    counts only the part that was compared (all of it agreed, or the generation would have diverged).
    """
    accepted = 0
    for guess, real in zip(proposal, actual, strict=False):
        if guess != real:
            return min(len(proposal), accepted + 1), accepted
        accepted += 1
    return accepted, accepted


@dataclass
class AcceptanceStats:
    """Running totals (proposed, accepted); read by the metrics layer from another thread."""

    proposed: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class CountingProposer(LlamaDraftModel):
    """Wraps a proposer and settles each proposal against the tokens that actually followed it.

    ``Llama.generate`` calls the proposer with the whole token history once per verification step, so the
    previous proposal is settled at the next call; :meth:`finish` settles the last one when a request ends.
    """

    def __init__(self, inner: LlamaDraftModel, n_ctx: int) -> None:
        self.inner = inner
        self.n_ctx = n_ctx
        self.stats = AcceptanceStats()
        self._lock = threading.Lock()
        self._pending: tuple[int, list[int]] | None = None

    def _settle(self, history: Sequence[int] | npt.NDArray[np.intc]) -> None:
        if self._pending is None:
            return
        start, proposal = self._pending
        self._pending = None
        proposed, accepted = settle_proposal(proposal, list(history[start:]))
        with self._lock:
            self.stats.proposed += proposed
            self.stats.accepted += accepted

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        self._settle(input_ids)
        proposal = self.inner(input_ids, **kwargs)
        # generate() drops what does not fit the context; count only what it will evaluate.
        proposal = proposal[: max(0, self.n_ctx - len(input_ids))]
        if len(proposal):
            self._pending = (len(input_ids), [int(token) for token in proposal])
        return proposal

    def finish(self, history: Sequence[int]) -> None:
        """Settle the last proposal of a request against its final token history."""
        self._settle(history)

    def snapshot(self) -> AcceptanceStats:
        with self._lock:
            return AcceptanceStats(self.stats.proposed, self.stats.accepted)


class DraftModelProposer(LlamaDraftModel):
    """Greedy proposals from a small draft model sharing the target's vocabulary.

    The draft keeps its own KV cache; ``Llama.generate`` reuses the longest common prefix with the previous
    call, so each step only evaluates the tokens accepted since then.
    """

    def __init__(self, draft: Llama, num_tokens: int) -> None:
        self.draft = draft
        self.num_tokens = num_tokens

    def __call__(self, input_ids: npt.NDArray[np.intc], /, **kwargs: Any) -> npt.NDArray[np.intc]:
        import llama_cpp

        budget = min(self.num_tokens, self.draft.n_ctx() - len(input_ids) - 1)
        proposal: list[int] = []
        if budget <= 0:
            return np.array(proposal, dtype=np.intc)
        generator = self.draft.generate([int(token) for token in input_ids], temp=0.0, reset=True)
        try:
            for token in generator:
                proposal.append(token)
                if len(proposal) >= budget or llama_cpp.llama_vocab_is_eog(self.draft._model.vocab, token):
                    break
        finally:
            generator.close()
        return np.array(proposal, dtype=np.intc)


def build_proposer(config: SpeculativeConfig, *, n_ctx: int, n_vocab: int,
                   load_draft: Callable[[Path, int], Llama] | None = None) -> CountingProposer | None:
    """The proposer for ``config`` wrapped for counting, or None when speculation is off.

    ``load_draft(path, n_ctx)`` loads the draft model (injected so this module does not decide load flags).
    """
    if config.mode == "off":
        return None
    inner: LlamaDraftModel
    if config.mode == "prompt-lookup":
        inner = LlamaPromptLookupDecoding(max_ngram_size=config.max_ngram, num_pred_tokens=config.num_tokens)
    else:
        assert config.draft_model is not None and load_draft is not None
        draft = load_draft(config.draft_model, n_ctx)
        if draft.n_vocab() != n_vocab:
            raise ValueError(
                f"draft model {config.draft_model} has a vocabulary of {draft.n_vocab()} tokens, the served "
                f"model {n_vocab}; speculative decoding needs the same tokenizer"
            )
        inner = DraftModelProposer(draft, config.num_tokens)
    return CountingProposer(inner, n_ctx)
