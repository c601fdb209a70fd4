"""`tiered dev down` leaves the host as it was: the last real-node test of the session stops the node (and the
demo's processes) and compares the host with the snapshot the session fixture took before anything started:
processes, iptables rules and chains, nftables tables, ipsets, links (bridges, veths), routes, network
namespaces, mounts, cgroups, sysctls, and the directories the node's programs are known to write outside the
state directory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import defaultdict

import psutil
import pytest
from realnode_support import REPO, RealNodeSession

from tiered_dev.devcluster import hoststate, node

pytestmark = pytest.mark.integration


def node_memory_mib() -> dict[str, float]:
    """Resident memory of the node's own programs (not the workload's), MiB by program name."""
    rss: dict[str, float] = defaultdict(float)
    for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
        name = proc.info["name"] or ""
        if name.startswith("containerd-shim"):
            name = "containerd-shim-runc-v2"
        if name in ("containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "kube-router", "coredns",
                    "pause") and proc.info["memory_info"] is not None:
            rss[name] += proc.info["memory_info"].rss / 2**20
    return {k: round(v, 1) for k, v in sorted(rss.items())}


def test_dev_down_leaves_the_host_as_it_was(real_node: RealNodeSession) -> None:
    state = real_node.state
    memory = node_memory_mib()
    real_node.figures["node_memory_mib"] = memory
    real_node.figures["node_memory_mib_total"] = round(sum(memory.values()), 1)
    print(f"\nreal node's programs, resident memory (MiB): {memory}; total {sum(memory.values()):.0f}")
    (state.parent / ".dev-e2e-realnode-figures.json").write_text(json.dumps(real_node.figures, indent=2))
    during = hoststate.take(markers=[str(state) + "/"])
    # The node really changed the host (so the comparison below can fail): a bridge, chains, a namespace.
    assert {node.BRIDGE, node.OUTSIDE_HOST_LINK} <= set(during.links)
    assert node.OUTSIDE_NETNS in during.netns and during.iptables["iptables"] != real_node.before.iptables["iptables"]
    assert any("kubelet" in p for p in during.node_processes)
    started = time.monotonic()
    down = subprocess.run([sys.executable, "-m", "tiered_dev.demo", "--state-dir", str(state), "down"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    took = time.monotonic() - started
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    after = hoststate.take(markers=[str(state) + "/"])
    left = hoststate.diff(real_node.before, after, roots=[str(state)])
    print(f"\n`demo down` (stand-in, Prometheus, node, control plane) took {took:.1f}s; differences: {len(left)}")
    assert not left, "the host differs from before the real node:\n" + "\n".join(str(d) for d in left)
    assert node.lock_holder() is None
