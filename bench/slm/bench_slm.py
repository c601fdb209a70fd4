"""SLM server benchmark: the server versus llama-cpp-python called directly, on the same generated model.

Measures, side by side in one run (interleaved, medians over repetitions):

* server vs direct decode tokens/s and time to first token (target: server >= 97 % of direct tokens/s, TTFT
  overhead <= 2 ms) - the server runs as a real ``tiered-slm serve`` process, the client streams over HTTP;
* file size and decode tokens/s for F32 / Q8_0 / Q4_K_M;
* speculative decoding (prompt-lookup and a draft model): acceptance rate and speedup over plain decoding.

The models are random-weight Llama GGUFs written by ``tiered_slm.testmodel`` (nothing can be downloaded here).
Their speed is real; their text is noise, so speculative acceptance on them says little about real models.

    .venv/bin/python bench/slm/bench_slm.py --out bench/slm/results.json
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tiered_slm.engine import GenerationJob, SamplingParams
from tiered_slm.model import ModelOptions, load_engine, load_llama, warm_up
from tiered_slm.quantize import quantize_gguf
from tiered_slm.speculative import SpeculativeConfig
from tiered_slm.testmodel import TinyModelShape, write_test_model

PROMPT = ("You are a helpful assistant. Summarise the following support ticket in one sentence: the customer "
          "reports that the invoice for March was charged twice and asks for a refund of the duplicate charge.")
BENCH_SHAPE = TinyModelShape(n_embd=768, n_layer=6, n_head=12, n_head_kv=4, n_ff=2048, n_ctx=2048)
# Idle gap between measurements: llama.cpp's worker threads spin briefly after a burst, which would steal
# CPU from whichever side runs next on a small machine.
SETTLE_S = 0.3
DRAFT_SHAPE = TinyModelShape(n_embd=256, n_layer=1, n_head=4, n_head_kv=2, n_ff=512, n_ctx=2048)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def direct_generate(llm: Any, max_tokens: int) -> dict[str, float]:
    """The leanest direct use of llama-cpp-python that streams text: tokenize, ``Llama.generate`` greedily,
    decode each token's bytes incrementally.

    This is the baseline the server is held to (the same work plus HTTP, queueing and metrics). Times are taken
    when text becomes visible, as for the server's client: a token that ends inside a multi-byte UTF-8
    character shows nothing until the character completes (random models emit such bytes often).
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    first = last = None
    tokens = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    generator = llm.generate(prompt, temp=0.0, reset=True)
    for token in generator:
        text = decoder.decode(llm.detokenize([token]))
        tokens += 1
        if text:
            now = time.perf_counter()
            first = first or now
            last = now
        if tokens >= max_tokens:
            break
    generator.close()
    assert first is not None and last is not None
    return {"ttft_s": first - started, "tokens": tokens, "cpu_s": time.process_time() - cpu_started,
            "decode_tps": (tokens - 1) / (last - first) if tokens > 1 else float("nan")}


def direct_create_completion(llm: Any, max_tokens: int) -> dict[str, float]:
    """llama-cpp-python's high-level streaming API, for reference (it stops at EOS; chunks ~ tokens)."""
    started = time.perf_counter()
    first = last = None
    tokens = 0
    for _chunk in llm.create_completion(PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        first = first or now
        last = now
        tokens += 1
    assert first is not None and last is not None
    return {"ttft_s": first - started, "tokens": tokens,
            "decode_tps": (tokens - 1) / (last - first) if tokens > 1 else float("nan")}


async def server_run(http: aiohttp.ClientSession, url: str, max_tokens: int, pid: int) -> dict[str, float]:
    """The same request through the server's streaming /v1/completions, timed at the client.

    ``cpu_s`` is the server process's CPU time for the request (model, HTTP, metrics, all threads).
    """
    cpu_started = process_cpu_seconds(pid)
    started = time.perf_counter()
    first = last = None
    tokens = 0
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    usage: dict[str, int] = {}
    async with http.post(f"{url}/v1/completions", json=body) as response:
        async for raw in response.content:
            line = raw.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]
                continue
            if event["choices"][0]["text"]:
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
    assert first is not None and last is not None
    # Chunks can carry several tokens when the client lags; the usage block has the exact count.
    tokens = usage.get("completion_tokens", tokens)
    return {"ttft_s": first - started, "tokens": tokens, "cpu_s": process_cpu_seconds(pid) - cpu_started,
            "decode_tps": (tokens - 1) / (last - first) if tokens > 1 else float("nan")}


async def server_ttft(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(sum, count) of the server's own time-to-first-token histogram (arrival to first token, no network)."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return (float(values["tiered_slm_time_to_first_token_seconds_sum"]),
            float(values["tiered_slm_time_to_first_token_seconds_count"]))


def start_server(model: Path, threads: int, ctx: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tiered_slm", "serve", "--model", str(model), "--host", "127.0.0.1", "--port", "0",
         "--threads", str(threads), "--ctx", str(ctx), "--cache-dir", str(model.parent / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stdout is not None
    url = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            url = match.group(1)
        if "model ready" in line and url:
            return process, url
    process.kill()
    raise RuntimeError("server did not become ready")


async def server_vs_direct(model: Path, threads: int, ctx: int, reps: int, max_tokens: int) -> dict[str, Any]:
    llm = load_llama(model, n_ctx=ctx, threads=threads)
    direct_generate(llm, 4)  # warm-up, as the server does before it reports ready
    process, url = start_server(model, threads, ctx)
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "direct_create_completion": [], "server": []}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            await server_run(http, url, 4, process.pid)
            ttft_before = await server_ttft(http, url)
            for _ in range(reps):  # interleaved so machine noise hits every side alike
                runs["direct"].append(await asyncio.to_thread(direct_generate, llm, max_tokens))
                await asyncio.sleep(SETTLE_S)
                runs["server"].append(await server_run(http, url, max_tokens, process.pid))
                await asyncio.sleep(SETTLE_S)
                runs["direct_create_completion"].append(
                    await asyncio.to_thread(direct_create_completion, llm, max_tokens))
                await asyncio.sleep(SETTLE_S)
            ttft_after = await server_ttft(http, url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    del llm
    summary = {name: {"decode_tokens_per_s_median": median([r["decode_tps"] for r in values]),
                      "ttft_ms_median": median([r["ttft_s"] for r in values]) * 1000,
                      "tokens_generated": [int(r["tokens"]) for r in values]}
               for name, values in runs.items()}
    ratio = summary["server"]["decode_tokens_per_s_median"] / summary["direct"]["decode_tokens_per_s_median"]
    overhead = summary["server"]["ttft_ms_median"] - summary["direct"]["ttft_ms_median"]
    # Pairs measured back to back see similar machine load: their ratios are steadier than ratios of medians.
    paired = [s["decode_tps"] / d["decode_tps"] for d, s in zip(runs["direct"], runs["server"], strict=True)]
    cpu_per_token = {name: sum(r["cpu_s"] for r in runs[name]) / sum(r["tokens"] for r in runs[name])
                     for name in ("direct", "server")}
    return {
        "model": model.name, "threads": threads, "reps": reps, "max_tokens": max_tokens,
        **summary,
        "server_over_direct_tokens_per_s": ratio,
        "server_over_direct_tokens_per_s_paired_median": median(paired),
        "ttft_overhead_ms": overhead,
        "server_side_ttft_ms_mean": (ttft_after[0] - ttft_before[0]) / max(1, ttft_after[1] - ttft_before[1]) * 1000,
        "cpu_ms_per_token": {name: value * 1000 for name, value in cpu_per_token.items()},
        "server_cpu_overhead": cpu_per_token["server"] / cpu_per_token["direct"] - 1,
        "target": {"tokens_per_s_ratio_min": 0.97, "ttft_overhead_ms_max": 2.0},
        "meets_target": ratio >= 0.97 and overhead <= 2.0,
        "raw": runs,
    }


def engine_run(engine: Any, max_tokens: int) -> tuple[float, tuple[int, ...]]:
    tokens = engine.tokenize_prompt(PROMPT)
    done = engine.run(GenerationJob(tokens, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)),
                      lambda _e: None)
    time.sleep(SETTLE_S)
    return done.decode_tokens_per_second or float("nan"), done.token_ids


def load_warm(path: Path, threads: int, ctx: int, config: SpeculativeConfig | None = None) -> tuple[Any, Any]:
    engine, report = load_engine(ModelOptions(source=str(path), n_ctx=ctx, threads=threads,
                                              cache_dir=path.parent / "cache",
                                              speculative=config or SpeculativeConfig()))
    warm_up(engine)
    return engine, report


def by_quantization(models: dict[str, Path], threads: int, ctx: int, reps: int, max_tokens: int) -> dict[str, Any]:
    """File size and decode speed per type, the three engines interleaved rep by rep."""
    engines = {quant: load_warm(path, threads, ctx) for quant, path in models.items()}
    rates: dict[str, list[float]] = {quant: [] for quant in models}
    for _ in range(reps):
        for quant, (engine, _report) in engines.items():
            rates[quant].append(engine_run(engine, max_tokens)[0])
    return {quant: {"file_bytes": report.size_bytes, "decode_tokens_per_s_median": median(rates[quant]),
                    "load_seconds": report.load_seconds, "runs": rates[quant]}
            for quant, (_engine, report) in engines.items()}


def speculative(model: Path, draft: Path, threads: int, ctx: int, reps: int, max_tokens: int) -> dict[str, Any]:
    """Plain vs prompt-lookup vs draft-model decoding on one model, interleaved; identity of greedy output."""
    configs = {"plain": None,
               "prompt-lookup": SpeculativeConfig(mode="prompt-lookup", num_tokens=8, max_ngram=3),
               "draft": SpeculativeConfig(mode="draft", num_tokens=4, draft_model=draft)}
    engines = {name: load_warm(model, threads, ctx, config)[0] for name, config in configs.items()}
    before = {name: engine.proposer.snapshot() for name, engine in engines.items() if engine.proposer}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    outputs: dict[str, tuple[int, ...]] = {}
    for _ in range(reps):
        for name, engine in engines.items():
            rate, outputs[name] = engine_run(engine, max_tokens)
            rates[name].append(rate)
    plain = median(rates["plain"])
    results: dict[str, Any] = {"model": model.name, "plain": {"decode_tokens_per_s_median": plain}}
    for name in ("prompt-lookup", "draft"):
        after = engines[name].proposer.snapshot()
        proposed, accepted = after.proposed - before[name].proposed, after.accepted - before[name].accepted
        diverged = next((i for i, (a, b) in enumerate(zip(outputs[name], outputs["plain"], strict=False))
                         if a != b), None)
        results[name] = {"decode_tokens_per_s_median": median(rates[name]), "speedup": median(rates[name]) / plain,
                         "acceptance_rate": accepted / proposed if proposed else 0.0, "proposed": proposed,
                         "accepted": accepted, "identical_to_plain": outputs[name] == outputs["plain"],
                         "first_divergent_token": diverged}
    return results


def batch_invariance(models: dict[str, Path], threads: int) -> dict[str, Any]:
    """Largest logit difference between evaluating 8 tokens in one batch and one at a time.

    Speculative verification evaluates proposals in a batch; plain decoding evaluates one token per step.
    Greedy outputs can only be identical where these agree (or the top-2 margin is larger than the gap).
    """
    import numpy as np

    out = {}
    for quant, path in models.items():
        llm = load_llama(path, n_ctx=512, threads=threads, logits_all=True)
        prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)[:24]
        extra = [int(t) for t in np.random.default_rng(0).integers(0, 256, 8)]
        llm.reset()
        llm.eval(prompt)
        llm.eval(extra)
        batched = llm.scores[len(prompt):len(prompt) + len(extra)].copy()
        llm.reset()
        llm.eval(prompt)
        single = []
        for token in extra:
            llm.eval([token])
            single.append(llm.scores[llm.n_tokens - 1].copy())
        out[quant] = {"max_abs_logit_diff": float(np.abs(batched - np.array(single)).max()),
                      "logit_std": float(np.array(single).std())}
        del llm
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads on both sides (1 keeps a shared 2-core box from distorting results)")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, help="keep the generated models here (default: temporary)")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slm-bench-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        f32 = root / "bench-f32.gguf"
        if not f32.exists():
            write_test_model(f32, seed=7, shape=BENCH_SHAPE, name="tiered-bench-llama")
        models = {"F32": f32, "Q8_0": root / "bench-q8_0.gguf", "Q4_K_M": root / "bench-q4_k_m.gguf"}
        for quant in ("Q8_0", "Q4_K_M"):
            if not models[quant].exists():
                quantize_gguf(f32, models[quant], quant, threads=args.threads)
        draft = root / "bench-draft-f32.gguf"
        if not draft.exists():
            write_test_model(draft, seed=8, shape=DRAFT_SHAPE, name="tiered-bench-draft")
        results = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "load_average_at_start": os.getloadavg()},
            "model_shape": BENCH_SHAPE.__dict__,
            "server_vs_direct": asyncio.run(server_vs_direct(models["Q4_K_M"], args.threads, args.ctx, args.reps,
                                                             args.max_tokens)),
            "quantization": by_quantization(models, args.threads, args.ctx, max(3, args.reps // 2),
                                            args.max_tokens),
            "speculative": {quant: speculative(models[quant], draft, args.threads, args.ctx, max(3, args.reps // 2),
                                               args.max_tokens) for quant in ("Q8_0", "Q4_K_M")},
            "batch_invariance": batch_invariance(models, args.threads),
            "note": ("random-weight models: speed is real, text is noise; speculative acceptance depends on how "
                     "repetitive the noise is and says little about real models."),
        }
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    summary = results["server_vs_direct"]
    print(json.dumps({key: summary[key] for key in (
        "direct", "server", "server_over_direct_tokens_per_s", "server_over_direct_tokens_per_s_paired_median",
        "ttft_overhead_ms", "cpu_ms_per_token", "server_cpu_overhead", "meets_target")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
