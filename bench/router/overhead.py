"""Router overhead: the same upstream called directly, through tiered-router, and through a LiteLLM proxy.

Everything is a real process on 127.0.0.1 (ports picked at runtime): a minimal OpenAI-compatible upstream that
answers at once, the router (`tiered-router serve`), and optionally LiteLLM's proxy from a separate venv
(`--litellm /tmp/litellm-venv/bin/litellm`; never a dependency of this project). For each target:
- closed loop with N concurrent clients for a few seconds: max req/s (run first);
- open loops at fixed rates (default 50 and 200 req/s, 5 s each): latency p50/p99, added latency vs direct.
Router variants: `keyword` (PII scan + keyword route: the proxy path without the neural encoder) and `builtin`
(the CLINC150-domains policy: MiniLM classification on every request). Decision latency for a 2,000-token prompt
is measured in-process with the CLINC policy.

Writes bench/router/overhead.json. Bounded: every loop has a request count and a time limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable

UPSTREAM_CODE = r"""
import json, sys
from aiohttp import web
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}).encode()
async def h(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application(); app.router.add_post("/v1/chat/completions", h); app.router.add_post("/chat/completions", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status < 500:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello, what is my account balance?"}]}
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # LiteLLM refuses to start without one
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}


async def open_loop(url: str, model: str, rate: float, count: int) -> dict[str, Any]:
    """`count` requests started every 1/rate s regardless of completions; latency of each."""
    lat: list[float] = []
    errors = 0
    conn = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=conn) as s:
        body = json.dumps({**BODY, "model": model})

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=body, headers=HEADERS,
                                  timeout=aiohttp.ClientTimeout(total=10)) as r:  # fmt: skip
                    await r.read()
                    if r.status != 200:
                        errors += 1
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            lat.append(time.perf_counter() - t0)

        for _ in range(30):  # warm-up: connections, caches
            await one()
        lat.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    ms = np.array(lat) * 1000 if lat else np.array([float("nan")])
    return {"rate": rate, "count": count, "errors": errors, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}  # fmt: skip


async def closed_loop(url: str, model: str, concurrency: int, seconds: float) -> dict[str, Any]:
    done = 0
    errors = 0
    stop = time.perf_counter() + seconds
    body = json.dumps({**BODY, "model": model})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                try:
                    async with s.post(url, data=body, headers=HEADERS,
                                      timeout=aiohttp.ClientTimeout(total=10)) as r:  # fmt: skip
                        await r.read()
                        if r.status == 200:
                            done += 1
                        else:
                            errors += 1
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"concurrency": concurrency, "seconds": round(elapsed, 2), "requests": done, "errors": errors,
            "req_per_s": round(done / elapsed, 1)}  # fmt: skip


def router_config(upstream: str, policy: str) -> dict[str, Any]:
    tiers = [
        {"name": "slm", "kind": "local", "baseURL": upstream, "model": "m",
         "pricing": {"inputPer1M": 0.05, "outputPer1M": 0.1}},
        {"name": "cloud", "kind": "cloud", "baseURL": upstream, "model": "m",
         "pricing": {"inputPer1M": 2.5, "outputPer1M": 10}},
    ]  # fmt: skip
    base: dict[str, Any] = {"schemaVersion": 1, "policy": "bench", "tiers": tiers, "defaultTier": "cloud",
                            "residency": {"namespaceClass": "unrestricted"}}  # fmt: skip
    if policy == "keyword":
        base["routes"] = [{"name": "chat", "tier": "slm", "keywords": ["hello"]}]
        base["classifier"] = {"encoder": {"kind": "lexical"}}
    else:
        spec = yaml.safe_load((REPO / "router_image/policies/clinc150-domains.yaml").read_text())["spec"]
        base["routes"] = [{**r, "tier": r["tier"]} for r in spec["routes"]]
        base["classifier"] = {"defaultThreshold": float(spec["classifier"]["threshold"])}
    return base


def decision_latency(n: int = 200) -> dict[str, Any]:
    """Decision pipeline (PII scan + residency + MiniLM classification + budget) for a ~2,000-token prompt."""
    from tiered_router.config import parse_config
    from tiered_router.decision import RoutingRequest, decide, estimate_tokens
    from tiered_router.explain import classifier_for

    config = parse_config(router_config("http://127.0.0.1:9/v1", "builtin"))
    clf = classifier_for(config)
    words = [
        "please",
        "check",
        "the",
        "balance",
        "of",
        "my",
        "savings",
        "account",
        "and",
        "tell",
        "me",
        "about",
        "recent",
        "transfers",
    ]
    prompt = " ".join(words[i % len(words)] for i in range(1600))  # ~2,000 tokens by the 4-chars rule
    req = RoutingRequest(text=prompt, model="auto", input_tokens=estimate_tokens(prompt))
    for _ in range(5):
        decide(config, clf, req)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        decide(config, clf, req)
        samples.append((time.perf_counter() - t0) * 1000)
    return {"prompt_tokens_estimate": req.input_tokens, "n": n, "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(float(np.percentile(samples, 99)), 3), "encoder": clf.encoder.name}  # fmt: skip


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="tiered-bench-"))
    try:
        up_port = free_port()
        procs.append(subprocess.Popen([PY, "-c", UPSTREAM_CODE, str(up_port)], env=env))
        upstream = f"http://127.0.0.1:{up_port}/v1"
        await wait_http(f"http://127.0.0.1:{up_port}/")
        targets: dict[str, tuple[str, str]] = {"direct": (upstream + "/chat/completions", "m")}
        for variant in args.variants:
            cfg = tmp / f"router-{variant}.json"
            cfg.write_text(json.dumps(router_config(upstream, variant)))
            port = free_port()
            cmd = ["taskset", "-c", "0"] if args.pin else []
            cmd += [PY, "-m", "tiered_router", "serve", "--config", str(cfg), "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
            procs.append(subprocess.Popen(cmd, env=env))
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            targets[f"tiered-router ({variant})"] = (f"http://127.0.0.1:{port}/v1/chat/completions", "auto")
        if args.litellm:
            port = free_port()
            lcfg = tmp / "litellm.yaml"
            lcfg.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {
                "model": "openai/m", "api_base": upstream, "api_key": "unused"}}]}))  # fmt: skip
            cmd = ["taskset", "-c", "0"] if args.pin else []
            cmd += [args.litellm, "--config", str(lcfg), "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--num_workers", "1"]
            lenv = {
                **env,
                "LITELLM_LOG": "ERROR",
                "LITELLM_MASTER_KEY": MASTER_KEY,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            }
            procs.append(subprocess.Popen(cmd, env=lenv, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))  # fmt: skip
            await wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
            targets[f"litellm proxy {args.litellm_version}"] = (f"http://127.0.0.1:{port}/v1/chat/completions", "m")
        results: dict[str, Any] = {}
        for name, (url, model) in targets.items():
            # closed loop first: an open loop above capacity leaves a backlog that would distort it
            cl = await closed_loop(url, model, args.concurrency, args.seconds)
            await asyncio.sleep(2)
            loops = {}
            for rate in args.rates:
                loops[f"{rate:g}"] = await open_loop(url, model, rate, int(rate * args.open_seconds))
                await asyncio.sleep(2)
            results[name] = {"closed_loop": cl, "open_loop": loops}
            print(name, cl, loops, file=sys.stderr, flush=True)
        base = results["direct"]["open_loop"]
        for name, r in results.items():
            if name == "direct":
                continue
            for rate, ol in r["open_loop"].items():
                ol["added_p50_ms"] = round(ol["p50_ms"] - base[rate]["p50_ms"], 3)
                ol["added_p99_ms"] = round(ol["p99_ms"] - base[rate]["p99_ms"], 3)
                ol["saturated"] = ol["errors"] > 0 or ol["p50_ms"] > 1000
        return results
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="*", default=[50.0, 200.0], help="open-loop rates (req/s)")
    parser.add_argument("--open-seconds", type=float, default=5.0, help="duration of each open loop")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--variants", nargs="*", default=["keyword", "builtin"])
    parser.add_argument("--litellm", help="path of a litellm executable (separate venv)")
    parser.add_argument("--litellm-version", default="")
    parser.add_argument("--pin", action="store_true", help="pin each proxy to CPU 0 (one core)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("overhead.json")))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the child processes
    results = asyncio.run(main_async(args))
    out = {
        "machine": f"{os.cpu_count()} CPUs shared with other workloads (load average {os.getloadavg()[0]:.1f})",
        "settings": vars(args),
        "targets": results,
        "decision_latency_2000_tokens": decision_latency(),
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
