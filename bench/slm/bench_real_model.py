"""The SLM server on the real model (SmolLM2-135M-Instruct, Q4_1), every section in one run:

* server vs llama-cpp-python direct: decode tokens/s ratio and time-to-first-token overhead (bench_slm.py's
  method: back-to-back rounds in rotating order, medians of per-round figures);
* prompt-lookup speculative decoding on an input-copying workload (chat prompts that ask to copy, correct or
  extract text from the prompt): speedup, acceptance rate and whether greedy output is identical to plain
  decoding, with exact (sequential) and batched verification; and how far Q4_1's logits for a batch of tokens are
  from one-at-a-time evaluation (what decides whether batched verification can be exact);
* what a batch costs (`batch_cost`): k tokens in one llama.cpp call against k one-token calls (what decides
  whether batched verification can be faster);
* end-to-end latency through the router (`tiered-router serve` in front of `tiered-slm serve`) at 1, 2 and 4
  concurrent clients: p50 / p95 and requests per second;
* structured outputs on the labelled extraction set (bench/slm/extraction_set.py, 200 items): JSON validity and
  field-level accuracy with the grammar (response_format json_schema) and without it (the same prompt asking for
  JSON, no response_format).

    flock /tmp/tiered-bench.lock .venv/bin/python bench/slm/bench_real_model.py --out bench/slm/real_model.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
from bench_slm import batch_invariance, load_warm, server_vs_direct, start_server
from extraction_set import ExtractionItem, extraction_items, field_matches

from tiered_dev import models
from tiered_slm.engine import GenerationJob, SamplingParams
from tiered_slm.speculative import SpeculativeConfig

SETTLE_S = 0.3
COPYING_PROMPTS = [
    "Copy this sentence exactly: The quarterly report shows revenue of 4.2 million euros, up 12 percent on the "
    "previous quarter, driven by strong sales in Spain and Portugal.",
    "Fix the spelling and repeat the rest unchanged: Teh meeting with the desing team is moved to Thursday "
    "afternoon at three o'clock in room Orion, please bring the latest drafts.",
    "Extract the address from: Please send the parcel to Maria Lopez, Calle Mayor 12, 46001 Valencia, Spain, "
    "before the end of the month.",
    "Repeat the following list, one item per line: apples, pears, oranges, bananas, cherries, plums, grapes.",
    "Rewrite in the past tense: The team ships the release on Monday, the users test it on Tuesday, and the "
    "support desk answers their questions on Wednesday.",
    "Copy the customer's message word for word: Hello, my order 4471 arrived without the charging cable, could "
    "you send one to the same address?",
]
ROUTER_PROMPTS = ["What is the capital of France?", "Name three colours.", "Give me a fun fact about the sea.",
                  "How do I boil an egg?", "Write a short greeting for a birthday card.",
                  "What is a good name for a cat?"]


# --- speculative decoding -------------------------------------------------------------------------------------------


def run_chat(engine: Any, prompt: str, max_tokens: int) -> tuple[float, float | None, tuple[int, ...]]:
    """(seconds, decode tokens/s, tokens) of one greedy chat answer."""
    tokens, stops = engine.render_chat([{"role": "user", "content": prompt}])
    started = time.perf_counter()
    done = engine.run(GenerationJob(tokens, SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=stops)),
                      lambda _event: None)
    seconds = time.perf_counter() - started
    time.sleep(SETTLE_S)
    return seconds, done.decode_tokens_per_second, done.token_ids


def speculative_copying(model: Path, threads: int, ctx: int, reps: int, max_tokens: int) -> dict[str, Any]:
    """Plain vs prompt lookup (exact and batched verification) on the copying prompts, interleaved."""
    configs: dict[str, SpeculativeConfig | None] = {
        "plain": None,
        "prompt-lookup/exact": SpeculativeConfig(mode="prompt-lookup", num_tokens=8, max_ngram=3),
        "prompt-lookup/batched": SpeculativeConfig(mode="prompt-lookup", num_tokens=8, max_ngram=3,
                                                   verify="batched"),
    }
    engines = {name: load_warm(model, threads, ctx, config)[0] for name, config in configs.items()}
    before = {name: engine.proposer.snapshot() for name, engine in engines.items() if engine.proposer}
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    outputs: dict[str, dict[str, tuple[int, ...]]] = {name: {} for name in configs}
    for _ in range(reps):
        for prompt in COPYING_PROMPTS:
            for name, engine in engines.items():
                took, rate, tokens = run_chat(engine, prompt, max_tokens)
                seconds[name].append(took)
                if rate is not None:
                    rates[name].append(rate)
                outputs[name][prompt] = tokens
    plain_s, plain_rate = statistics.median(seconds["plain"]), statistics.median(rates["plain"])
    result: dict[str, Any] = {"prompts": len(COPYING_PROMPTS), "reps": reps, "max_tokens": max_tokens,
                              "plain": {"seconds_per_answer_median": plain_s, "decode_tokens_per_s_median": plain_rate,
                                        "answer_tokens": [len(t) for t in outputs["plain"].values()]}}
    for name in configs:
        if name == "plain":
            continue
        after = engines[name].proposer.snapshot()
        proposed, accepted = after.proposed - before[name].proposed, after.accepted - before[name].accepted
        identical = sum(outputs[name][p] == outputs["plain"][p] for p in COPYING_PROMPTS)
        divergent = {p[:40]: next((i for i, (a, b) in enumerate(zip(outputs[name][p], outputs["plain"][p],
                                                                    strict=False)) if a != b), None)
                     for p in COPYING_PROMPTS if outputs[name][p] != outputs["plain"][p]}
        result[name] = {
            "seconds_per_answer_median": statistics.median(seconds[name]),
            "decode_tokens_per_s_median": statistics.median(rates[name]),
            "speedup_seconds_per_answer": plain_s / statistics.median(seconds[name]),
            "speedup_decode_tokens_per_s": statistics.median(rates[name]) / plain_rate,
            "acceptance_rate": accepted / proposed if proposed else 0.0, "proposed": proposed, "accepted": accepted,
            "greedy_output_identical": f"{identical}/{len(COPYING_PROMPTS)}",
            "first_divergent_token": divergent,
        }
    return result


def batch_cost(model: Path, threads: int, ctx: int, reps: int = 15) -> dict[str, Any]:
    """Why batched verification pays off or not: the time to evaluate k tokens in one llama.cpp call (what
    verifying k proposals costs) against k one-token calls (plain decoding), after the same prompt, interleaved.
    A proposal of k tokens with n accepted saves time only when the batch costs less than n + 1 single steps."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=ctx, n_batch=512, n_threads=threads, n_threads_batch=threads,
                n_gpu_layers=0, logits_all=True, verbose=False)  # logits for every row, as speculation needs
    prompt = llm.tokenize(COPYING_PROMPTS[0].encode(), add_bos=False, special=True)
    result: dict[str, Any] = {"prompt_tokens": len(prompt), "reps": reps}
    for k in (1, 2, 4, 8):
        extra = prompt[:k]  # real text tokens continuing the prompt
        batched: list[float] = []
        single: list[float] = []
        for _ in range(reps):
            llm.reset()
            llm.eval(prompt)
            started = time.perf_counter()
            llm.eval(extra)
            batched.append(time.perf_counter() - started)
            llm.reset()
            llm.eval(prompt)
            started = time.perf_counter()
            for token in extra:
                llm.eval([token])
            single.append(time.perf_counter() - started)
        result[f"k={k}"] = {"batch_ms_median": statistics.median(batched) * 1000,
                            "single_steps_ms_median": statistics.median(single) * 1000,
                            "batch_over_single": statistics.median(batched) / statistics.median(single)}
    del llm
    return result


# --- through the router -----------------------------------------------------------------------------------------------


def start_router(slm_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    config = {"schemaVersion": 1, "policy": "bench", "defaultTier": "slm",
              "tiers": [{"name": "slm", "kind": "local", "baseURL": f"{slm_url}/v1", "model": "slm",
                         "timeouts": {"connectMs": 1000, "firstByteMs": 120000, "totalMs": 300000}}],
              "fallback": {"retries": 0}}
    path = workdir / "router.json"
    path.write_text(json.dumps(config))
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "tiered_router", "serve", "--config", str(path), "--host",
                                "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("router did not become ready")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def through_router(router_url: str, concurrency: int, requests: int, max_tokens: int) -> dict[str, Any]:
    """`requests` chat completions by `concurrency` closed-loop clients; latencies at the client."""
    latencies: list[float] = []
    queue = list(range(requests))

    async def client(http: aiohttp.ClientSession) -> None:
        while queue:
            n = queue.pop()
            body = {"model": "auto", "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": ROUTER_PROMPTS[n % len(ROUTER_PROMPTS)]}]}
            started = time.perf_counter()
            async with http.post(f"{router_url}/v1/chat/completions", json=body) as response:
                await response.read()
                assert response.status == 200, response.status
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"concurrency": concurrency, "requests": len(latencies), "max_tokens": max_tokens,
            "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * statistics.quantiles(ordered, n=20, method="inclusive")[18],
            "max_ms": 1000 * ordered[-1], "requests_per_s": len(latencies) / wall,
            "load_average_1m": os.getloadavg()[0]}


# --- structured outputs -----------------------------------------------------------------------------------------------


def _extract(text: str) -> Any:
    """The answer as JSON when it is JSON (strictly); else None."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _lenient(text: str) -> Any:
    """The first {...} block of the answer, for a lenient reading of free-text answers."""
    start, end = text.find("{"), text.rfind("}")
    return _extract(text[start:end + 1]) if 0 <= start < end else None


async def structured_quality(slm_url: str, items: list[ExtractionItem], max_tokens: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        for mode in ("grammar", "no_grammar"):
            valid = lenient_valid = right = fields = errors = 0
            seconds: list[float] = []
            ms_per_token: list[float] = []
            tokens: list[int] = []
            for item in sorted(items, key=lambda i: i.kind):  # consecutive prompts share their system prompt
                body: dict[str, Any] = {"model": "slm", "messages": item.messages(), "temperature": 0,
                                        "max_tokens": max_tokens}
                if mode == "grammar":
                    body["response_format"] = item.response_format()
                started = time.perf_counter()
                async with http.post(f"{slm_url}/v1/chat/completions", json=body) as response:
                    answer = await response.json()
                seconds.append(time.perf_counter() - started)
                fields += len(item.expected)
                if response.status != 200:
                    errors += 1
                    continue
                text = answer["choices"][0]["message"]["content"] or ""
                completion = answer["usage"]["completion_tokens"]
                tokens.append(completion)
                if completion:
                    ms_per_token.append(seconds[-1] * 1000 / completion)
                validator = jsonschema.Draft202012Validator(item.schema)
                value = _extract(text)
                if value is not None and validator.is_valid(value):
                    valid += 1
                loose = value if value is not None else _lenient(text)
                if loose is not None and validator.is_valid(loose):
                    lenient_valid += 1
                if isinstance(loose, dict):
                    right += sum(field_matches(want, loose.get(key)) for key, want in item.expected.items())
            results[mode] = {"items": len(items), "valid_json_matching_schema": valid,
                             "valid_after_extracting_a_brace_block": lenient_valid, "http_errors": errors,
                             "field_accuracy": right / fields, "fields": fields,
                             "seconds_per_item_median": statistics.median(seconds),
                             "completion_tokens_median": statistics.median(tokens) if tokens else None,
                             "ms_per_completion_token_median": (statistics.median(ms_per_token)
                                                                if ms_per_token else None)}
    if results["grammar"]["ms_per_completion_token_median"] and results["no_grammar"]["ms_per_completion_token_median"]:
        # What the grammar costs per generated token (the grammar answers are also shorter: no prose around them).
        results["grammar_ms_per_token_ratio"] = (results["grammar"]["ms_per_completion_token_median"]
                                                 / results["no_grammar"]["ms_per_completion_token_median"])
    return results


# --- main -------------------------------------------------------------------------------------------------------------


SECTIONS = ("server_vs_direct", "speculative", "batch_cost", "router_latency", "structured")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("real_model.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=15, help="server-vs-direct rounds")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens per server-vs-direct run")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of the copying prompts")
    parser.add_argument("--router-requests", type=int, default=40, help="requests per concurrency level")
    parser.add_argument("--items", type=int, default=200, help="extraction items")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    args = parser.parse_args()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    started = time.perf_counter()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    with tempfile.TemporaryDirectory(prefix="slm-real-bench-") as tmp:
        root = Path(tmp)
        smol = models.SMOLLM2_135M_INSTRUCT
        model = models.fill_model_volume(root, f"pvc://models/{smol.filename}", smol.sha256).path
        results["model"] = {"file": smol.filename, "sha256": smol.sha256, "package": smol.requirement,
                            "quantization": smol.quantization, "bytes": model.stat().st_size}
        whole_run = set(sections) == set(SECTIONS)  # a partial run keeps the whole run's figures; see section_runs
        if whole_run or "machine" not in results:
            results["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(),
                                  "python": platform.python_version(), "load_average_at_start": os.getloadavg()}
        for section in sections:
            section_started = time.perf_counter()
            if section == "server_vs_direct":
                results[section] = asyncio.run(server_vs_direct(model, args.threads, args.ctx, args.rounds,
                                                                args.max_tokens, variants={"server": ()}))
                results[section].pop("raw", None)
            elif section == "speculative":
                results[section] = speculative_copying(model, args.threads, args.ctx, args.reps, 96)
                results[section]["batch_invariance_q4_1"] = batch_invariance({"Q4_1": model}, args.threads)["Q4_1"]
            elif section == "batch_cost":
                results[section] = batch_cost(model, args.threads, args.ctx)
            elif section in ("router_latency", "structured"):
                slm, slm_url = start_server(model, args.threads, args.ctx)
                try:
                    if section == "router_latency":
                        router, router_url = start_router(slm_url, root)
                        try:
                            results[section] = [asyncio.run(through_router(router_url, c, args.router_requests, 32))
                                                for c in (1, 2, 4)]
                        finally:
                            router.send_signal(signal.SIGTERM)
                            router.wait(timeout=30)
                    else:
                        results[section] = asyncio.run(structured_quality(slm_url, extraction_items(args.items), 300))
                finally:
                    slm.send_signal(signal.SIGTERM)
                    slm.wait(timeout=60)
            else:
                parser.error(f"unknown section {section}; choose from {SECTIONS}")
            results.setdefault("section_runs", {})[section] = {
                "seconds": round(time.perf_counter() - section_started, 1),
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_average_at_end": os.getloadavg()}
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    if whole_run:
        results["bench_seconds"] = round(time.perf_counter() - started, 1)
        results["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k in sections}, indent=2, default=str)[:6000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
