"""SLM server benchmark: the server versus llama-cpp-python called directly, on the same generated model.

Measures, side by side in one run (interleaved, medians over repetitions):

* server vs direct decode tokens/s and time to first token (target: server >= 97 % of direct tokens/s, TTFT
  overhead <= 2 ms) - the server runs as real ``tiered-slm serve`` processes (defaults, and variants),
  the client streams over HTTP (aiohttp's client, and for the default server also the router's own upstream
  client, which is what calls the SLM server in a deployment); direct, server and server-asyncio runs go back to
  back in rotating order, and
  the figures are medians of per-round ratios/differences (each round sees the same machine load), with the
  load average of every round recorded;
* file size and decode tokens/s for F32 / Q8_0 / Q4_K_M;
* speculative decoding (prompt-lookup and a draft model, exact and batched verification): acceptance rate,
  speedup over plain decoding, identity of the greedy output;
* batch invariance: how far llama.cpp's logits for a batch of tokens are from one-token-at-a-time evaluation,
  per type, with and without weight repacking and with F16 or F32 KV cache.

The models are random-weight Llama GGUFs written by ``tiered_slm.testmodel`` (nothing can be downloaded here).
Their speed is real; their text is noise, so speculative acceptance on them says little about real models.

    .venv/bin/python bench/slm/bench_slm.py --out bench/slm/results.json
    .venv/bin/python bench/slm/bench_slm.py --sections server_vs_direct --rounds 31   # just the overhead check
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
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

from tiered_router.upstream_http import Endpoint, UpstreamPool
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


def runnable_threads() -> int:
    """Threads running or waiting for a CPU right now (``procs_running`` in /proc/stat), this process included;
    the instantaneous counterpart of the load average."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("procs_running "):
            return int(line.split()[1])
    return -1


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def direct_generate(llm: Any, max_tokens: int, prompt_text: str = PROMPT) -> dict[str, float]:
    """The leanest direct use of llama-cpp-python that streams text: tokenize, ``Llama.generate`` greedily,
    decode each token's bytes incrementally.

    This is the baseline the server is held to (the same work plus HTTP, queueing and metrics); both reuse the
    KV cache of the prompt prefix seen before (llama-cpp-python's default, the server's ``--prefix-cache on``).
    Times are taken when text becomes visible, as for the server's client: a token that ends inside a
    multi-byte UTF-8 character shows nothing until the character completes (random models emit such bytes).
    """
    started = time.perf_counter()
    cpu_started = time.process_time()
    first = last = None
    tokens = 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    prompt = llm.tokenize(prompt_text.encode(), add_bos=False, special=True)
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


def completion_body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}


class StreamTimer:
    """Times a streamed /v1/completions at the client, whichever HTTP client reads it.

    The client shares the machine with the server, so it does as little as it can: it splits the stream into
    events and looks for text without decoding JSON (the server writes ``"text":""`` only in the final chunk);
    only the usage event is parsed. ``cpu_s`` is the server process's CPU time for the request (model, HTTP,
    metrics, all threads).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_started = process_cpu_seconds(pid)
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.usage: dict[str, int] = {}
        self.buffer = b""

    def feed(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        *events, self.buffer = self.buffer.split(b"\n\n")
        for event in events:
            if b'"usage":{' in event:
                self.usage = json.loads(event[6:])["usage"]
            elif event.startswith(b"data: {") and b'"text":""' not in event:
                self.first = self.first or now
                self.last = now

    def result(self) -> dict[str, float]:
        first, last = self.first, self.last
        assert first is not None and last is not None and self.usage
        # Chunks can carry several tokens; the usage block has the exact count.
        tokens = self.usage["completion_tokens"]
        return {"ttft_s": first - self.started, "tokens": tokens,
                "cpu_s": process_cpu_seconds(self.pid) - self.cpu_started,
                "decode_tps": (tokens - 1) / (last - first) if tokens > 1 else float("nan")}


async def server_run(http: aiohttp.ClientSession, url: str, max_tokens: int, pid: int,
                     prompt: str = PROMPT) -> dict[str, float]:
    """The same request through the server's streaming /v1/completions, with aiohttp's client."""
    timer = StreamTimer(pid)
    async with http.post(f"{url}/v1/completions", json=completion_body(prompt, max_tokens)) as response:
        async for data in response.content.iter_any():
            timer.feed(data)
    return timer.result()


async def server_run_router_client(pool: UpstreamPool, url: str, max_tokens: int, pid: int,
                                   prompt: str = PROMPT) -> dict[str, float]:
    """`server_run` through the router's own upstream client (tiered_router.upstream_http): in a deployment the
    SLM server's client is the router sidecar, and this is how it calls the server."""
    endpoint = Endpoint.from_url(f"{url}/v1/completions", {"Content-Type": "application/json"})
    body = json.dumps(completion_body(prompt, max_tokens)).encode()
    timer = StreamTimer(pid)
    async with await pool.post(endpoint, body, "text/event-stream", 5.0) as response:
        while data := await response.read_any():
            timer.feed(data)
    return timer.result()


async def server_ttft(http: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """(sum, count) of the server's own time-to-first-token histogram (arrival to first token, no network)."""
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return (float(values["tiered_slm_time_to_first_token_seconds_sum"]),
            float(values["tiered_slm_time_to_first_token_seconds_count"]))


def start_server(model: Path, threads: int, ctx: int, extra: tuple[str, ...] = ()) -> tuple[
        subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tiered_slm", "serve", "--model", str(model), "--host", "127.0.0.1", "--port", "0",
         "--threads", str(threads), "--ctx", str(ctx), "--cache-dir", str(model.parent / "cache"), *extra],
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


def quantiles(values: list[float]) -> dict[str, float]:
    """Median and the 25th/75th percentiles (the spread a reader needs to judge a median)."""
    if len(values) < 4:
        return {"median": median(values)}
    q1, q2, q3 = statistics.quantiles(values, n=4)
    return {"median": q2, "p25": q1, "p75": q3}


# Server variants measured against the same direct runs: the defaults, and the alternatives docs/slm.md discusses.
ROUTER_CLIENT_SIDE = "server_via_router_client"
SERVERS: dict[str, tuple[str, ...]] = {
    "server": (),  # uvloop, a write every 20 ms after the first token
    "server_write_per_token": ("--stream-interval-ms", "0"),
    "server_write_per_token_asyncio_loop": ("--stream-interval-ms", "0", "--event-loop", "asyncio"),  # as before
}


async def server_vs_direct(model: Path, threads: int, ctx: int, rounds: int, max_tokens: int,
                           variants: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Rounds of back-to-back runs (direct and each server variant, `SERVERS` by default) in rotating order.

    Same model file, thread count, context size and batch size on every side, all warmed up first. Each round
    yields a ratio of decode tokens/s and a difference of time to first visible text per server; the medians
    of those per-round figures are the result (the machine's load drifts between rounds, far less within one).
    """
    llm = load_llama(model, n_ctx=ctx, threads=threads)
    servers = {name: start_server(model, threads, ctx, extra) for name, extra in (variants or SERVERS).items()}
    # The default server once more, called through the router's upstream client (see server_run_router_client).
    clients = {**{name: name for name in servers}, ROUTER_CLIENT_SIDE: "server"}
    runs: dict[str, list[dict[str, float]]] = {"direct": [], **{side: [] for side in clients}}
    pool = UpstreamPool()
    load_averages: list[float] = []
    runnable: list[float] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
            for _ in range(3):  # warm both sides alike (allocator, page cache, branch predictors, HTTP pool)
                await asyncio.to_thread(direct_generate, llm, 16)
                for process, url in servers.values():
                    await server_run(http, url, 16, process.pid)
                await server_run_router_client(pool, servers["server"][1], 16, servers["server"][0].pid)
            ttft_before = {name: await server_ttft(http, url) for name, (_process, url) in servers.items()}
            order = ["direct", *clients]
            for index in range(rounds):
                load_averages.append(os.getloadavg()[0])
                runnable.append(runnable_threads())
                rotation = order[index % len(order):] + order[:index % len(order)]
                for side in rotation:
                    if side == "direct":
                        runs[side].append(await asyncio.to_thread(direct_generate, llm, max_tokens))
                    elif side == ROUTER_CLIENT_SIDE:
                        process, url = servers[clients[side]]
                        runs[side].append(await server_run_router_client(pool, url, max_tokens, process.pid))
                    else:
                        process, url = servers[side]
                        runs[side].append(await server_run(http, url, max_tokens, process.pid))
                    await asyncio.sleep(SETTLE_S)
            ttft_after = {name: await server_ttft(http, url) for name, (_process, url) in servers.items()}
    finally:
        pool.close()
        for process, _url in servers.values():
            process.send_signal(signal.SIGTERM)
        for process, _url in servers.values():
            process.wait(timeout=60)
    del llm
    result: dict[str, Any] = {
        "model": model.name, "threads": threads, "rounds": rounds, "max_tokens": max_tokens,
        "load_average_1m": {**quantiles(load_averages), "min": min(load_averages), "max": max(load_averages)},
        "runnable_threads_at_round_start": quantiles(runnable),
        "target": {"tokens_per_s_ratio_min": 0.97, "ttft_overhead_ms_max": 2.0},
    }
    for side, values in runs.items():
        cpu = sum(r["cpu_s"] for r in values) / sum(r["tokens"] for r in values)
        result[side] = {"decode_tokens_per_s": quantiles([r["decode_tps"] for r in values]),
                        "ttft_ms": quantiles([r["ttft_s"] * 1000 for r in values]),
                        "cpu_ms_per_token": cpu * 1000,
                        "tokens_generated": sorted({int(r["tokens"]) for r in values})}
    for side, server in clients.items():
        ratios = [s["decode_tps"] / d["decode_tps"] for d, s in zip(runs["direct"], runs[side], strict=True)]
        overheads = [(s["ttft_s"] - d["ttft_s"]) * 1000 for d, s in zip(runs["direct"], runs[side], strict=True)]
        served = ttft_after[server][1] - ttft_before[server][1]
        result[side].update({
            "tokens_per_s_ratio_per_round": quantiles(ratios),
            "ttft_overhead_ms_per_round": quantiles(overheads),
            # per server process: the two clients of the default server share this figure
            "server_side_ttft_ms_mean": (ttft_after[server][0] - ttft_before[server][0]) / max(1, served) * 1000,
            "cpu_overhead_per_token": result[side]["cpu_ms_per_token"] / result["direct"]["cpu_ms_per_token"] - 1,
            "meets_target": median(ratios) >= 0.97 and median(overheads) <= 2.0,
        })
    result["raw"] = {**runs, "load_average_1m": load_averages, "runnable_threads": runnable}
    return result


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
    """Plain vs prompt-lookup vs draft-model decoding on one model, each with exact (sequential) and batched
    verification, interleaved; acceptance, speedup and identity of the greedy output to plain decoding."""
    configs: dict[str, SpeculativeConfig | None] = {"plain": None}
    for verify in ("exact", "batched"):
        configs[f"prompt-lookup/{verify}"] = SpeculativeConfig(mode="prompt-lookup", num_tokens=8, max_ngram=3,
                                                               verify=verify)
        configs[f"draft/{verify}"] = SpeculativeConfig(mode="draft", num_tokens=4, draft_model=draft,
                                                       verify=verify)
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
    for name in configs:
        if name == "plain":
            continue
        after = engines[name].proposer.snapshot()
        proposed, accepted = after.proposed - before[name].proposed, after.accepted - before[name].accepted
        diverged = next((i for i, (a, b) in enumerate(zip(outputs[name], outputs["plain"], strict=False))
                         if a != b), None)
        results[name] = {"decode_tokens_per_s_median": median(rates[name]), "speedup": median(rates[name]) / plain,
                         "acceptance_rate": accepted / proposed if proposed else 0.0, "proposed": proposed,
                         "accepted": accepted, "identical_to_plain": outputs[name] == outputs["plain"],
                         "first_divergent_token": diverged}
    return results


@contextlib.contextmanager
def weight_repacking(enabled: bool) -> Any:
    """Load models with or without llama.cpp's CPU weight repacking (``use_extra_bufts``, as ``--no-repack``).

    llama-cpp-python builds its model parameters from ``llama_model_default_params()`` and has no argument for
    this flag, so the defaults are patched while a model loads (bench only).
    """
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = enabled
        return params

    native.llama_model_default_params = patched
    try:
        yield
    finally:
        native.llama_model_default_params = original


def batch_invariance(models: dict[str, Path], threads: int) -> dict[str, Any]:
    """Largest logit difference between evaluating 8 tokens in one batch and one at a time.

    Speculative verification evaluates proposals in a batch; plain decoding evaluates one token per step.
    Greedy outputs can only be identical where these agree (or the top-2 margin is larger than the gap).
    Measured with llama.cpp's weight repacking on (the default) and off, and with F16 (default) or F32 KV cache.
    """
    import numpy as np
    from llama_cpp import GGML_TYPE_F32, Llama

    out: dict[str, Any] = {}
    for quant, path in models.items():
        out[quant] = {}
        for repack in (True, False):
            for kv in ("f16", "f32"):
                kv_type = GGML_TYPE_F32 if kv == "f32" else None
                with weight_repacking(repack):
                    llm = Llama(model_path=str(path), n_ctx=512, n_batch=512, n_ubatch=512, n_threads=threads,
                                n_threads_batch=threads, n_gpu_layers=0, logits_all=True, verbose=False,
                                type_k=kv_type, type_v=kv_type)
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
                diff = np.abs(batched - np.array(single)).max(axis=1)
                out[quant][f"repack={'on' if repack else 'off'},kv={kv}"] = {
                    "max_abs_logit_diff": float(diff.max()), "per_position": [float(x) for x in diff],
                    "bit_identical": bool(diff.max() == 0.0), "logit_std": float(np.array(single).std())}
                del llm
    return out


SECTIONS = ("server_vs_direct", "quantization", "speculative", "batch_invariance")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads on both sides (1 keeps a shared 2-core box from distorting results)")
    parser.add_argument("--rounds", type=int, default=25, help="server-vs-direct rounds (back-to-back runs)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of the other sections")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset; results of the other sections in --out are kept")
    parser.add_argument("--workdir", type=Path, help="keep the generated models here (default: temporary)")
    args = parser.parse_args()
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    started = time.perf_counter()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
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
        results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "python": platform.python_version(), "load_average_at_start": os.getloadavg()}
        results["model_shape"] = BENCH_SHAPE.__dict__
        for section in sections:
            section_started = time.perf_counter()
            if section == "server_vs_direct":
                results[section] = asyncio.run(server_vs_direct(models["Q4_K_M"], args.threads, args.ctx,
                                                                args.rounds, args.max_tokens))
            elif section == "quantization":
                results[section] = by_quantization(models, args.threads, args.ctx, args.reps, args.max_tokens)
            elif section == "speculative":
                results[section] = {quant: speculative(models[quant], draft, args.threads, args.ctx, args.reps,
                                                       args.max_tokens) for quant in ("Q8_0", "Q4_K_M")}
            else:
                results[section] = batch_invariance(models, args.threads)
            results.setdefault("section_runs", {})[section] = {
                "seconds": round(time.perf_counter() - section_started, 1), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                                  time.gmtime()),
                "load_average_at_end": os.getloadavg()}
        results["note"] = ("random-weight models: speed is real, text is noise; speculative acceptance depends on "
                           "how repetitive the noise is and says little about real models.")
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    if "server_vs_direct" in sections:
        summary = results["server_vs_direct"]
        print(json.dumps({key: value for key, value in summary.items() if key != "raw"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
