"""What a real node can change on the host, captured as data: before `dev up`, after `dev down`, and the diff.

`tiered dev up --node real` records a snapshot before it changes anything; `tiered dev down` uses it to put back
what is not simply removed with the node's own objects (sysctls, iptables rules in chains that existed before)
and the end-to-end test compares a snapshot taken after `down` with the one taken before `up`. Collecting is thin
I/O; comparing is pure (`diff`), so the comparison rules are unit-tested.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSCTL_ROOT = Path("/proc/sys")
VOLATILE_SYSCTLS = re.compile(
    r"^(fs\.(dentry-state|inode-nr|inode-state|file-nr|aio-nr|quota\..*)"
    r"|kernel\.(random\..*|ns_last_pid|pty\.nr|tainted|sched_domain\..*|perf_event_max_sample_rate|numa_balancing.*)"
    r"|net\.netfilter\.nf_conntrack_count|net\.ipv4\.route\.gc_.*|net\.ipv6\.route\.gc_.*"
    r"|vm\.(stat_refresh|drop_caches|compact_memory)|kernel\.hung_task_.*|user\..*|debug\..*)$"
)
"""Counters and knobs the kernel (or anyone) moves on its own: never compared, never restored."""

CHANGED_BY_NODE_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
    "net.netfilter.nf_conntrack_tcp_be_liberal",
)
"""What we set ourselves (ip_forward) or have seen kubelet/kube-proxy set: always snapshotted, restored on down."""

SYSCTL_TREES = ("net/ipv4", "net/ipv6", "net/bridge", "net/netfilter", "net/core", "vm", "kernel", "fs")
DIRECTORY_ROOTS = ("/run", "/var/run", "/var/lib", "/var/log", "/etc", "/opt", "/usr/libexec", "/dev/shm", "/root")
"""Where a node's programs have been seen writing outside their configured directories (listed two levels deep)."""
VOLATILE_DIRECTORIES = re.compile(
    r"^/(var/log/(apt|journal|installer)|var/lib/(apt|dpkg|systemd|ucf|dhcp)|etc/(ld\.so\.cache|alternatives"
    r"|apt|\.pwd\.lock)|var/log/(dpkg\.log|alternatives\.log|lastlog|wtmp|btmp)|root/(\.cache|go|\.bash_history"
    r"|\.python_history|\.lesshst|\.wget-hsts|\.config|\.local|\.npm|\.viminfo)|run/(utmp|user|lock)"
    r"|var/run/(utmp|user|lock))(/|$)"
)
"""Package installs and shell history by other people on the machine: not the node's."""


@dataclass
class Snapshot:
    """The host state a real node may touch, each part as plain sortable data (JSON-serialisable)."""

    iptables: dict[str, list[str]] = field(default_factory=dict)
    """`iptables-save` / `ip6tables-save` lines per family, counters and comments removed."""
    nft_tables: list[str] = field(default_factory=list)
    ipsets: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    directories: list[str] = field(default_factory=list)
    node_processes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --- collecting (thin I/O) ---------------------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return ""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout if result.returncode == 0 else ""


def normalize_iptables(text: str) -> list[str]:
    """iptables-save output without comments and packet counters (they change with traffic, not with rules)."""
    lines = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        lines.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return lines


def read_sysctls(trees: Iterable[str] = SYSCTL_TREES) -> dict[str, str]:
    values: dict[str, str] = {}
    for tree in trees:
        base = SYSCTL_ROOT / tree
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                key = str(path.relative_to(SYSCTL_ROOT)).replace("/", ".")
                if VOLATILE_SYSCTLS.match(key):
                    continue
                try:
                    if not os.access(path, os.R_OK):
                        continue
                    values[key] = " ".join(path.read_text().split())
                except OSError:
                    continue
    return values


def _list_directories(roots: Iterable[str], depth: int = 2) -> list[str]:
    found: list[str] = []
    for root in roots:
        base = Path(root)
        if not base.is_dir() or base.is_symlink():
            continue
        stack = [(base, 0)]
        while stack:
            current, level = stack.pop()
            try:
                entries = list(os.scandir(current))
            except OSError:
                continue
            for entry in entries:
                path = entry.path
                if VOLATILE_DIRECTORIES.match(path):
                    continue
                found.append(path)
                if level + 1 < depth and entry.is_dir(follow_symlinks=False):
                    stack.append((Path(path), level + 1))
    return sorted(found)


def take_cgroups() -> list[str]:
    out: list[str] = []
    for controller in sorted(Path("/sys/fs/cgroup").iterdir()) if Path("/sys/fs/cgroup").is_dir() else []:
        if not controller.is_dir() or controller.is_symlink():
            continue
        for dirpath, _dirs, _files in os.walk(controller):
            out.append(dirpath)
    return sorted(out)


def _mounts() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    points = []
    for line in lines:
        parts = line.split()
        sep = parts.index("-")
        points.append(f"{parts[4]} {parts[sep + 1]}")
    return sorted(points)


def is_node_process(cgroup: str, cmdline: str, markers: Iterable[str] = ()) -> bool:
    """A real node's process: in a pod's cgroup, or its command line names the state directory (every program the
    node starts does: containerd, kubelet, kube-proxy and kube-router by their config paths, a shim by its
    -address). Not by name: an image test on the same machine runs a containerd, runc and pause of its own."""
    return "/kubepods" in cgroup or any(m and m in cmdline for m in markers)


def node_processes(markers: Iterable[str] = ()) -> list[str]:
    """Processes a real node runs (`is_node_process`), as `name pid` strings."""
    found = []
    marks = [m for m in markers if m]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = (entry / "cgroup").read_text()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not cmdline or stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue
        name = Path(cmdline.split(" ", 1)[0]).name
        if is_node_process(cgroup, cmdline, marks):
            found.append(f"{name} {entry.name}")
    return sorted(found)


def take(markers: Iterable[str] = ()) -> Snapshot:
    """Everything `diff` compares, from the live host."""
    return Snapshot(
        iptables={fam: normalize_iptables(_run([f"{fam}-save"])) for fam in ("iptables", "ip6tables")},
        nft_tables=sorted(line for line in _run(["nft", "list", "tables"]).splitlines() if line.strip()),
        ipsets=sorted(_run(["ipset", "list", "-n"]).split()),
        links=sorted(_link_names()),
        routes=sorted(_run(["ip", "-4", "route", "show", "table", "all"]).splitlines()
                      + _run(["ip", "-6", "route", "show", "table", "all"]).splitlines()),
        netns=sorted(set(_listdir("/run/netns")) | set(_listdir("/var/run/netns"))),
        mounts=_mounts(),
        cgroups=take_cgroups(),
        sysctls=read_sysctls(),
        directories=_list_directories(DIRECTORY_ROOTS),
        node_processes=node_processes(markers),
    )


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _link_names() -> list[str]:
    return [name.split("@", 1)[0] for name in _listdir("/sys/class/net")]


# --- comparing (pure) --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    part: str
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def __str__(self) -> str:
        lines = [f"{self.part}:"]
        lines += [f"  + {a}" for a in self.added[:40]]
        lines += [f"  - {r}" for r in self.removed[:40]]
        more = len(self.added) + len(self.removed) - min(40, len(self.added)) - min(40, len(self.removed))
        if more > 0:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


def _set_diff(part: str, before: Iterable[str], after: Iterable[str]) -> Difference | None:
    b, a = set(before), set(after)
    if a == b:
        return None
    return Difference(part, tuple(sorted(a - b)), tuple(sorted(b - a)))


def node_cgroups(before: Iterable[str], after: Iterable[str]) -> tuple[list[str], list[str]]:
    """The cgroups a node could have made or removed, from both snapshots: kubelet's `kubepods` hierarchy (the
    cgroupfs driver puts every pod and container there) and containerd's `k8s.io` parent. Other groups come and go
    on a shared machine (the job runner's per-command groups, an image test's containers under runc)."""

    def counts(path: str) -> bool:
        return "/kubepods" in path or "/k8s.io" in path

    return sorted(p for p in before if counts(p)), sorted(p for p in after if counts(p))


def sysctl_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Keys present in both snapshots whose values differ: key -> (before, after).

    Keys only one side has belong to interfaces created or removed meanwhile; those show up as links."""
    return {k: (before[k], after[k]) for k in sorted(before.keys() & after.keys())
            if before[k] != after[k] and not VOLATILE_SYSCTLS.match(k)}


NODE_MOUNT_ROOTS = ("/run/containerd", "/run/netns", "/var/run/netns", "/var/lib/kubelet", "/var/lib/containerd",
                    "/var/lib/cni", "/run/kubelet", "/sys/fs/cgroup", "/sys/fs/bpf")
"""Where containerd, kubelet and the CNI plugins mount outside the state directory (their defaults, or seen here)."""
NODE_MOUNT_TYPES = frozenset({"overlay", "nsfs", "shm", "tmpfs", "cgroup", "cgroup2", "bpf"})
"""What a container runtime or kubelet mounts: a pod's root filesystem, network namespace, /dev/shm, projected
volumes, cgroups."""


def node_mounts(mounts: Iterable[str], roots: Iterable[str] = ()) -> list[str]:
    """The mounts (`point fstype`) a node could have made or removed: under its directories (`roots`: the state
    directory; NODE_MOUNT_ROOTS), or of a type a runtime makes. Another user's mounts elsewhere (an image build
    mounting /proc into a rootfs it bootstraps) are not compared: they come and go on a shared machine."""
    prefixes = tuple(r.rstrip("/") + "/" for r in (*roots, *NODE_MOUNT_ROOTS) if r)
    out = []
    for mount in mounts:
        point, _, fstype = mount.rpartition(" ")
        if fstype in NODE_MOUNT_TYPES or (point + "/").startswith(prefixes):
            out.append(mount)
    return out


def diff(before: Snapshot, after: Snapshot, ignore_processes: Iterable[str] = (),
         roots: Iterable[str] = ()) -> list[Difference]:
    """What differs between two snapshots, part by part (an empty list: the host is as it was). `roots`: the
    node's state directory (its mounts are compared whatever their type)."""
    out: list[Difference] = []
    for fam in sorted(set(before.iptables) | set(after.iptables)):
        d = _set_diff(f"{fam} rules", before.iptables.get(fam, []), after.iptables.get(fam, []))
        if d:
            out.append(d)
    roots = list(roots)
    mounts = _set_diff("mounts", node_mounts(before.mounts, roots), node_mounts(after.mounts, roots))
    if mounts:
        out.append(mounts)
    for part in ("nft_tables", "ipsets", "links", "routes", "netns", "directories"):
        d = _set_diff(part, getattr(before, part), getattr(after, part))
        if d:
            out.append(d)
    cgroups = _set_diff("cgroups", *node_cgroups(before.cgroups, after.cgroups))
    if cgroups:
        out.append(cgroups)
    ignored = set(ignore_processes)
    procs = _set_diff("node processes", [p for p in before.node_processes if p not in ignored],
                      [p for p in after.node_processes if p not in ignored])
    if procs and procs.added:
        out.append(Difference(procs.part, procs.added, ()))
    changed = sysctl_changes(before.sysctls, after.sysctls)
    if changed:
        out.append(Difference("sysctls", tuple(f"{k} = {a} (was {b})" for k, (b, a) in changed.items()), ()))
    return out
