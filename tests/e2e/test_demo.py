"""`make demo` end to end on the real node (the session's real node, tests/e2e/conftest.py): the operator and the
local tier's pod (SLM server + router sidecar) Running and Ready on it, and the workload's results. `make
demo-lite` end to end in a state directory of its own: a fresh control plane, the operator, the data plane from
the ConfigMaps it writes, Prometheus, the cloud stand-in and a real workload — then a re-run that reuses
everything, then `demo down` leaving no process behind.

The fast tests at the top pin the demo's pure parts (PII generation, the train/test split discipline, the
translation of the operator's objects into local processes, the summary arithmetic).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tiered_dev.demo import dataplane, piicheck, report, workload
from tiered_dev.demo.driver import Outcome
from tiered_dev.demo.processes import find_ours

REPO = Path(__file__).resolve().parents[2]


# --- pure parts ------------------------------------------------------------------------------------------------


def test_generated_pii_is_valid_and_found_by_the_standin_detector() -> None:
    rng = random.Random(3)
    for _ in range(50):
        card = piicheck.make_card(rng)
        iban = piicheck.make_german_iban(rng)
        assert piicheck.luhn_valid(card.replace(" ", ""))
        assert piicheck.iban_valid(iban)
        for value, entity in ((card, "creditCard"), (iban, "iban"), (piicheck.make_email(rng), "email"),
                              (piicheck.make_phone(rng), "phone")):
            found = piicheck.find_pii(f"please use {value} for this")
            assert [f.entity for f in found] == [entity], (value, found)


def test_standin_detector_rejects_bad_checksums() -> None:
    assert not piicheck.luhn_valid("4111111111111112")
    assert not piicheck.iban_valid("GB82 WEST 1234 5698 7654 33")
    assert piicheck.find_pii("card 4111 1111 1111 1112 and IBAN GB82 WEST 1234 5698 7654 33") == []


@pytest.fixture(scope="module")
def clinc() -> workload.Clinc:
    return workload.load_clinc()


def test_route_examples_come_only_from_train_and_requests_never_from_train(clinc: workload.Clinc) -> None:
    train = {t for t, _ in clinc.train}
    examples = [u for us in workload.route_examples(clinc).values() for u in us]
    assert examples and set(examples) <= train
    items = workload.build_workload(clinc, 200, seed=1)
    test = {t for t, _ in clinc.test}
    oos = {t for t, _ in clinc.oos_test}
    for item in items:
        if item.kind == workload.KIND_IN_SCOPE:
            assert item.text in test
        elif item.kind == workload.KIND_OOS:
            assert item.text in oos
        else:
            assert item.pii_values and all(v in item.text for v in item.pii_values)
    assert not set(examples) & {i.text for i in items}


def test_checked_in_policy_matches_its_generator_and_uses_train_utterances_only(clinc: workload.Clinc) -> None:
    import yaml

    from tiered_dev.demo import manifests

    on_disk = yaml.safe_load((REPO / "manifests" / "demo" / "routingpolicy.yaml").read_text())
    threshold = on_disk["spec"]["classifier"]["threshold"]
    assert on_disk == workload.policy_manifest(clinc, manifests.POLICY, manifests.NAMESPACE, threshold)
    train = {t for t, _ in clinc.train} | {t for t, _ in clinc.oos_train}
    assert all(e in train for r in on_disk["spec"]["routes"] for e in r["examples"])


def _router_config(cloud_url: str = "http://127.0.0.1:1/v1") -> str:
    return json.dumps({
        "schemaVersion": 1, "policy": "p", "namespace": "ns", "defaultTier": "cloud",
        "tiers": [
            {"name": "edge", "kind": "local", "baseURL": "http://edge.ns.svc:8080/v1", "model": "edge"},
            {"name": "cloud", "kind": "cloud", "baseURL": cloud_url, "model": "m",
             "apiKeyFile": "/var/run/tiered/secrets/cloud/api-key"},
        ],
        "routes": [{"name": "r", "tier": "edge", "examples": ["hello there"]}],
    })


def test_local_router_config_changes_only_upstream_addresses() -> None:
    before = json.loads(_router_config())
    got = dataplane.local_router_config(
        _router_config(), {"edge": "http://127.0.0.1:5000/v1"}, {"cloud": "/tmp/key"})
    after = json.loads(got.value)
    edge, cloud = after["tiers"]
    assert edge["baseURL"] == "http://127.0.0.1:5000/v1"
    assert cloud["apiKeyFile"] == "/tmp/key"
    assert cloud["baseURL"] == before["tiers"][1]["baseURL"]
    assert after["routes"][0]["examples"] == ["hello there"] and after["defaultTier"] == "cloud"
    assert len(got.changes) == 2


def _deployment(model_args: list[str], router_args: list[str], router_command: list[str]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": [
        {"name": "model", "command": ["tiered-slm"], "args": model_args},
        {"name": "router", "command": router_command, "args": router_args},
    ]}}}}


@pytest.mark.parametrize(
    "model_args",
    [
        ["serve", "--host=0.0.0.0", "--port=8080", "--model-source=pvc://models/m.gguf", "--model-name=edge",
         "--context-length=2048", "--quantization=Q4_K_M", "--speculative-mode=promptLookup",
         "--speculative-tokens=8", "--max-ngram-size=3", "--pvc-root=/models"],
        ["serve", "--host=0.0.0.0", "--port=8080", "--model=pvc://models/m.gguf", "--model-id=edge", "--ctx=2048",
         "--speculative=prompt-lookup", "--draft-tokens=8", "--ngram=3", "--pvc-root=/models", "--cache-dir=/cache"],
    ],
    ids=["builder-spelling", "cli-spelling"],
)
def test_slm_arguments_follow_the_deployment(model_args: list[str]) -> None:
    dep = _deployment(model_args, [], ["tiered-router"])
    slm = dataplane.slm_argv(dep, "127.0.0.1", 5000, "/d/pvc", "/d/cache").value
    assert slm[:2] == ["tiered-slm", "serve"]
    joined = " ".join(slm)
    for part in ("--model pvc://models/m.gguf", "--model-id edge", "--ctx 2048", "--speculative prompt-lookup",
                 "--draft-tokens 8", "--ngram 3", "--port 5000", "--pvc-root /d/pvc", "--cache-dir /d/cache"):
        assert part in joined
    assert "0.0.0.0" not in joined and " /models" not in joined and " /cache" not in joined


@pytest.mark.parametrize("command", [["tiered-router"], ["python", "-m", "tiered_router"]])
def test_router_arguments_follow_the_deployment(command: list[str]) -> None:
    dep = _deployment([], ["serve", "--config=/etc/tiered/router/router.json", "--host=0.0.0.0", "--port=8000",
                           "--metrics-port=9090"], command)
    router = dataplane.router_argv(dep, "/d/router.json", "127.0.0.1", 6000).value
    assert router == [*command, "serve", "--config", "/d/router.json", "--host", "127.0.0.1", "--port", "6000"]


def test_summary_counts_local_share_spend_and_pii_from_its_inputs() -> None:
    local, cloud = workload.LOCAL_TIER, workload.CLOUD_TIER
    pii = workload.WorkItem(workload.KIND_PII, "mail a@example.com", None, local, ("a@example.com",))
    ins = workload.WorkItem(workload.KIND_IN_SCOPE, "book a flight", "travel", cloud)
    outcomes = [Outcome(pii, 200, local, None, "PiiKeptLocal", 0.05), Outcome(ins, 200, cloud, "travel", "x", 0.3)]

    def vec(rows: list[tuple[dict[str, str], float]]) -> report.Vector:
        return report.to_vector(rows)

    counters = {name: vec([]) for name in report.counter_queries("ns")}
    counters["requests"] = vec([({"tier": local, "outcome": "success"}, 3), ({"tier": cloud, "outcome": "success"}, 1)])
    counters["cost"] = vec([({"tier": local}, 0.001), ({"tier": cloud}, 0.01)])
    counters["avoided"] = vec([({"tier": local}, 0.029)])
    s = report.summarize(report.DemoInputs("ns", {local: "local", cloud: "cloud"}, outcomes, counters,
                                           {local: 12.0}, 0, 0, 1.0))
    assert s["local_share"] == pytest.approx(0.75)
    assert s["spend_usd"] == pytest.approx(0.011) and s["all_cloud_usd"] == pytest.approx(0.04)
    assert s["pii"]["served_local"] == 1 and s["pii"]["served_cloud"] == 0
    assert s["tiers"][cloud]["p95_ms_prometheus"] is None
    assert report.delta(vec([({"t": "a"}, 2)]), vec([({"t": "a"}, 5), ({"t": "b"}, 1)])) == {
        (("t", "a"),): 3, (("t", "b"),): 1}


# --- end to end --------------------------------------------------------------------------------------------------


def _demo(state: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _assert_summary(summary: dict[str, Any], requests: int) -> None:
    assert summary["requests"]["sent"] == requests
    assert summary["requests"]["errors"] == 0, summary["requests"]["error_samples"]
    assert summary["local_share"] is not None and 0 < summary["local_share"] < 1
    assert summary["local_share"] == pytest.approx(summary["local_share_client"], abs=1e-9)
    pii = summary["pii"]
    assert pii["sent"] > 0 and pii["served_local"] == pii["sent"] and pii["served_cloud"] == 0
    assert sum(pii["router_detections"].values()) >= pii["sent"]
    assert pii["standin_pii_requests"] == 0, "the cloud stand-in's own detector saw PII"
    assert pii["generated_values_in_standin_log"] == 0, "a generated PII value reached the cloud stand-in"
    assert summary["spillover"]["pii"] == 0, "a PII-bearing request spilled to the cloud"
    standin = summary["standin"]
    cloud_requests = sum(t["requests_prometheus"] for t in summary["tiers"].values() if t["kind"] == "cloud")
    assert standin["requests"] == cloud_requests > 0 and standin["unauthorized"] == 0
    assert summary["spend_usd"] > 0 and summary["all_cloud_usd"] > summary["spend_usd"]
    for tier in summary["tiers"].values():
        assert tier["p95_ms_prometheus"] is not None and tier["p95_ms_prometheus"] > 0
    png = Path(summary["png"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "slm-edge" in summary["kubectl_get"] and "clinc-hybrid" in summary["kubectl_get"]


@pytest.mark.integration
def test_demo_lite_up_rerun_and_down(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    requests = 48
    try:
        first = _demo(state, "up", "--lite", "--requests", str(requests), timeout=540)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        summary = json.loads((state / "demo" / "summary.json").read_text())
        _assert_summary(summary, requests)
        assert all(summary["started"].values())
        assert "Local share:" in first.stdout and "Cloud spend:" in first.stdout and str(summary["png"]) in first.stdout

        again = _demo(state, "up", "--lite", "--requests", str(requests), timeout=300)
        assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
        rerun = json.loads((state / "demo" / "summary.json").read_text())
        _assert_summary(rerun, requests)
        assert not any(rerun["started"].values()), rerun["started"]  # everything reused
    finally:
        down = _demo(state, "down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    deadline = time.monotonic() + 10
    while find_ours(state) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert find_ours(state) == [], "processes left behind by `demo down`"


def _pod_rows(table: str) -> list[dict[str, str]]:
    """`kubectl get pods -A -o wide` as dicts keyed by its column headers, cut at the headers' offsets (headers
    and values may hold spaces: "NOMINATED NODE", "3 (62s ago)")."""
    lines = table.strip().splitlines()
    header = lines[0]
    names = ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE"]
    starts = [header.index(n + " ") if n != "NAME" else header.index(" NAME ") + 1 for n in names]
    bounds = [*zip(starts, [*starts[1:], None], strict=True)]
    return [{n: line[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for line in lines[1:]]


def _assert_real_text(answer: str) -> None:
    """The local tier's answer reads as English: mostly letters and spaces, common words, none of the special
    tokens and replacement characters a random-weight model produces (`<pad43>`, U+FFFD)."""
    assert answer.strip(), "empty answer"
    assert "<pad" not in answer and "\ufffd" not in answer, answer
    letters = sum(c.isascii() and (c.isalpha() or c.isspace()) for c in answer)
    assert letters >= 0.8 * len(answer), answer
    words = {w.strip(".,!?'\"").lower() for w in answer.split()}
    assert words & {"the", "a", "an", "to", "is", "you", "i", "i'm", "it", "of", "and", "that", "can", "your"}, answer


@pytest.mark.integration
def test_make_demo_runs_the_operator_and_the_local_tier_as_real_pods(real_node: Any) -> None:
    out = real_node.demo_output
    summary = json.loads((real_node.state / "demo" / "summary.json").read_text())
    _assert_summary(summary, 48)
    assert "$ kubectl get pods -A -o wide" in out
    table = out.rsplit("$ kubectl get pods -A -o wide", 1)[1]
    rows = _pod_rows(table)
    operator = [r for r in rows if r["NAMESPACE"] == "tiered-system" and r["NAME"].startswith("tiered-operator-")]
    local = [r for r in rows if r["NAMESPACE"] == "tiered-demo" and r["NAME"].startswith("slm-edge-")]
    assert len(operator) == 2 and local, table
    for row in operator:
        assert (row["READY"], row["STATUS"], row["NODE"]) == ("1/1", "Running", "real-node-0"), table
    for row in local:  # the SLM server and the router sidecar in one pod
        assert (row["READY"], row["STATUS"], row["NODE"]) == ("2/2", "Running", "real-node-0"), table
    assert "Try it" in out and "curl -s http://10.0.0." in out and "port-forward" in out
    _assert_real_text(summary["sample_answers"]["slm-edge"]["answer"])
    real_node.figures["make_demo_seconds"] = round(real_node.demo_seconds, 1)
    print(f"\n`make demo` on the real node took {real_node.demo_seconds:.0f}s")
