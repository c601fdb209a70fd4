"""A router-config change reaches a running router process without a restart, delivered the way the kubelet
updates a ConfigMap volume: kubelet's AtomicWriter (pkg/volume/util/atomic_writer.go) writes the new keys into a
fresh `..<timestamp>` directory, points a `..data_tmp` symlink at it, renames that over `..data` (the atomic step),
keeps `router.json -> ..data/router.json`, and removes the old directory.

The operator no longer puts a hash of the router config on the pod template (a budget flip or a route edit would
otherwise restart every model pod of the policy); this test is the other half of that contract: the router, as
the image runs it (default poll interval), serves the new config within the bound docs/operator.md states for the
router's part of the delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from router_harness import router_config, wait_ready
from router_standin_upstream import StandinUpstream

from tiered_router.config import DEFAULT_POLL_SECONDS

pytestmark = pytest.mark.integration

ROUTER_RELOAD_BOUND_SECONDS = DEFAULT_POLL_SECONDS + 2.0
"""The router's part of a ConfigMap change (docs/operator.md): one poll interval, plus building the new state
(the encoder is cached across reloads) and slack for a loaded 2-core machine."""


class AtomicWriter:
    """The kubelet's ConfigMap volume layout and update sequence, step for step."""

    def __init__(self, target: Path) -> None:
        self.target = target
        target.mkdir(parents=True, exist_ok=True)

    def write(self, payload: dict[str, str]) -> None:
        old = os.readlink(self.target / "..data") if (self.target / "..data").is_symlink() else None
        stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime())
        ts_dir = Path(tempfile.mkdtemp(prefix=stamp, dir=self.target))
        for key, text in payload.items():
            (ts_dir / key).write_text(text)
        tmp_link = self.target / "..data_tmp"
        tmp_link.symlink_to(ts_dir.name)
        os.rename(tmp_link, self.target / "..data")  # the atomic swap
        for key in payload:
            visible = self.target / key
            if not visible.is_symlink():
                visible.symlink_to(f"..data/{key}")
        if old is not None:
            shutil.rmtree(self.target / old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _chat(client: httpx.AsyncClient, content: str) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    return await client.post("/v1/chat/completions", json=body)


async def _served_within(client: httpx.AsyncClient, content: str, want: dict[str, str], bound: float) -> float:
    """Seconds until a request for `content` is answered with the headers in `want`; fails after `bound` * 3."""
    started = time.monotonic()
    while True:
        r = await _chat(client, content)
        if all(r.headers.get(k) == v for k, v in want.items()):
            return time.monotonic() - started
        assert time.monotonic() - started < bound * 3, f"router still answers {dict(r.headers)} for {content!r}"
        await asyncio.sleep(0.05)


async def test_budget_flip_and_route_edit_reach_the_running_router_through_a_kubelet_style_swap(
    tmp_path: Path,
) -> None:
    slm, cloud = await StandinUpstream("slm").start(), await StandinUpstream("cloud").start()
    volume = AtomicWriter(tmp_path / "router-config")
    base: dict[str, Any] = router_config(slm, cloud, budget={"monthlyUSD": 10, "exhausted": False})
    volume.write({"router.json": json.dumps(base)})
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tiered_router", "serve", "--config", str(volume.target / "router.json"),
         "--host", "127.0.0.1", "--port", str(port)],  # the image's arguments: default poll interval
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await wait_ready(client, proc)
            r = await _chat(client, "please analyse this legal text")
            assert r.status_code == 200 and r.headers["x-tiered-tier"] == "cloud"

            # Budget flip (what the operator writes when the budget loop reports BudgetOK=False).
            volume.write({"router.json": json.dumps({**base, "budget": {**base["budget"], "exhausted": True}})})
            flip = await _served_within(client, "please analyse this legal text",
                                        {"x-tiered-tier": "slm", "x-tiered-reason": "BudgetExhaustedLocalOnly"},
                                        ROUTER_RELOAD_BOUND_SECONDS)  # fmt: skip

            # Route edit: "hello" now goes to the cloud tier's route (budget restored).
            edited = {**base, "routes": [{"name": "smalltalk", "tier": "cloud", "keywords": ["hello"]}],
                      "residency": {"namespaceClass": "unrestricted"}}  # fmt: skip
            volume.write({"router.json": json.dumps(edited)})
            edit = await _served_within(client, "hello there", {"x-tiered-tier": "cloud"}, ROUTER_RELOAD_BOUND_SECONDS)
            print(f"\nrouter served the new config after {flip:.2f}s (budget flip), {edit:.2f}s (route edit); "
                  f"bound {ROUTER_RELOAD_BOUND_SECONDS:.1f}s")  # fmt: skip
            assert flip <= ROUTER_RELOAD_BOUND_SECONDS and edit <= ROUTER_RELOAD_BOUND_SECONDS
            assert proc.poll() is None  # the same process throughout: no restart
            assert sorted(p.name for p in volume.target.iterdir() if not p.name.startswith("..2")) == [
                "..data", "router.json"]  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        await slm.stop()
        await cloud.stop()
    assert proc.returncode == 0
    text = out.decode(errors="replace")
    assert "Traceback" not in text and "rejected" not in text, text[-2000:]
