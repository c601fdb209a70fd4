"""Speculative decoding never changes greedy output (on F32, Q8_0 and Q4_K_M), and its acceptance is measured."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from slm_helpers import CTX, THREADS, TinyModels, load, parse_metrics, running_server

from tiered_slm.engine import Engine, Finished, GenerationJob, SamplingParams
from tiered_slm.model import load_llama
from tiered_slm.speculative import SpeculativeConfig

PROMPTS = [
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "abc abc abc abc abc",
    "In 2024 the the the model said",
    "The quick brown fox jumps over the lazy cat, and the quick",  # reuses the first prompt's cached prefix
]


def greedy_tokens(engine: Engine, prompt: str, max_tokens: int = 48) -> tuple[int, ...]:
    done = engine.run(GenerationJob(engine.tokenize_prompt(prompt),
                                    SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)),
                      lambda _event: None)
    assert isinstance(done, Finished) and done.error is None
    return done.token_ids


ORDERS = [PROMPTS, PROMPTS[::-1], PROMPTS[1:] + PROMPTS[:1]]


def reference_greedy(model: Path, prompt: str, max_tokens: int = 48) -> tuple[int, ...]:
    """Plain greedy decoding as llama-cpp-python does it on a fresh model (no server code involved)."""
    llm = load_llama(model, n_ctx=CTX, threads=THREADS)
    out: list[int] = []
    for token in llm.generate(llm.tokenize(prompt.encode(), add_bos=False, special=True), temp=0.0, reset=True):
        out.append(token)
        if len(out) >= max_tokens:
            break
    return tuple(out)


@pytest.fixture(scope="module")
def plain_outputs(tiny_models: TinyModels) -> dict[str, dict[str, tuple[int, ...]]]:
    """Greedy tokens of plain decoding, per quantization and prompt."""
    outputs = {}
    for quant, path in tiny_models.by_type().items():
        engine, _ = load(path)
        outputs[quant] = {prompt: greedy_tokens(engine, prompt) for prompt in PROMPTS}
    return outputs


@pytest.mark.parametrize("quant", ["F32", "Q8_0", "Q4_K_M"])
@pytest.mark.parametrize("proposer", ["prompt-lookup", "draft-other-weights", "draft-same-model"])
def test_speculative_greedy_output_is_token_for_token_identical(
        tiny_models: TinyModels, plain_outputs: dict[str, dict[str, tuple[int, ...]]], quant: str,
        proposer: str) -> None:
    """Exact identity on every type, K-quants included: greedy verification uses plain decoding's numerics."""
    target = tiny_models.by_type()[quant]
    if proposer == "prompt-lookup":
        config = SpeculativeConfig(mode="prompt-lookup", num_tokens=6, max_ngram=3)
    else:
        draft = tiny_models.draft if proposer == "draft-other-weights" else target
        config = SpeculativeConfig(mode="draft", num_tokens=4, draft_model=draft)
    engine, report = load(target, speculative=config)
    assert report.speculative == config.mode and engine.proposer is not None
    before = engine.proposer.snapshot()
    for prompt in PROMPTS:
        assert greedy_tokens(engine, prompt) == plain_outputs[quant][prompt], prompt
    stats = engine.proposer.snapshot()
    proposed, accepted = stats.proposed - before.proposed, stats.accepted - before.accepted
    assert proposed > 0, "the proposer was never consulted"
    if proposer == "draft-same-model":
        # The target drafting for itself agrees almost always; the draft reuses its KV prefix across calls
        # (batched numerics), so a near-tie may still make it propose the other token.
        assert accepted >= 0.95 * proposed
    if proposer == "prompt-lookup":
        # The prompts repeat themselves, and greedy noise loops: lookups must hit sometimes.
        assert accepted > 0


@pytest.mark.parametrize("quant", ["F32", "Q4_K_M"])
def test_without_prefix_cache_greedy_output_does_not_depend_on_earlier_requests(
        tiny_models: TinyModels, quant: str) -> None:
    """A reused KV prefix carries the numerics of how earlier requests were evaluated; with --prefix-cache off
    every order of requests gives the tokens of plain llama-cpp-python decoding on a fresh model."""
    path = tiny_models.by_type()[quant]
    reference = {prompt: reference_greedy(path, prompt) for prompt in PROMPTS}
    engine, _ = load(path, speculative=SpeculativeConfig(mode="prompt-lookup"), prefix_cache=False)
    for order in ORDERS:
        for prompt in order:
            assert greedy_tokens(engine, prompt) == reference[prompt], (order, prompt)


def test_batched_verification_is_available_and_counts_acceptance(tiny_models: TinyModels) -> None:
    """``verify=batched`` checks proposals in one llama.cpp call (sampled requests always do)."""
    target = tiny_models.q8_0
    engine, _ = load(target, speculative=SpeculativeConfig(mode="draft", num_tokens=4, draft_model=target,
                                                           verify="batched"))
    assert engine.batched_greedy and engine.proposer is not None
    tokens = greedy_tokens(engine, PROMPTS[0], max_tokens=32)
    stats = engine.proposer.snapshot()
    assert len(tokens) == 32 and stats.proposed > 0 and stats.accepted >= 0.9 * stats.proposed
    sampled = engine.run(GenerationJob(engine.tokenize_prompt(PROMPTS[1]),
                                       SamplingParams(max_tokens=16, temperature=0.8, seed=3, ignore_eos=True)),
                         lambda _event: None)
    assert sampled.error is None and sampled.completion_tokens == 16
    assert engine.proposer.snapshot().proposed > stats.proposed


def test_draft_model_with_another_vocabulary_is_refused(tiny_models: TinyModels, tmp_path: object) -> None:
    from pathlib import Path

    from tiered_slm.testmodel import TinyModelShape, write_test_model

    other = write_test_model(Path(str(tmp_path)) / "other-vocab.gguf", shape=TinyModelShape(vocab_multiple=128))
    with pytest.raises(ValueError, match="same tokenizer"):
        load(tiny_models.q8_0, speculative=SpeculativeConfig(mode="draft", draft_model=other))


@pytest.mark.parametrize("mode", ["prompt-lookup", "draft"])
async def test_speculative_server_matches_plain_server_and_exports_acceptance(
        tiny_models: TinyModels, http: aiohttp.ClientSession, mode: str) -> None:
    request = {"prompt": PROMPTS[0], "max_tokens": 32, "temperature": 0, "ignore_eos": True}
    plain = load(tiny_models.q4_k_m)
    config = SpeculativeConfig(mode="prompt-lookup") if mode == "prompt-lookup" else \
        SpeculativeConfig(mode="draft", draft_model=tiny_models.q4_k_m, num_tokens=4)
    speculative = load(tiny_models.q4_k_m, speculative=config)
    texts = []
    for engine, report in (plain, speculative):
        async with running_server(engine, report) as (url, _server):
            async with http.post(f"{url}/v1/completions", json=request) as response:
                texts.append((await response.json())["choices"][0]["text"])
            async with http.get(f"{url}/metrics") as response:
                metrics = parse_metrics(await response.text())
    assert texts[0] == texts[1]
    assert metrics[f'tiered_slm_speculative_proposed_tokens{{mode="{mode}"}}'] > 0
    rate = metrics[f'tiered_slm_speculative_acceptance_rate{{mode="{mode}"}}']
    assert 0.0 <= rate <= 1.0
    if mode == "draft":
        assert rate >= 0.95


COPYING_PROMPTS = [  # input-copying work (extraction, editing), where prompt lookup has something to find
    "Copy this sentence exactly: The quarterly report shows revenue of 4.2 million euros, up 12 percent.",
    "Fix the spelling and repeat the rest unchanged: Teh meeting with the design team is moved to Thursday "
    "afternoon at three o'clock in room Orion.",
    "Extract the address from: Please send the parcel to Maria Lopez, Calle Mayor 12, 46001 Valencia, Spain.",
]


def test_speculation_keeps_the_real_models_greedy_output_and_finds_copied_text(real_model: Path) -> None:
    """SmolLM2-135M-Instruct, chat prompts that ask for copied text: prompt lookup proposes from the prompt, the
    tokens are those of plain decoding, and a large share of the proposals is accepted."""
    plain, _ = load(real_model, n_ctx=2048)
    speculative, report = load(real_model, n_ctx=2048,
                               speculative=SpeculativeConfig(mode="prompt-lookup", num_tokens=8, max_ngram=3))
    assert report.speculative == "prompt-lookup" and speculative.proposer is not None
    for prompt in COPYING_PROMPTS:
        expected = []
        for engine in (plain, speculative):
            tokens, stops = engine.render_chat([{"role": "user", "content": prompt}])
            done = engine.run(GenerationJob(tokens, SamplingParams(max_tokens=48, temperature=0.0, stop=stops)),
                              lambda _event: None)
            assert done.error is None
            expected.append(done.token_ids)
        assert expected[0] == expected[1], prompt
    stats = speculative.proposer.snapshot()
    print(f"\nprompt lookup on copying prompts: {stats.accepted}/{stats.proposed} proposed tokens accepted")
    assert stats.proposed > 0 and stats.accepted >= 0.3 * stats.proposed
