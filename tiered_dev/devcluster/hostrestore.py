"""Changing the host for a real node, and putting it back: host commands and sysctls, and `restore_host`, which
undoes everything that differs from the snapshot taken before the node came up (tiered_dev.devcluster.hoststate)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from tiered_dev.devcluster import hoststate
from tiered_dev.devcluster.nodeconfig import (
    BRIDGE,
    OUTSIDE_HOST_LINK,
    OUTSIDE_NETNS,
    NodePaths,
    Progress,
    RealNodeError,
)


def sh(*argv: str, check: bool = True, netns: str | None = None, timeout: float = 60) -> str:
    """Run a host command; a failure raises with the command and its output."""
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RealNodeError(f"`{shlex.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _sysctl_path(key: str) -> Path:
    return hoststate.SYSCTL_ROOT / key.replace(".", "/")


def write_sysctl(key: str, value: str) -> None:
    path = _sysctl_path(key)
    if path.exists() and " ".join(path.read_text().split()) != value:
        path.write_text(value + "\n")


def missing_host_tools() -> list[str]:
    """Host programs the node needs (Debian packages; `make realnode-deps` installs them)."""
    need = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
            "ipset": "ipset", "ip": "iproute2", "nft": "nftables", "conntrack": "conntrack"}
    return sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})


KNOWN_HOST_PATHS = ("/run/containerd", "/var/log/containers", "/var/log/pods", "/var/lib/cni", "/var/lib/kubelet",
                    "/var/lib/containerd", "/etc/cni", "/opt/cni", "/opt/containerd", "/usr/libexec/kubernetes",
                    "/var/lib/kube-router", "/etc/kubernetes", "/run/netns", "/var/run/netns")
"""Where containerd, kubelet, the CNI plugins and kube-router write whatever their flags say (seen here, or their
defaults): removed on down when the snapshot shows they did not exist before."""


def _parse_iptables(lines: Iterable[str]) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(user-defined chains per table, rules as (table, '-A ...') in order) from normalized iptables-save lines.
    Built-in chains (INPUT, PREROUTING, ...) carry a policy instead of `-` and can never be deleted."""
    chains: dict[str, set[str]] = {}
    rules: list[tuple[str, str]] = []
    table = ""
    for line in lines:
        if line.startswith("*"):
            table = line[1:]
            chains.setdefault(table, set())
        elif line.startswith(":"):
            name, policy = [*line[1:].split(), "-"][:2]
            if policy == "-":
                chains.setdefault(table, set()).add(name)
        elif line.startswith("-A "):
            rules.append((table, line))
    return chains, rules


def iptables_undo(before: Iterable[str], after: Iterable[str]) -> list[list[str]]:
    """The iptables arguments that remove what `after` has and `before` had not: first the added rules of chains
    that existed before (they may jump to added chains), then every added chain is flushed, then deleted."""
    chains_before, rules_before = _parse_iptables(before)
    chains_after, rules_after = _parse_iptables(after)
    old_rules = set(rules_before)
    added_chains = {(t, c) for t, cs in chains_after.items() for c in cs if c not in chains_before.get(t, set())}
    commands: list[list[str]] = []
    for table, rule in rules_after:
        chain = rule.split()[1]
        if (table, rule) in old_rules or (table, chain) in added_chains:
            continue
        commands.append(["-t", table, "-D", *shlex.split(rule)[1:]])
    for table, chain in sorted(added_chains):
        commands.append(["-t", table, "-F", chain])
    for table, chain in sorted(added_chains):
        commands.append(["-t", table, "-X", chain])
    return commands


CNI_VETH = re.compile(r"^veth[0-9a-f]{8}$")
"""The host end of a pod's veth pair, as the CNI bridge plugin names it."""


def _master(link: str) -> str | None:
    master = Path(f"/sys/class/net/{link}/master")
    return master.resolve().name if master.exists() else None


def links_to_delete(before: Iterable[str], masters: Mapping[str, str | None]) -> list[str]:
    """The links the node added that `down` deletes, ports first: the bridge's ports (pods' veths), CNI veths that
    lost their bridge (a node that died before `down`: their pod namespace may outlive it), then the bridge and
    the outside veth. `masters` maps every link now present to the bridge it is enslaved to (None: none)."""
    added = set(masters) - set(before)
    ports = sorted(link for link in added
                   if masters[link] == BRIDGE or (masters[link] is None and CNI_VETH.match(link)))
    return ports + [link for link in (OUTSIDE_HOST_LINK, BRIDGE) if link in added]


def _unmount_under(prefixes: Iterable[str], keep: set[str]) -> None:
    prefixes = tuple(prefixes)
    for _ in range(3):
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            parts = line.split()
            sep = parts.index("-")
            point = parts[4].replace("\\040", " ")
            if point.startswith(prefixes) and f"{parts[4]} {parts[sep + 1]}" not in keep:
                points.append(point)
        if not points:
            return
        for point in sorted(points, key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_cgroups(before: set[str]) -> None:
    now = hoststate.take_cgroups()
    for path in sorted((p for p in now if p not in before and "/kubepods" in p), key=len, reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def restore_host(state_dir: Path, progress: Progress = print) -> list[hoststate.Difference]:
    """Undo what the node changed on the host, from the snapshot `prepare_host` took; return what still differs
    (empty when the host is as it was). Call after `down()` and after the control plane has stopped."""
    paths = NodePaths(state_dir)
    if not paths.snapshot.exists():
        return []
    before = hoststate.Snapshot.from_json(json.loads(paths.snapshot.read_text()))
    node_dirs = (str(paths.root) + "/", "/run/containerd/", "/var/lib/kubelet/", "/run/netns/cni-",
                 "/var/run/netns/cni-")
    _unmount_under(node_dirs, set(before.mounts))
    now = hoststate.take()
    # iptables: new tables go whole (nft), otherwise the added rules and chains one by one.
    new_tables = [t for t in now.nft_tables if t not in before.nft_tables]
    for fam, tool in (("iptables", "iptables"), ("ip6tables", "ip6tables")):
        for args in iptables_undo(before.iptables.get(fam, []), now.iptables.get(fam, [])):
            sh(tool, "-w", *args, check=False)
    for table in new_tables:  # e.g. "table ip filter"
        sh("nft", "delete", *table.split(), check=False)
    for ipset in sorted(set(now.ipsets) - set(before.ipsets)):
        sh("ipset", "destroy", ipset, check=False)
    if OUTSIDE_NETNS in now.netns and OUTSIDE_NETNS not in before.netns:
        sh("ip", "netns", "delete", OUTSIDE_NETNS, check=False)
    # `ip netns add` makes /run/netns a mount point of its own (a shared bind mount) the first time.
    for point in ("/run/netns", "/var/run/netns"):
        if any(m.startswith(point + " ") for m in now.mounts) and not any(
                m.startswith(point + " ") for m in before.mounts) and not os.listdir(point):
            sh("umount", point, check=False)
    masters = {link: _master(link) for link in now.links}
    for link in links_to_delete(before.links, masters):
        sh("ip", "link", "delete", link, check=False)
    _remove_cgroups(set(before.cgroups))
    for key, (old, new) in hoststate.sysctl_changes(before.sysctls, hoststate.read_sysctls()).items():
        with contextlib.suppress(OSError):
            _sysctl_path(key).write_text(old + "\n")
            progress(f"restored sysctl {key} = {old} (was {new})")
    existed = set(before.directories)
    for path in KNOWN_HOST_PATHS:
        if path not in existed and os.path.lexists(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
    # Processes naming the node's files (its programs' configs, kubeconfigs); not the state directory itself, which
    # the command running `down` may name.
    markers = [str(paths.root) + "/", str(paths.state / "kubeconfigs") + "/"]
    left = hoststate.diff(before, hoststate.take(markers=markers), roots=[str(state_dir)])
    if not left:
        paths.snapshot.unlink()
    return left
