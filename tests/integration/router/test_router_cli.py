"""The `tiered-router` command as users and the image run it: serve (a real process), eval, explain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from router_harness import router_config, wait_ready
from router_standin_upstream import StandinUpstream

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def upstreams() -> Iterator[tuple[StandinUpstream, StandinUpstream]]:  # type: ignore[misc]
    slm, cloud = await StandinUpstream("slm").start(), await StandinUpstream("cloud").start()
    yield slm, cloud
    await slm.stop()
    await cloud.stop()


async def test_serve_process_answers_reloads_and_stops_on_sigterm(
    tmp_path: Path, upstreams: tuple[StandinUpstream, StandinUpstream]
) -> None:
    import asyncio

    slm, cloud = upstreams
    cfg = tmp_path / "router.yaml"
    cfg.write_text(json.dumps(router_config(slm, cloud)))
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiered_router",
            "serve",
            "--config",
            str(cfg),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--poll-seconds",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_ready(client, proc)
            body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and r.headers["x-tiered-tier"] == "slm"
            old = (await client.get("/readyz")).json()["config"]
            new = router_config(slm, cloud, routes=[{"name": "smalltalk", "tier": "cloud", "keywords": ["hello"]}],
                                residency={"namespaceClass": "unrestricted"})  # fmt: skip
            cfg.write_text(json.dumps(new))
            deadline = time.monotonic() + 30
            while (await client.get("/readyz")).json()["config"] == old:
                assert time.monotonic() < deadline, "config was not reloaded"
                await asyncio.sleep(0.1)
            r = await client.post("/v1/chat/completions", json=body)
            assert r.headers["x-tiered-tier"] == "cloud"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert b"Traceback" not in out


def test_eval_prints_metrics_for_a_policy_manifest(tmp_path: Path) -> None:
    policy = {
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "RoutingPolicy",
        "metadata": {"name": "small"},
        "spec": {
            "tiers": ["slm", "cloud"],
            "defaultTier": "cloud",
            "classifier": {"encoder": {"type": "builtin"}, "threshold": "0.3"},
            "routes": [
                {"name": "weather", "tier": "slm",
                 "examples": ["what is the weather today", "will it rain tomorrow", "how hot is it outside"]},
                {"name": "banking", "tier": "slm",
                 "examples": ["what is my account balance", "transfer money to savings", "pay my credit card bill"]},
            ],
        },
    }  # fmt: skip
    (tmp_path / "policy.yaml").write_text(json.dumps(policy))
    rows = [
        {"text": "is it going to snow this weekend", "route": "weather"},
        {"text": "how much money is in my checking account", "route": "banking"},
        {"text": "send 50 dollars from checking to savings", "route": "banking"},
        {"text": "who wrote the novel war and peace", "route": None},
    ]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiered_router",
            "eval",
            "--policy",
            str(tmp_path / "policy.yaml"),
            "--data",
            str(tmp_path / "data.jsonl"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["in_scope_accuracy"] == 1.0
    assert result["oos_to_default"] == 1.0
    assert set(result["per_route"]) == {"weather", "banking"}
    assert result["decision_p99_ms"] > 0


def test_eval_reads_the_healthcare_csv(tmp_path: Path) -> None:
    data = Path("/work/shared/data/healthcare-routing/healthcare-routing-evaluation.csv")
    if not data.exists():
        data = Path(__file__).resolve().parents[4] / "shared/data/healthcare-routing/healthcare-routing-evaluation.csv"
    from tiered_router.evaluate import load_samples

    samples = load_samples(data, "test")
    assert len(samples) == 24 and sum(1 for s in samples if not s.routes) == 3


def test_explain_prints_the_decision(tmp_path: Path) -> None:
    cfg = tmp_path / "router.json"
    slm, cloud = StandinUpstream("slm", port=1), StandinUpstream("cloud", port=2)
    cfg.write_text(json.dumps(router_config(slm, cloud)))
    out = subprocess.run(
        [sys.executable, "-m", "tiered_router", "explain", "--config", str(cfg), "legal analyse jane@example.com"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result["tier"] == "slm" and result["reason"] == "PiiKeptLocal" and result["pii"] == ["email"]
    assert result["chain"] == ["slm"] and any("cloud" in e for e in result["excluded"])


def test_calibrate_prints_the_curve_and_the_chosen_threshold(tmp_path: Path) -> None:
    """`tiered-router calibrate`: the held-out curve of the policy's own examples, the auto threshold chosen on it
    (the lowest that sends targetOutOfScopeRate of the out-of-scope examples to the default tier), and the same
    thresholds measured on labelled data."""
    weather = [f"{q} {w}" for q in ("will it", "is it going to", "do you think it will") for w in
               ("rain tomorrow", "snow tonight", "be sunny on friday", "hail this weekend")]
    banking = [f"{q} {w}" for q in ("what is the balance of", "move money out of", "freeze") for w in
               ("my checking account", "my savings account", "my credit card", "my debit card")]
    other = [f"{q} {w}" for q in ("tell me a fact about", "who invented", "write a poem about", "explain")
             for w in ("volcanoes", "the printing press", "penguins", "chess")]  # fmt: skip
    policy = {"apiVersion": "tiered.dev/v1alpha1", "kind": "RoutingPolicy", "metadata": {"name": "small"},
              "spec": {"tiers": ["slm", "cloud"], "defaultTier": "cloud",
                       "classifier": {"targetOutOfScopeRate": "0.9"},
                       "routes": [{"name": "weather", "tier": "slm", "examples": weather},
                                  {"name": "banking", "tier": "slm", "examples": banking},
                                  {"name": "elsewhere", "tier": "cloud", "examples": other}]}}  # fmt: skip
    (tmp_path / "policy.yaml").write_text(json.dumps(policy))
    rows = [{"text": "is it going to rain on saturday", "route": "weather"},
            {"text": "how much is in my savings account", "route": "banking"},
            {"text": "who painted the mona lisa", "route": None}]  # fmt: skip
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    base = [sys.executable, "-m", "tiered_router", "calibrate", "--policy", str(tmp_path / "policy.yaml")]
    out = subprocess.run([*base, "--data", str(tmp_path / "data.jsonl"), "--json"],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    report = json.loads(out.stdout)
    cal = report["calibration"]
    assert cal["basis"] == "cross-validated" and cal["targetOutOfScopeRate"] == 0.9
    assert cal["inScopeExamples"] == 24 and cal["outOfScopeExamples"] == 16
    assert cal["heldOutOutOfScope"] >= 0.9
    curve = report["held_out_curve"]
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    assert [p["oos_to_default"] for p in curve] == sorted(p["oos_to_default"] for p in curve)  # monotone
    chosen = next(p for p in curve if p["threshold"] == cal["threshold"])
    assert all(p["oos_to_default"] < 0.9 for p in curve if p["threshold"] < chosen["threshold"])
    assert report["data"]["samples"] == 3 and report["data"]["at_threshold"]["threshold"] == cal["threshold"]
    assert {r["source"] for r in report["routes"]} == {"auto"}
    text = subprocess.run(base, capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"auto threshold {cal['threshold']}" in text and "<- chosen" in text
