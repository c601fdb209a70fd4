"""schemathesis against the router's own OpenAPI document (`GET /openapi.json`): the real router in front of two
stand-in OpenAI-compatible upstreams, every check schemathesis has (`--checks all`: no 5xx, statuses, content types,
headers and bodies as documented, invalid data rejected with 4xx, valid data accepted, 405 with `Allow` for
undocumented methods, ...) in both positive and negative generation, coverage and fuzzing phases.

What went over the wire is read back from schemathesis' NDJSON report, so the test asserts on the router's answers
(every status, not only the failures schemathesis reports) and on how many requests were made. The hypothesis
fuzz in test_router_fuzz.py covers what a schema cannot express (raw sockets, encodings, oversized bodies).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import RouterProcess, Upstream, router_config, stand_in_rig, write_config

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("TIERED_SCHEMATHESIS_EXAMPLES", "1000"))  # per operation and phase
SEED = 20261128
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@dataclass
class Run:
    returncode: int
    output: str
    statuses: Counter[int]
    requests: int
    failed_checks: list[str]
    server_errors: list[str]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    def config(slm: Upstream, cloud: Upstream) -> dict[str, Any]:
        return router_config(slm.base_url, cloud.base_url, override={"enabled": True, "allowedTiers": ["slm"]})

    with stand_in_rig(tmp_path_factory.mktemp("schemathesis"), config, log_level="WARNING") as rig:
        yield rig.router


def read_report(path: Path) -> tuple[Counter[int], int, list[str], list[str]]:
    """Statuses of every interaction, the number of requests, failed checks and 5xx answers in an NDJSON report."""
    statuses: Counter[int] = Counter()
    failed: list[str] = []
    server_errors: list[str] = []
    requests = 0
    for line in path.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished["recorder"]
        for case_id, interaction in recorder.get("interactions", {}).items():
            request, response = interaction["request"], interaction.get("response")
            requests += 1
            status = response["status_code"] if response else -1
            statuses[status] += 1
            if status >= 500 or status < 0:
                content = base64.b64decode((response or {}).get("content", {}).get("$base64", "") or "")
                server_errors.append(f"{case_id}: {request['method']} {request['uri']} -> {status} {content[:200]!r}")
        for case_id, checks in recorder.get("checks", {}).items():
            failed += [f"{recorder['label']} {case_id}: {c['name']}" for c in checks if c["status"] == "failure"]
    return statuses, requests, failed, server_errors


def run_schemathesis(router: RouterProcess, workdir: Path) -> Run:
    report = workdir / "report.ndjson"
    cmd = [str(SCHEMATHESIS), "run", f"{router.url}/openapi.json", "--checks", "all", "--mode", "all",
           "--phases", "coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED),
           "--generation-database", "none", "--request-timeout", "10", "--continue-on-failure",
           "--report", "ndjson", "--report-ndjson-path", str(report)]  # fmt: skip
    done = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})  # fmt: skip
    statuses, requests, failed, server_errors = read_report(report)
    return Run(done.returncode, done.stdout + done.stderr, statuses, requests, failed, server_errors)


def test_router_conforms_to_its_openapi_document_under_schemathesis(router: RouterProcess, tmp_path: Path) -> None:
    run = run_schemathesis(router, tmp_path)
    summary = dict(sorted(run.statuses.items()))
    print(f"\nschemathesis requests: {run.requests}, statuses: {summary}")
    report = os.environ.get("TIERED_SCHEMATHESIS_REPORT")  # bench/reliability/router_fuzz.py asks for the figures
    if report:
        Path(report).write_text(json.dumps({
            "requests": run.requests, "max_examples_per_operation": MAX_EXAMPLES, "seed": SEED,
            "statuses": {str(k): v for k, v in summary.items()}, "failed_checks": len(run.failed_checks),
            "server_errors": len(run.server_errors), "schemathesis_exit": run.returncode,
            "router_alive": router.alive(), "router_ready": router.get("/readyz")[0] == 200,
        }, indent=2) + "\n")  # fmt: skip
    assert run.server_errors == [], run.server_errors[:10]
    assert run.failed_checks == [], f"{len(run.failed_checks)} failed checks, e.g. {run.failed_checks[:10]}"
    assert run.returncode == 0, run.output[-6000:]
    # Both generation modes reached the router: valid requests were served, invalid ones refused.
    served = sum(v for k, v in run.statuses.items() if 200 <= k < 300)
    refused = sum(v for k, v in run.statuses.items() if 400 <= k < 500)
    assert served > 200 and refused > 200, summary
    assert run.requests >= 2 * MAX_EXAMPLES, summary
    assert router.alive()
    assert router.get("/readyz")[0] == 200
    log_text = router.log()
    assert "unhandled error" not in log_text, log_text[log_text.find("unhandled error") :][:3000]


def test_the_document_follows_the_config_it_serves(tmp_path: Path) -> None:
    """The `model` enum and the override header come from the live config; a hot reload changes them."""
    config = router_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1",
                           override={"enabled": True, "allowedTiers": ["slm"]})  # fmt: skip
    write_config(tmp_path / "router.json", config)
    process = RouterProcess(tmp_path / "router.json", tmp_path / "router.log").start()
    try:
        doc = fetch_document(process)
        assert doc["openapi"].startswith("3.1")
        chat = doc["paths"]["/v1/chat/completions"]["post"]
        assert [p["name"] for p in chat["parameters"]] == ["x-tiered-tier"]
        assert chat["parameters"][0]["schema"]["enum"] == ["slm"]  # override.allowedTiers, not every tier
        models = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"]["enum"]
        assert {"auto", "reliability", "smalltalk", "analysis", "slm"} <= set(models)
        assert "cloud" not in models  # a tier the client may not pin is not a valid `model`

        config["override"] = {"enabled": False}
        config["routes"].append({"name": "billing", "tier": "slm", "keywords": ["invoice"]})
        write_config(tmp_path / "router.json", config)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            doc = fetch_document(process)
            if "billing" in doc["components"]["schemas"]["CompletionRequest"]["properties"]["model"]["enum"]:
                break
            time.sleep(0.1)
        models = doc["components"]["schemas"]["CompletionRequest"]["properties"]["model"]["enum"]
        assert "billing" in models and "slm" not in models, models
        assert "parameters" not in doc["paths"]["/v1/completions"]["post"]  # no pinning header any more
    finally:
        process.stop()


def fetch_document(process: RouterProcess) -> dict[str, Any]:
    status, text = process.get("/openapi.json")
    assert status == 200, text
    doc: dict[str, Any] = json.loads(text)
    return doc
