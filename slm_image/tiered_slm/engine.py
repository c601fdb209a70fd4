"""Generation on one llama.cpp model instance: blocking, so it runs on the instance's own worker thread.

The HTTP layer never calls llama.cpp itself. It hands a :class:`GenerationJob` to :meth:`Engine.run` on the
worker thread and reads :class:`TextDelta` / :class:`Finished` events back through a :class:`TokenChannel`.
llama.cpp releases the GIL while it computes, so the event loop keeps serving health checks, metrics and
queue rejections during a long generation.
"""

from __future__ import annotations

import asyncio
import codecs
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tiered_slm.speculative import CountingProposer
from tiered_slm.utf8guard import Utf8Guard

if TYPE_CHECKING:
    from llama_cpp import Llama

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings of one request. ``temperature == 0`` means greedy (deterministic)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class GenerationJob:
    """One request's work. ``cancel`` is set by the HTTP layer when the client goes away."""

    prompt_tokens: list[int]
    params: SamplingParams
    cancel: threading.Event = field(default_factory=threading.Event)
    grammar: str | None = None
    """A GBNF grammar (root rule ``root``) every generated token must follow (structured outputs)."""


@dataclass(frozen=True)
class TextDelta:
    """Newly generated text (whole UTF-8 characters, stop strings already removed)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """End of a generation, with the counts and timings the metrics and the usage block need."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    started_at: float
    first_token_at: float | None
    finished_at: float
    error: str | None = None
    token_ids: tuple[int, ...] = ()

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens after the first divided by the time after the first (prefill excluded)."""
        if self.first_token_at is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None


StreamEvent = TextDelta | Finished


class StopMatcher:
    """Finds stop strings in streamed text without ever emitting part of one.

    Text that could be the start of a stop string is held back until the next piece decides it.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stop for stop in stops if stop)
        self.hold = max((len(stop) for stop in self.stops), default=1) - 1
        self.buffer = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to emit, whether a stop string was reached)."""
        if not self.stops:
            return text, False
        self.buffer += text
        positions = [index for index in (self.buffer.find(stop) for stop in self.stops) if index >= 0]
        if positions:
            out = self.buffer[: min(positions)]
            self.buffer = ""
            return out, True
        cut = max(0, len(self.buffer) - self.hold)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out, False

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


class TokenChannel:
    """Worker thread -> event loop hand-off that wakes the loop at most once per batch of events.

    A plain ``call_soon_threadsafe`` per token costs a loop wake-up per token; here, when the HTTP side lags,
    tokens accumulate and are written together, so the server keeps up with the model instead of the reverse.

    ``min_interval_s`` (``--stream-interval-ms``) turns the hand-off around after the first text: the worker
    only queues, and the loop collects what is queued every ``min_interval_s`` (a timer), so no token waits
    longer than that and the loop's per-write work is shared by the tokens of an interval. The first text and
    the final event still wake the loop at once (time to first token and the end are never held back).
    ``text_wakes=False`` (non-streamed responses, which only need the end) polls from the start.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, min_interval_s: float = 0.0, *,
                 text_wakes: bool = True) -> None:
        self._loop = loop
        self._events: deque[StreamEvent] = deque()
        self._lock = threading.Lock()
        self._wakeup = asyncio.Event()
        self._wake_pending = False
        self._min_interval_s = min_interval_s
        # Once set, text no longer wakes the loop: its timer collects (with an interval, after the first text).
        self._polling = not text_wakes and min_interval_s > 0

    def put(self, event: StreamEvent) -> None:
        """Called from the worker thread."""
        with self._lock:
            self._events.append(event)
            if self._wake_pending or (self._polling and isinstance(event, TextDelta)):
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._wakeup.set)

    async def get_batch(self) -> list[StreamEvent]:
        """Wait for at least one event and return all that are queued."""
        while True:
            timer = self._loop.call_later(self._min_interval_s, self._wakeup.set) if self._polling else None
            try:
                await self._wakeup.wait()
            finally:
                if timer is not None:
                    timer.cancel()
            with self._lock:
                self._wakeup.clear()
                self._wake_pending = False
                batch = list(self._events)
                self._events.clear()
                if self._min_interval_s > 0 and any(isinstance(event, TextDelta) for event in batch):
                    self._polling = True
            if batch:
                return batch


class ProposalTracker:
    """Sequential verification's bookkeeping: which proposal is being checked, and when to ask for the next.

    A proposal stays open while the generated tokens agree with it; the first disagreement, or its last token
    agreeing, closes it, and the next one is asked for (as after a batched verification step).
    """

    def __init__(self) -> None:
        self.proposal: list[int] = []
        self.checked = 0

    def needs_proposal(self, token: int) -> bool:
        """Record the token just generated; True when a new proposal should be made."""
        if self.checked < len(self.proposal) and self.proposal[self.checked] == token:
            self.checked += 1
            return self.checked >= len(self.proposal)
        return True

    def start(self, proposal: Sequence[int]) -> None:
        self.proposal, self.checked = [int(token) for token in proposal], 0


def reuse_cached_prefix(llm: Llama, prompt: Sequence[int]) -> list[int]:
    """Keep the KV cache of the longest prefix ``prompt`` shares with what is cached; return what is left to
    evaluate (at least one token, whose logits start the generation), as ``Llama.generate`` does."""
    cached = llm.input_ids[: llm.n_tokens]
    limit = min(len(cached), len(prompt) - 1)
    reuse = 0
    if limit > 0:
        differs = np.flatnonzero(cached[:limit] != np.asarray(prompt[:limit], dtype=cached.dtype))
        reuse = int(differs[0]) if len(differs) else limit
    if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
        llm.n_tokens = reuse
        return list(prompt[reuse:])
    llm.reset()
    return list(prompt)


def _grammar(gbnf: str | None) -> Any:
    if gbnf is None:
        return None
    from llama_cpp.llama_grammar import LlamaGrammar

    return LlamaGrammar.from_string(gbnf)


def constrained_sampler(llm: Llama, params: SamplingParams, grammar: str, guard: Utf8Guard) -> Any:
    """``Llama._init_sampler``'s chain (penalties, then greedy or top-k/typical/top-p/min-p/temperature/dist, with
    the same arguments) with the grammar and the UTF-8 guard in front of the choice."""
    from llama_cpp import _internals

    sampler = _internals.LlamaSampler()
    sampler.add_penalties(n_vocab=llm._n_vocab, penalty_last_n=llm.last_n_tokens_size,
                          penalty_repeat=params.repeat_penalty, penalty_freq=params.frequency_penalty,
                          penalty_present=params.presence_penalty)
    sampler.add_grammar(llm._model, _grammar(grammar))
    sampler.add_custom(guard.apply)
    if params.temperature <= 0:
        sampler.add_greedy()
    else:
        sampler.add_top_k(params.top_k)
        sampler.add_typical(1.0, 1)
        sampler.add_top_p(params.top_p, 1)
        sampler.add_min_p(params.min_p, 1)
        sampler.add_temp(params.temperature)
        sampler.add_dist(llm._seed)
    return sampler


def greedy_tokens(llm: Llama, prompt: Sequence[int], params: SamplingParams,
                  proposer: CountingProposer | None = None, *,
                  prefix_cache: bool = True, grammar: str | None = None,
                  guard: Utf8Guard | None = None) -> Generator[int, None, None]:
    """Greedy decoding computed the same way with or without speculation.

    llama.cpp's CPU kernels give slightly different logits for a token evaluated alone and inside a batch
    (K-quants: up to ~0.36), so a greedy choice at a near-tie depends on how tokens were grouped into llama.cpp
    calls. Here the grouping never depends on a proposer: the prompt (or its part not already in the KV cache)
    in one evaluation with logits for its last position only, as in a model loaded without ``logits_all``, then
    one token per call. A proposer, when present, is verified against those same single-token steps (sequential
    verification): its acceptance is measured, but it cannot change a token, and it saves no model calls.

    ``prefix_cache=False`` evaluates every prompt from an empty KV cache: the output is then a pure function of
    the request, whereas a reused prefix carries the numerics of how earlier requests were grouped.

    ``grammar`` (GBNF, with ``guard``) restricts every token to the grammar and to valid UTF-8; the sampler chain
    is built fresh per request, so the grammar starts from its root. Sampled (temperature > 0) structured requests
    run here too: one token per call, with the sampling stages of ``Llama.generate``.
    """
    if grammar is not None and guard is not None:
        guard.start()
        llm._sampler = constrained_sampler(llm, params, grammar, guard)
    else:
        llm._sampler = llm._init_sampler(  # what Llama.generate builds, so penalties behave identically
            top_k=params.top_k, top_p=params.top_p, min_p=params.min_p, typical_p=1.0, temp=params.temperature,
            repeat_penalty=params.repeat_penalty, frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty, tfs_z=1.0, mirostat_mode=0, mirostat_tau=5.0,
            mirostat_eta=0.1, penalize_nl=True, logits_processor=None, grammar=None)
    if prefix_cache:
        pending = reuse_cached_prefix(llm, prompt)
    else:
        llm.reset()
        pending = list(prompt)
    logits_all = llm._logits_all
    llm._logits_all = False  # as a model loaded without logits_all: the output head sees the last row only
    try:
        llm.eval(pending)
    finally:
        llm._logits_all = logits_all
    history = list(prompt)
    tracker = ProposalTracker()
    while True:
        token = llm.sample(idx=None)
        if guard is not None:
            guard.accept(token)
        yield token
        history.append(token)
        if proposer is not None and tracker.needs_proposal(token):
            tracker.start(proposer(np.array(history, dtype=np.intc)).tolist())
        llm.eval([token])


class Engine:
    """A loaded model plus the generation loop. Not thread-safe: one worker thread per Engine.

    Greedy requests (temperature 0) go through :func:`greedy_tokens`, so their output is identical with and
    without speculation. Sampled requests use ``Llama.generate``: with a proposer, batched verification (one
    llama.cpp call per proposal). ``batched_greedy`` sends greedy requests there too: faster with a good
    proposer, but then greedy output may differ from plain decoding at near-ties (see docs/slm.md).
    ``prefix_cache=False`` evaluates every prompt from scratch (deterministic across request histories).
    """

    def __init__(self, llm: Llama, model_id: str, proposer: CountingProposer | None = None, *,
                 batched_greedy: bool = False, prefix_cache: bool = True) -> None:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.llm = llm
        self.model_id = model_id
        self.proposer = proposer
        self.batched_greedy = batched_greedy
        self.prefix_cache = prefix_cache
        self.n_ctx = llm.n_ctx()
        self._vocab = llm._model.vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        template = str(llm.metadata.get("tokenizer.chat_template") or FALLBACK_CHAT_TEMPLATE)
        self.chat_formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
        )
        self.add_bos = bool(llm._model.add_bos_token()) and bos_id != -1
        self.bos_token: int | None = bos_id if bos_id != -1 else None
        self.n_vocab = llm.n_vocab()
        self._utf8_guard: Utf8Guard | None = None  # built on the first structured request (reads the vocabulary)

    def grammar_error(self, gbnf: str) -> str | None:
        """Why llama.cpp cannot parse ``gbnf`` against this model's vocabulary, or None when it can.

        Checked before a job reaches the worker: llama.cpp answers a grammar it cannot parse with a NULL
        sampler, which the sampler chain would dereference. Building and freeing a grammar sampler only reads
        the vocabulary, so it is safe beside a running generation.
        """
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            return "llama.cpp could not parse the grammar built from the schema"
        llama_cpp.llama_sampler_free(sampler)
        return None

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """Tokens of a raw completion prompt (special tokens written in the text are honoured)."""
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=self.add_bos, special=True)

    def render_chat(self, messages: list[dict[str, Any]]) -> tuple[list[int], tuple[str, ...]]:
        """Apply the model's chat template; return the prompt tokens and the template's stop strings."""
        rendered = self.chat_formatter(messages=messages)  # type: ignore[arg-type]
        # The template writes BOS itself when the model wants one, so never add another.
        tokens = self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=False, special=True)
        stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
        return tokens, tuple(stop for stop in stops if stop)

    def _is_end_of_generation(self, token: int) -> bool:
        return bool(self._is_eog(self._vocab, token))

    def _tokens(self, job: GenerationJob) -> Generator[int, Any, None]:
        params = job.params
        if job.grammar is not None:
            if self._utf8_guard is None:
                self._utf8_guard = Utf8Guard(self.llm)
            return greedy_tokens(self.llm, job.prompt_tokens, params, self.proposer, prefix_cache=self.prefix_cache,
                                 grammar=job.grammar, guard=self._utf8_guard)
        if params.temperature <= 0 and not self.batched_greedy:
            return greedy_tokens(self.llm, job.prompt_tokens, params, self.proposer, prefix_cache=self.prefix_cache)
        if not self.prefix_cache:
            self.llm.reset()
        return self.llm.generate(
            job.prompt_tokens, temp=params.temperature, top_p=params.top_p, top_k=params.top_k, min_p=params.min_p,
            repeat_penalty=params.repeat_penalty, presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty, reset=True)

    def run(self, job: GenerationJob, emit: Callable[[StreamEvent], None]) -> Finished:
        """Generate for ``job`` (blocking), emitting text as it is produced and a Finished event at the end."""
        params = job.params
        started = time.perf_counter()
        self.llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stopper = StopMatcher(params.stop)
        generated: list[int] = []
        first_token_at: float | None = None
        finish_reason = "length"
        error: str | None = None
        generator = self._tokens(job)
        try:
            if params.max_tokens > 0:
                for token in generator:
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                    if not params.ignore_eos and self._is_end_of_generation(token):
                        finish_reason = "stop"
                        break
                    generated.append(token)
                    text, stopped = stopper.feed(decoder.decode(self.llm.detokenize([token])))
                    if text:
                        emit(TextDelta(text))
                    if stopped:
                        finish_reason = "stop"
                        break
                    if len(generated) >= params.max_tokens:
                        break
                    if job.cancel.is_set():
                        finish_reason = "cancelled"
                        break
        except Exception as failure:  # llama.cpp decode errors surface as RuntimeError/ValueError
            finish_reason, error = "error", f"{type(failure).__name__}: {failure}"
        finally:
            generator.close()
            if self.proposer is not None:
                self.proposer.finish(job.prompt_tokens + generated)
        # After a stop string the matcher's buffer is already empty; otherwise release held-back text.
        tail = stopper.flush() + decoder.decode(b"", final=True)
        if tail and error is None:
            emit(TextDelta(tail))
        result = Finished(
            finish_reason=finish_reason,
            prompt_tokens=len(job.prompt_tokens),
            completion_tokens=len(generated),
            started_at=started,
            first_token_at=first_token_at,
            finished_at=time.perf_counter(),
            error=error,
            token_ids=tuple(generated),
        )
        emit(result)
        return result
