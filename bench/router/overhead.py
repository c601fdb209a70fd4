"""Router overhead: the same upstream called directly, through tiered-router, and through a LiteLLM proxy.

Everything is a real process on 127.0.0.1 (ports picked at runtime): a minimal OpenAI-compatible upstream that
answers at once, one `tiered-router serve` per variant, and optionally LiteLLM's proxy from a separate venv
(`--litellm /tmp/litellm-venv/bin/litellm`; never a dependency of this project).

Built for a small, shared, noisy machine:
- for the closed loops (max req/s) each proxy (router variants, LiteLLM) is pinned to CPU 0 (`taskset`), the
  upstream and this load generator to the other CPUs, so "req/s on one core" means what it says (`--no-pin` to turn
  off); the open loops (latency) run unpinned for every target alike (see `main_async`);
- every measurement is repeated `--reps` times and the targets are interleaved within each repetition (direct,
  router, LiteLLM, direct, ...), so a burst of load from elsewhere hits all of them alike; figures are medians;
- added latency = median over repetitions of (target p50/p99 - direct p50/p99 measured in the same repetition);
- max req/s is reported twice: wall-clock (closed loop, `--concurrency` clients) and per CPU-second the proxy
  process itself consumed (/proc utime+stime), which other processes on the core cannot inflate;
- the 1-minute load average is recorded before, during (each repetition) and after.

A "floor" target (`--no-floor` to skip) is the router's own HTTP server (tiered_http) and upstream client forwarding
bytes and doing nothing else: what any Python proxy hop costs here; a second floor does the same on aiohttp's server.
Router variants: `keyword` (PII scan + a keyword route: the
proxy path with the cheapest decision) and one per `--policy FILE` (a RoutingPolicy manifest such as
router_image/policies/clinc150-domains.yaml, with the encoder the manifest names unless `--policy-encoder`
overrides it). `--baseline-src DIR` adds the keyword variant
run from another copy of the package (e.g. the previous commit's router_image/) for before/after in one run.
`--servers uvicorn granian-asgi granian-rsgi` adds the keyword router's request logic (`RouterService.handle`)
on other HTTP servers, through the bare ASGI/RSGI callables of bench/router/asgi_router.py: uvicorn with httptools
and uvloop, granian (Rust HTTP, one worker, one runtime thread) with its ASGI and its native RSGI interface.
Decision latency for a ~2,000-token prompt is measured in-process with the first policy.
The upstream clients (aiohttp's, httpx's when installed, and the router's own) are compared in CPU µs per request
against the same upstream, in this process.

Writes bench/router/overhead.json. Bounded: every loop has a request count and a time limit; open loops above a
target's measured closed-loop capacity are skipped and reported as saturated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
BENCH = Path(__file__).resolve().parent
PY = sys.executable
DEFAULT_POLICY = REPO / "router_image/policies/clinc150-domains.yaml"

UPSTREAM_CODE = r"""
import json, sys
from aiohttp import web
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}).encode()
async def h(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application(); app.router.add_post("/v1/chat/completions", h); app.router.add_post("/chat/completions", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

# The floor: the router's own HTTP server (tiered_http) and upstream client, forwarding bytes with nothing else (no
# parsing, decision, metrics or header work). Router minus floor = what the routing itself costs; floor minus direct
# = what any Python proxy hop costs on this machine. The same floor on aiohttp's server (the router's server until
# this stop) is measured beside it.
FLOOR_CODE = r"""
import asyncio, sys
from tiered_http import Response, Server
from tiered_router.upstream_http import Endpoint, UpstreamPool
import uvloop
EP = Endpoint.from_url(sys.argv[2], {"Content-Type": "application/json"})
async def main():
    pool = UpstreamPool()
    async def h(request):
        if request.path == "/readyz":
            return Response(text="ok")
        body = await request.read()
        async with await pool.post(EP, body, "*/*", 2.0) as r:
            data = await r.read()
        return Response(body=data, status=r.status, content_type="application/json")
    server = Server(h)
    await server.listen("127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""

FLOOR_AIOHTTP_CODE = r"""
import sys
from aiohttp import web
from tiered_router.upstream_http import Endpoint, UpstreamPool
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
EP = Endpoint.from_url(sys.argv[2], {"Content-Type": "application/json"})
POOL = UpstreamPool()
async def h(request):
    body = await request.read()
    async with await POOL.post(EP, body, "*/*", 2.0) as r:
        data = await r.read()
    return web.Response(body=data, status=r.status, content_type="application/json")
app = web.Application(); app.router.add_post("/v1/chat/completions", h)
app.router.add_get("/readyz", lambda request: web.Response(text="ok"))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

# The floor with a well-kept upstream client instead of upstream_http: aiohttp's ClientSession (as the router used it
# before upstream_http) and httpx's AsyncClient, same server, same work.
FLOOR_CLIENT_CODE = r"""
import asyncio, sys
from tiered_http import Response, Server
import uvloop
URL, CLIENT = sys.argv[2], sys.argv[3]
async def main():
    if CLIENT == "aiohttp":
        import aiohttp
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, limit_per_host=256,
                                                                       keepalive_timeout=60))
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
        async def forward(body):
            async with session.post(URL, data=body, headers={"Content-Type": "application/json"},
                                    timeout=timeout) as r:
                return r.status, await r.read()
    else:
        import httpx
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256,
                                                       keepalive_expiry=60), timeout=httpx.Timeout(10, connect=2))
        async def forward(body):
            r = await client.post(URL, content=body, headers={"Content-Type": "application/json"})
            return r.status_code, r.content
    async def h(request):
        if request.path == "/readyz":
            return Response(text="ok")
        status, data = await forward(await request.read())
        return Response(body=data, status=status, content_type="application/json")
    server = Server(h)
    await server.listen("127.0.0.1", int(sys.argv[1]))
    await asyncio.Event().wait()
uvloop.run(main())
"""

BODY = {"model": "auto", "messages": [{"role": "user", "content": "hello, what is my account balance?"}]}
DATA = Path("/work/shared/data") if Path("/work/shared/data").exists() else REPO.parent / "shared" / "data"
N_PROMPTS = 3000


def prompts() -> list[str]:
    """The prompts the load loops send, one after another: CLINC150's val utterances (3,000 different short
    questions), so a classifier's per-word caches see new words as real traffic does rather than one prompt
    answered from warm caches; the single BODY prompt when the shared data is not there."""
    path = DATA / "clinc150" / "data_full.json"
    if not path.exists():
        return [BODY["messages"][0]["content"]]
    return [text for text, _ in json.loads(path.read_text())["val"][:N_PROMPTS]]


def bodies(model: str) -> list[str]:
    return [json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}) for text in PROMPTS]


PROMPTS = prompts()
MASTER_KEY = "sk-bench-0123456789abcdef0123456789abcdef"  # LiteLLM refuses to start without one
HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def _tree(pid: int) -> list[int]:
    """`pid` and all its descendants (LiteLLM may run its server in a child process)."""
    out = [pid]
    for p in out:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process tree, from /proc."""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def place(pids: list[int], cpus: list[int]) -> None:
    """Set the CPU affinity of every thread of every process in the trees of `pids`."""
    for root in pids:
        for pid in _tree(root):
            subprocess.run(["taskset", "-a", "-p", "-c", ",".join(map(str, cpus)), str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # fmt: skip


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


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


async def open_loop(url: str, model: str, rate: float, count: int) -> dict[str, Any]:
    """`count` requests started every 1/rate s regardless of completions; latency of each (ms)."""
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        texts = bodies(model)
        sent = 0

        async def one(record: bool = True) -> None:
            nonlocal errors, sent
            body = texts[sent % len(texts)]
            sent += 1
            t0 = time.perf_counter()
            try:
                async with s.post(url, data=body, headers=HEADERS,
                                  timeout=aiohttp.ClientTimeout(total=10)) as r:  # fmt: skip
                    await r.read()
                    if r.status != 200:
                        errors += record
                        return
            except (aiohttp.ClientError, TimeoutError):
                errors += record
                return
            if record:
                lat.append((time.perf_counter() - t0) * 1000)

        for _ in range(30):  # warm-up: connections, caches
            await one(record=False)
        tasks = []
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return {"count": count, "errors": errors, "latencies_ms": lat}


async def closed_loop(url: str, model: str, concurrency: int, seconds: float, pid: int | None) -> dict[str, Any]:
    done = 0
    errors = 0
    texts = bodies(model)
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        for body in texts[-20:]:  # warm-up
            async with s.post(url, data=body, headers=HEADERS) as r:
                await r.read()
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, errors, sent
            while time.perf_counter() < stop:
                body = texts[sent % len(texts)]
                sent += 1
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

        cpu0 = cpu_seconds(pid) if pid else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    return {"requests": done, "errors": errors, "seconds": elapsed, "cpu_s": cpu}


async def client_cpu(url: str, n: int = 3000, reps: int = 3, conc: int = 8) -> dict[str, Any]:
    """CPU µs per request of the two upstream clients the router could use (aiohttp's ClientSession, configured as
    the router used it, and tiered_router.upstream_http), same upstream, same process, interleaved."""
    from tiered_router.upstream_http import Endpoint, UpstreamPool

    body = json.dumps({**BODY, "model": "m"}).encode()

    async def with_aiohttp() -> float:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60)
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
        async with aiohttp.ClientSession(connector=connector) as s:

            async def worker(k: int) -> None:
                for _ in range(k):
                    r = await asyncio.wait_for(
                        s.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=timeout), 5
                    )
                    async with r:
                        await r.read()

            await worker(50)
            t0 = time.process_time()
            await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
            return (time.process_time() - t0) / n * 1e6

    async def with_lean() -> float:
        pool = UpstreamPool()
        ep = Endpoint.from_url(url, {"Content-Type": "application/json"})

        async def worker(k: int) -> None:
            for _ in range(k):
                async with asyncio.timeout(5):
                    r = await pool.post(ep, body, "*/*", 2.0)
                async with r, asyncio.timeout(5):
                    await r.read()

        await worker(50)
        t0 = time.process_time()
        await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
        pool.close()
        return (time.process_time() - t0) / n * 1e6

    async def with_httpx() -> float:
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256, keepalive_expiry=60)
        async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(10, connect=2)) as client:

            async def worker(k: int) -> None:
                for _ in range(k):
                    r = await client.post(url, content=body, headers={"Content-Type": "application/json"})
                    r.read()

            await worker(50)
            t0 = time.process_time()
            await asyncio.gather(*(worker(n // conc) for _ in range(conc)))
            return (time.process_time() - t0) / n * 1e6

    clients: dict[str, Any] = {"aiohttp.ClientSession": with_aiohttp, "tiered_router.upstream_http": with_lean}
    try:
        import httpx  # noqa: F401

        clients["httpx.AsyncClient"] = with_httpx
    except ImportError:
        pass
    runs: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(reps):
        for name, run in clients.items():
            runs[name].append(await run())
    return {k: {"cpu_us_per_request_median": round(statistics.median(v), 1), "runs": [round(x, 1) for x in v]}
            for k, v in runs.items()}  # fmt: skip


def router_config(
    upstream: str, variant: str, policy: Path | None = None, encoder: str | None = None
) -> dict[str, Any]:
    tiers = [
        {"name": "slm", "kind": "local", "baseURL": upstream, "model": "m",
         "pricing": {"inputPer1M": 0.05, "outputPer1M": 0.1}},
        {"name": "cloud", "kind": "cloud", "baseURL": upstream, "model": "m",
         "pricing": {"inputPer1M": 2.5, "outputPer1M": 10}},
    ]  # fmt: skip
    base: dict[str, Any] = {"schemaVersion": 1, "policy": "bench", "tiers": tiers, "defaultTier": "cloud",
                            "residency": {"namespaceClass": "unrestricted"}}  # fmt: skip
    if variant == "keyword":
        base["routes"] = [{"name": "chat", "tier": "slm", "keywords": ["hello"]}]
        base["classifier"] = {"encoder": {"kind": "lexical"}}
        return base
    assert policy is not None
    from tiered_router.evaluate import config_from_policy

    # The policy's routes and classifier exactly as `tiered-router eval` reads them; tiers point at the upstream.
    rendered = config_from_policy(yaml.safe_load(policy.read_text())).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    names = [t["name"] for t in rendered["tiers"]]
    base["tiers"] = [t for t in tiers if t["name"] in names] + [
        {"name": n, "kind": "local", "baseURL": upstream, "model": "m"} for n in names if n not in ("slm", "cloud")
    ]
    base["defaultTier"] = rendered["defaultTier"]
    base["routes"] = rendered["routes"]
    base["classifier"] = rendered["classifier"]
    if encoder:
        base["classifier"]["encoder"] = {"kind": encoder}
    return base


def decision_latency(policy: Path, encoder: str | None, n: int = 200) -> dict[str, Any]:
    """Decision pipeline (PII scan + residency + classification + budget) for a ~2,000-token prompt, in-process."""
    from tiered_router.config import parse_config
    from tiered_router.decision import RoutingRequest, decide, estimate_tokens
    from tiered_router.explain import classifier_for

    config = parse_config(router_config("http://127.0.0.1:9/v1", "policy", policy, encoder))
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
    return {"policy": str(policy.relative_to(REPO) if policy.is_relative_to(REPO) else policy),
            "prompt_tokens_estimate": req.input_tokens, "n": n, "p50_ms": round(statistics.median(samples), 3),
            "p99_ms": pct(samples, 99), "encoder": clf.encoder.name}  # fmt: skip


def summarize(raw: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    """Medians over repetitions; added latency from same-repetition differences against `direct`."""
    out: dict[str, Any] = {}
    direct = raw["direct"]
    for name, r in raw.items():
        cl = r["closed"]
        wall = [c["requests"] / c["seconds"] for c in cl]
        per_cpu = [c["requests"] / c["cpu_s"] for c in cl if c["cpu_s"] > 0.2]
        entry: dict[str, Any] = {
            "closed_loop": {
                "req_per_s_median": round(statistics.median(wall), 1),
                "req_per_s_runs": [round(w, 1) for w in wall],
                "errors": sum(c["errors"] for c in cl),
            }
        }
        if per_cpu:
            entry["closed_loop"]["req_per_cpu_s_median"] = round(statistics.median(per_cpu), 1)
            entry["closed_loop"]["cpu_share_median"] = round(
                statistics.median(c["cpu_s"] / c["seconds"] for c in cl), 2
            )
        loops: dict[str, Any] = {}
        for rate in rates:
            key = f"{rate:g}"
            runs = r["open"].get(key)
            if runs is None:
                loops[key] = {"saturated": True, "skipped": "rate above the measured closed-loop capacity"}
                continue
            pooled = [x for run in runs for x in run["latencies_ms"]]
            per_rep = [(pct(run["latencies_ms"], 50), pct(run["latencies_ms"], 99)) for run in runs]
            o: dict[str, Any] = {
                "rate": rate,
                "reps": len(runs),
                "requests": sum(run["count"] for run in runs),
                "errors": sum(run["errors"] for run in runs),
                "p50_ms": pct(pooled, 50),
                "p99_ms": pct(pooled, 99),
                "p50_ms_runs": [p for p, _ in per_rep],
                "p99_ms_runs": [p for _, p in per_rep],
            }
            if name != "direct":
                base = [(pct(run["latencies_ms"], 50), pct(run["latencies_ms"], 99)) for run in direct["open"][key]]
                o["added_p50_ms"] = round(statistics.median(t[0] - d[0] for t, d in zip(per_rep, base, strict=True)), 3)
                o["added_p99_ms"] = round(statistics.median(t[1] - d[1] for t, d in zip(per_rep, base, strict=True)), 3)
                o["added_p50_ms_runs"] = [round(t[0] - d[0], 3) for t, d in zip(per_rep, base, strict=True)]
                o["added_p99_ms_runs"] = [round(t[1] - d[1], 3) for t, d in zip(per_rep, base, strict=True)]
                o["saturated"] = o["errors"] > 0 or o["p50_ms"] > 1000
            loops[key] = o
        entry["open_loop"] = loops
        out[name] = entry
    return out


def start(cmd: list[str], env: dict[str, str], quiet: bool = False, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    sink = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, stdout=sink, stderr=sink, cwd=cwd)


def server_command(server: str, port: int) -> list[str]:
    """The keyword router's logic (bench/router/asgi_router.py) on another HTTP server, one process, uvloop."""
    if server == "uvicorn":
        code = ("import uvicorn, sys; uvicorn.run('asgi_router:app', host='127.0.0.1', port=int(sys.argv[1]), "
                "loop='uvloop', http='httptools', lifespan='off', access_log=False, log_level='warning', "
                "proxy_headers=False, server_header=False, timeout_keep_alive=75)")  # fmt: skip
        return [PY, "-c", code, str(port)]
    if server in ("granian-asgi", "granian-rsgi"):
        interface = server.split("-")[1]
        target = "asgi_router:app" if interface == "asgi" else "asgi_router:rsgi_app"
        return [PY, "-m", "granian", "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--runtime-threads", "1", "--runtime-mode", "st", "--loop", "uvloop", "--http", "1",
                "--no-ws", "--log-level", "warning", "--no-access-log", target]  # fmt: skip
    raise ValueError(f"unknown server {server!r} (uvicorn, granian-asgi, granian-rsgi)")


async def main_async(args: argparse.Namespace, loads: dict[str, Any]) -> dict[str, Any]:
    procs: list[subprocess.Popen[bytes]] = []
    cpus = sorted(os.sched_getaffinity(0))
    rest = [c for c in cpus if c != cpus[0]] or cpus
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    tmp = Path(tempfile.mkdtemp(prefix="tiered-bench-"))
    try:
        up_port = free_port()
        procs.append(start([PY, "-c", UPSTREAM_CODE, str(up_port)], env))
        upstream = f"http://127.0.0.1:{up_port}/v1"
        await wait_http(f"http://127.0.0.1:{up_port}/")
        targets: dict[str, tuple[str, str, int | None]] = {"direct": (upstream + "/chat/completions", "m", None)}
        variants: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        if args.floor:
            floors = {"floor: bare forwarding proxy": FLOOR_CODE}
            if args.aiohttp_floor:
                floors["floor on aiohttp's server"] = FLOOR_AIOHTTP_CODE
            for client in args.client_floors:
                floors[f"floor with {client}'s client"] = FLOOR_CLIENT_CODE
            for label, code in floors.items():
                port = free_port()
                client_arg = [label.split(" with ")[1].split("'")[0]] if " with " in label else []
                procs.append(start([PY, "-c", code, str(port), upstream + "/chat/completions", *client_arg], env))
                await wait_http(f"http://127.0.0.1:{port}/readyz")
                targets[label] = (f"http://127.0.0.1:{port}/v1/chat/completions", "m", procs[-1].pid)
        if "keyword" in args.variants:
            variants.append(("tiered-router (keyword)", router_config(upstream, "keyword"), env))
        if args.baseline_src:
            benv = {**env, "PYTHONPATH": str(Path(args.baseline_src).resolve())}
            variants.append(("baseline router (keyword)", router_config(upstream, "keyword"), benv))
        for policy in args.policy:
            label = Path(policy).stem + (f", encoder {args.policy_encoder}" if args.policy_encoder else "")
            variants.append(
                (f"tiered-router ({label})", router_config(upstream, "policy", Path(policy), args.policy_encoder), env)
            )
        for i, (name, cfg, venv) in enumerate(variants):
            path = tmp / f"router-{i}.json"
            path.write_text(json.dumps(cfg))
            port = free_port()
            cmd = [PY, "-m", "tiered_router", "serve", "--config", str(path), "--host", "127.0.0.1",
                   "--port", str(port), "--log-level", "WARNING"]  # fmt: skip
            # cwd: `python -m` puts it first on sys.path, where it must not shadow a baseline's packages
            procs.append(start(cmd, venv, cwd=tmp))
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            targets[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", "auto", procs[-1].pid)
        for server in args.servers:
            path = tmp / f"router-{server}.json"
            path.write_text(json.dumps(router_config(upstream, "keyword")))
            port = free_port()
            senv = {**env, "TIERED_BENCH_ROUTER_CONFIG": str(path)}
            procs.append(start(server_command(server, port), senv, cwd=BENCH))
            await wait_http(f"http://127.0.0.1:{port}/readyz")
            targets[f"tiered-router (keyword) on {server}"] = (
                f"http://127.0.0.1:{port}/v1/chat/completions", "auto", procs[-1].pid)
        if args.litellm:
            port = free_port()
            lcfg = tmp / "litellm.yaml"
            lcfg.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {
                "model": "openai/m", "api_base": upstream, "api_key": "unused"}}]}))  # fmt: skip
            cmd = [args.litellm, "--config", str(lcfg), "--host", "127.0.0.1", "--port", str(port),
                   "--num_workers", "1"]  # fmt: skip
            lenv = {**env, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": MASTER_KEY,
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # fmt: skip
            procs.append(start(cmd, lenv, quiet=True))
            await wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
            version = args.litellm_version or "?"
            targets[f"litellm proxy {version}"] = (f"http://127.0.0.1:{port}/v1/chat/completions", "m", procs[-1].pid)

        clients = await client_cpu(upstream + "/chat/completions")
        print("upstream client CPU:", clients, file=sys.stderr, flush=True)
        names = list(targets)
        raw: dict[str, Any] = {n: {"closed": [], "open": {}} for n in names}
        loads["during"] = []
        proxies = [pid for _, _, pid in targets.values() if pid is not None]
        if args.pin:  # req/s on one core: every proxy on CPU 0, the upstream and this load generator elsewhere
            place(proxies, cpus[:1])
            place([procs[0].pid, os.getpid()], rest)
        # Closed loops first (an open loop above capacity leaves a backlog that would distort them), interleaved.
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            for name in order:
                url, model, pid = targets[name]
                raw[name]["closed"].append(await closed_loop(url, model, args.concurrency, args.seconds, pid))
                await asyncio.sleep(0.5)
            loads["during"].append(load1())
        if args.pin:
            # Latency runs unpinned: pinned apart, every routed request crosses cores four times (client -> proxy
            # -> upstream and back) where a direct one crosses none, which on a shared VM costs more than the
            # proxy itself; placement is left to the scheduler for every target alike.
            place([*proxies, procs[0].pid, os.getpid()], cpus)
        capacity = {n: statistics.median(c["requests"] / c["seconds"] for c in raw[n]["closed"]) for n in names}
        print("closed loop req/s:", {n: round(c) for n, c in capacity.items()}, file=sys.stderr, flush=True)
        for rate in args.rates:
            key = f"{rate:g}"
            live = [n for n in names if capacity[n] > rate * 1.2]  # a saturated proxy only measures its queue
            for n in live:
                raw[n]["open"][key] = []
            for rep in range(args.reps):
                order = live[rep % len(live) :] + live[: rep % len(live)]
                for name in order:
                    url, model, _ = targets[name]
                    count = max(int(rate * args.open_seconds), args.min_requests)
                    raw[name]["open"][key].append(await open_loop(url, model, rate, count))
                    await asyncio.sleep(0.3)
                loads["during"].append(load1())
            print(f"open loop {key} req/s done", file=sys.stderr, flush=True)
        return {"targets": summarize(raw, args.rates), "upstream_client_cpu": clients}
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
    parser.add_argument("--open-seconds", type=float, default=4.0, help="duration of each open loop")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions of every measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each closed loop")
    parser.add_argument("--variants", nargs="*", default=["keyword"], help="built-in router variants (keyword)")
    parser.add_argument("--policy", nargs="*", default=[str(DEFAULT_POLICY)], help="RoutingPolicy manifests")
    parser.add_argument("--policy-encoder", default=None, help="override the policies' encoder kind (e.g. lexical)")
    parser.add_argument("--no-floor", dest="floor", action="store_false", help="skip the bare forwarding proxy")
    parser.add_argument("--no-aiohttp-floor", dest="aiohttp_floor", action="store_false",
                        help="skip the floor on aiohttp's server")
    parser.add_argument("--client-floors", nargs="*", default=[], help="the floor also with these upstream clients: "
                        "aiohttp, httpx")
    parser.add_argument("--servers", nargs="*", default=[], help="the keyword router also on: uvicorn, granian-asgi, "
                        "granian-rsgi (bench/router/asgi_router.py)")
    parser.add_argument("--min-requests", type=int, default=0,
                        help="open loops send at least this many requests (low rates need longer loops)")
    parser.add_argument("--baseline-src", help="directory holding another tiered_router package (before/after)")
    parser.add_argument("--baseline-note", default="", help="what the baseline package is (kept in the output)")
    parser.add_argument("--litellm", help="path of a litellm executable (separate venv)")
    parser.add_argument("--litellm-version", default="")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning for the closed loops")
    parser.add_argument("--out", default=str(Path(__file__).with_name("overhead.json")))
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the child processes
    loads: dict[str, Any] = {"before": load1()}
    try:  # the load generator's own overhead and jitter (same for every target) are lower on uvloop
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(main_async(args, loads))
    loads["after"] = load1()
    decision = decision_latency(Path(args.policy[0]), args.policy_encoder) if args.policy else None
    out = {
        "machine": f"{os.cpu_count()} CPUs shared with other workloads",
        "load_average_1m": loads,
        "settings": vars(args),
        "targets": results["targets"],
        "upstream_client_cpu": results["upstream_client_cpu"],
        "decision_latency_2000_tokens": decision,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
