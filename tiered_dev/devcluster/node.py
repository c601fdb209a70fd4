"""A real node beside the KWOK node: containerd and runc (Debian), kubelet and kube-proxy (built from the pinned
module graph), the CNI bridge, CoreDNS and kube-router's NetworkPolicy firewall, with every file under
`<state>/node/`.

What it changes on the host, and how `down()` puts it back (docs/realnode.md has the whole list):

- a bridge `tiered0` holding the node's address (the pods' gateway; the API server listens there so pods can
  reach it) and a network namespace `tiered-outside` standing for the world outside the cluster, where cloud
  stand-ins run (pods reach it through the node, so NetworkPolicies apply to that traffic);
- sysctls (ip_forward, and what kubelet sets), iptables chains and rules (kubelet, kube-proxy, kube-router, the
  CNI plugins), ipsets (kube-router), cgroups (`kubepods`), mounts (pod volumes, container root filesystems, the
  pods' network namespaces), and `/run/containerd`, `/var/log/containers`, `/var/lib/cni`, which these programs
  write whatever their configuration says.

`up()` records a snapshot of all of it first (`hoststate`); `down()` stops the pods through the CRI, stops the
programs, and removes or restores whatever differs from the snapshot. Only one real node may exist on a machine:
`/tmp/tiered-realnode.lock` is held (by the node's own processes, which inherit it) while one runs.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tiered_dev import procs
from tiered_dev.devcluster import build, hoststate, ociimage
from tiered_dev.devcluster.hostrestore import restore_host, sh, write_sysctl
from tiered_dev.devcluster.nodeconfig import (
    BRIDGE,
    CLUSTER_DNS,
    CLUSTER_DOMAIN,
    CONTAINERD_NAMESPACE,
    COREDNS_IMAGE,
    KWOK_TAINT,
    NODE_IP,
    OUTSIDE_ADDRESSES,
    OUTSIDE_GATEWAY,
    OUTSIDE_HOST_LINK,
    OUTSIDE_NETNS,
    POD_CIDR,
    REAL_NODE,
    SERVICE_CIDR,
    NodePaths,
    Progress,
    RealNodeError,
    cni_config,
    containerd_config,
    coredns_objects,
    kube_proxy_config,
    kube_router_rbac,
    kubelet_config,
    process_argv,
)
from tiered_dev.devcluster.pki import Pki

__all__ = [
    "BRIDGE", "CLUSTER_DNS", "CLUSTER_DOMAIN", "KWOK_TAINT", "NODE_IP", "OUTSIDE_ADDRESSES", "OUTSIDE_GATEWAY",
    "OUTSIDE_HOST_LINK", "OUTSIDE_NETNS", "POD_CIDR", "REAL_NODE", "SERVICE_CIDR", "NodeImages", "NodePaths",
    "RealNodeError", "acquire_lock", "down", "exists", "lock_holder", "missing_host_tools", "outside_command",
    "prepare_host", "project_images", "restore_host", "status", "up",
]

LOCK_PATH = Path("/tmp/tiered-realnode.lock")
PROCESSES = ("containerd", "kubelet", "kube-proxy", "kube-router")
"""Host processes of the node, in start order (stopped in reverse)."""


def missing_host_tools() -> list[str]:
    """Host programs the node needs (Debian packages; `make realnode-deps` installs them)."""
    need = {"containerd": "containerd", "runc": "runc", "ctr": "containerd", "iptables": "iptables",
            "ipset": "ipset", "ip": "iproute2", "nft": "nftables", "conntrack": "conntrack"}
    return sorted({pkg for tool, pkg in need.items() if shutil.which(tool) is None})


# --- the lock: one real node per machine ------------------------------------------------------------------------


def acquire_lock(state_dir: Path) -> int | None:
    """Take the machine-wide lock for `state_dir`; return its fd (to hand to the node's processes), or None when
    this state directory's node already holds it. Raise when another state directory's node does."""
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        owner = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
        os.close(fd)
        holder = owner[0] if owner else "(unknown)"
        if holder == str(state_dir):
            return None
        raise RealNodeError(
            f"another real node runs on this machine (state directory {holder}, {LOCK_PATH} is held); only one "
            f"may exist at a time: stop it with `tiered dev down --state-dir {holder}`") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{state_dir}\n{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder() -> str | None:
    """The state directory whose node holds the lock now, or None."""
    try:
        fd = os.open(LOCK_PATH, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        text = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
        return text[0] if text else "(unknown)"
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# --- host network ------------------------------------------------------------------------------------------------


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def prepare_host(paths: NodePaths) -> None:
    """Snapshot the host (first time only), then the bridge with the node address and the outside namespace.

    Runs before the API server starts, which listens on the node address."""
    paths.root.mkdir(parents=True, exist_ok=True)
    if not paths.snapshot.exists():
        snap = hoststate.take(markers=[str(paths.state) + "/"])
        tmp = paths.snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap.to_json()))
        tmp.replace(paths.snapshot)
    write_sysctl("net.ipv4.ip_forward", "1")
    write_sysctl("net.bridge.bridge-nf-call-iptables", "1")
    write_sysctl("net.bridge.bridge-nf-call-ip6tables", "1")
    if not _link_exists(BRIDGE):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    prefix = POD_CIDR.split("/")[1]
    if f"inet {NODE_IP}/" not in sh("ip", "-4", "addr", "show", "dev", BRIDGE):
        sh("ip", "addr", "add", f"{NODE_IP}/{prefix}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    if OUTSIDE_NETNS not in sh("ip", "netns", "list").split():
        sh("ip", "netns", "add", OUTSIDE_NETNS)
    if not _link_exists(OUTSIDE_HOST_LINK):
        sh("ip", "link", "add", OUTSIDE_HOST_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUTSIDE_NETNS)
        sh("ip", "addr", "add", f"{OUTSIDE_GATEWAY}/24", "dev", OUTSIDE_HOST_LINK)
        sh("ip", "link", "set", OUTSIDE_HOST_LINK, "up")
        for address in OUTSIDE_ADDRESSES:
            sh("ip", "addr", "add", f"{address}/24", "dev", "eth0", netns=OUTSIDE_NETNS)
        sh("ip", "link", "set", "lo", "up", netns=OUTSIDE_NETNS)
        sh("ip", "link", "set", "eth0", "up", netns=OUTSIDE_NETNS)
        sh("ip", "route", "add", "default", "via", OUTSIDE_GATEWAY, netns=OUTSIDE_NETNS)


def outside_command(argv: list[str]) -> list[str]:
    """`argv` run inside the outside namespace (a cloud stand-in there is reached only through the node)."""
    return ["ip", "netns", "exec", OUTSIDE_NETNS, *argv]


# --- state and processes -----------------------------------------------------------------------------------------


def _load(paths: NodePaths) -> dict[str, Any]:
    try:
        data = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(paths: NodePaths, data: Mapping[str, Any]) -> None:
    tmp = paths.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(paths.state_file)


def our_processes(paths: NodePaths) -> dict[str, list[int]]:
    """The node's host processes by program name, found by command line (their flags name the state dir)."""
    found: dict[str, list[int]] = {}
    for pid in procs.find_ours(paths.state):
        name = Path(procs.cmdline(pid).split(" ", 1)[0]).name
        if name in PROCESSES:
            found.setdefault(name, []).append(pid)
    return found


def _start(name: str, argv: list[str], paths: NodePaths, lock_fd: int | None) -> int:
    paths.logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # kubelet and containerd run iptables/ip/mount from PATH; make sure the sbin directories are on it.
    env["PATH"] = ":".join(dict.fromkeys([*env.get("PATH", "").split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"]))
    with open(paths.log(name), "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env,
                                pass_fds=(lock_fd,) if lock_fd is not None else ())
    return proc.pid


def _stop(pids: Iterable[int], grace: float = 15.0) -> None:
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(procs.alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if procs.alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    # SIGKILL is not instant on a loaded machine: wait, so that what follows (the host comparison) sees it gone.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(procs.alive(p) for p in pids):
        time.sleep(0.1)


def _log_tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None,
               pid: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not procs.alive(pid):
            raise RealNodeError(f"{what}: the process exited\n{_log_tail(log) if log else ''}")
        time.sleep(0.25)
    raise RealNodeError(f"{what}: not done after {timeout:.0f}s\n{_log_tail(log) if log else ''}")


def ctr(paths: NodePaths, *args: str, check: bool = True, timeout: float = 300) -> str:
    return sh("ctr", "--address", str(paths.containerd_socket), "--namespace", CONTAINERD_NAMESPACE, *args,
              check=check, timeout=timeout)


def crictl(paths: NodePaths, bins: Path, *args: str, check: bool = True, timeout: float = 120) -> str:
    return sh(str(bins / "crictl"), "--runtime-endpoint", f"unix://{paths.containerd_socket}",
              "--image-endpoint", f"unix://{paths.containerd_socket}", "--timeout", "60s", *args,
              check=check, timeout=timeout)


# --- up ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeImages:
    """The images a real node runs besides its own CoreDNS: the CRI sandbox image's name, and how to load them
    (given the node's containerd socket; returns the names loaded)."""

    sandbox: str
    load: Callable[[Path, Progress], list[str]]


def project_images() -> NodeImages:
    """The project's images (tiered_dev.images: pause, operator, router, SLM), built or reused from the cache
    (keyed by every build input) and imported under the names the operator writes into its Deployments."""
    from tiered_dev import images

    def load(socket: Path, progress: Progress) -> list[str]:
        built = images.ensure_images(progress=progress)
        images.import_images(built.values(), str(socket), CONTAINERD_NAMESPACE, progress=progress)
        return sorted(image.ref for image in built.values())

    return NodeImages(sandbox=images.PAUSE_IMAGE, load=load)


def _write_cert_kubeconfig(path: Path, server: str, pki: Pki, client: str) -> None:
    doc = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "tiered-dev", "cluster": {"server": server, "certificate-authority": str(pki.ca_cert)}}],
        "users": [{"name": client, "user": {"client-certificate": str(pki.client_cert(client)),
                                            "client-key": str(pki.client_key(client))}}],
        "contexts": [{"name": "tiered-dev", "context": {"cluster": "tiered-dev", "user": client}}],
        "current-context": "tiered-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((NODE_IP, 0))
        return int(sock.getsockname()[1])


def _install_cni(paths: NodePaths, bins: Path) -> None:
    paths.cni_bin.mkdir(parents=True, exist_ok=True)
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        target = paths.cni_bin / plugin
        if not target.exists() or target.stat().st_size != (bins / plugin).stat().st_size:
            shutil.copy2(bins / plugin, target)
    paths.cni_conf.mkdir(parents=True, exist_ok=True)
    paths.cni_data.mkdir(parents=True, exist_ok=True)
    (paths.cni_conf / "10-tiered.conflist").write_text(json.dumps(cni_config(paths), indent=2))


def coredns_image_archive(bins: Path) -> bytes:
    return ociimage.image_archive(
        COREDNS_IMAGE, [ociimage.ImageFile("coredns", source=bins / "coredns")], entrypoint=["/coredns"])


def import_coredns(paths: NodePaths, bins: Path) -> None:
    if COREDNS_IMAGE in ctr(paths, "images", "ls", "-q").split():
        return
    archive = paths.root / "coredns-image.tar"
    archive.write_bytes(coredns_image_archive(bins))
    ctr(paths, "images", "import", "--no-unpack", str(archive))
    archive.unlink()


KubectlFn = Callable[..., subprocess.CompletedProcess[str]]


def _node_ready(kubectl: KubectlFn) -> bool:
    result = kubectl("get", "node", REAL_NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
                     check=False)
    return result.stdout.strip() == "True"


def _chain_exists(chain: str) -> bool:
    return any(line.startswith(f":{chain} ") for line in hoststate.normalize_iptables(sh("iptables-save")))


def up(state_dir: Path, server: str, pki: Pki, kubectl: KubectlFn, lock_fd: int | None,
       images: NodeImages, progress: Progress) -> dict[str, Any]:
    """Start (or reuse) the node's processes and add-ons; the host must be prepared and the API server up.

    Returns what the node runs: images loaded, ports, pids."""
    paths = NodePaths(state_dir)
    bins = build.ensure_node_binaries()
    saved = _load(paths)
    ports = {k: int(v) for k, v in dict(saved.get("ports", {})).items()}
    for name in ("kubelet", "kubelet-healthz", "kube-proxy-healthz", "kube-proxy-metrics"):
        ports.setdefault(name, _free_port())
    for client in ("kubelet", "kube-proxy", "kube-router"):
        _write_cert_kubeconfig(paths.kubeconfig(client), server, pki, client)
    for directory in (paths.containerd, paths.kubelet_root, paths.pod_logs, paths.kubelet / "volume-plugins"):
        directory.mkdir(parents=True, exist_ok=True)
    paths.resolv_conf.write_text("# pods with dnsPolicy Default: no nameserver (nothing resolves outside)\n")
    _install_cni(paths, bins)
    sandbox_image = images.sandbox
    paths.containerd_config.write_text(containerd_config(paths, sandbox_image))
    (paths.kubelet / "config.yaml").write_text(yaml.safe_dump(kubelet_config(
        paths, pki, ports["kubelet"], ports["kubelet-healthz"]), sort_keys=False))
    (paths.root / "kube-proxy.yaml").write_text(yaml.safe_dump(kube_proxy_config(
        paths, ports["kube-proxy-healthz"], ports["kube-proxy-metrics"]), sort_keys=False))
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-dev", "-f", "-",
            input=yaml.safe_dump_all(kube_router_rbac()))

    running = our_processes(paths)
    pids: dict[str, int] = {}
    checks: dict[str, Callable[[], bool]] = {
        "containerd": lambda: paths.containerd_socket.exists() and ctr(paths, "version", check=False) != "",
        "kubelet": lambda: _node_ready(kubectl),
        "kube-proxy": lambda: _chain_exists("KUBE-SERVICES"),
        "kube-router": lambda: _chain_exists("KUBE-ROUTER-FORWARD"),
    }
    loaded: list[str] = []
    for name in PROCESSES:
        if running.get(name):
            pids[name] = running[name][0]
        else:
            progress(f"starting {name}")
            pid = _start(name, process_argv(name, paths, bins, ports), paths, lock_fd)
            pids[name] = pid
            _save(paths, {"ports": ports, "pids": pids, "sandbox_image": sandbox_image})
            wait_until(f"{name} on the real node", checks[name], 120, paths.log(name), pid)
        if name == "containerd":
            import_coredns(paths, bins)
            loaded = images.load(paths.containerd_socket, progress)
    _save(paths, {"ports": ports, "pids": pids, "sandbox_image": sandbox_image})
    kubectl("taint", "node", "kwok-node-0", f"{KWOK_TAINT['key']}={KWOK_TAINT['value']}:{KWOK_TAINT['effect']}",
            "--overwrite", check=False)
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-dev", "-f", "-",
            input=yaml.safe_dump_all(coredns_objects()))
    result = kubectl("rollout", "status", "-n", "kube-system", "deployment/coredns", "--timeout=180s", check=False)
    if result.returncode != 0:
        raise RealNodeError(f"CoreDNS did not become ready: {result.stderr or result.stdout}\n"
                            + kubectl("get", "pods", "-n", "kube-system", "-o", "wide", check=False).stdout)
    return {"ports": ports, "pids": pids, "images": loaded}


def status(state_dir: Path) -> dict[str, bool]:
    paths = NodePaths(state_dir)
    running = our_processes(paths)
    return {name: bool(running.get(name)) for name in PROCESSES}


def exists(state_dir: Path) -> bool:
    """Whether this state directory has (or had, and not yet cleaned up) a real node."""
    return NodePaths(state_dir).snapshot.exists()


def _kill_pod_processes() -> None:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if "/kubepods" in (entry / "cgroup").read_text():
                    pids.append(int(entry.name))
    _stop(pids, grace=5)


def stop_pods(paths: NodePaths, progress: Progress) -> None:
    """Every pod sandbox stopped and removed through the CRI (CNI DEL, network namespace, mounts), while
    containerd still runs; kubelet must be stopped first so it does not start them again."""
    bins = build.node_bin_dir()
    if not (bins / "crictl").exists() or not paths.containerd_socket.exists():
        return
    pods = crictl(paths, bins, "pods", "-q", check=False).split()
    if pods:
        progress(f"stopping {len(pods)} pod sandbox(es) on the real node")
        crictl(paths, bins, "stopp", *pods, check=False, timeout=300)
        crictl(paths, bins, "rmp", "--force", *pods, check=False, timeout=300)


def down(state_dir: Path, progress: Progress = print) -> list[int]:
    """Stop the node's pods and processes (the API server may already be gone). Returns the pids stopped."""
    paths = NodePaths(state_dir)
    running = our_processes(paths)
    stopped: list[int] = []
    for name in ("kubelet",):
        _stop(running.get(name, []))
        stopped += running.get(name, [])
    if running.get("containerd"):
        stop_pods(paths, progress)
    for name in ("kube-router", "kube-proxy", "containerd"):
        _stop(running.get(name, []))
        stopped += running.get(name, [])
    # Shims of containers the CRI could not remove, then anything still in a pod's cgroup: the pods of the machine's
    # one real node, so only when that node is this state directory's (a KWOK-only `dev down` elsewhere, or one
    # while another state directory's node runs, must not touch them).
    shims = [pid for pid in procs.find_ours(paths.containerd) if "containerd-shim" in procs.cmdline(pid)]
    _stop(shims, grace=5)
    if owns_the_pods(state_dir, bool(running) or exists(state_dir), lock_holder()):
        _kill_pod_processes()
    return stopped + shims


def owns_the_pods(state_dir: Path, has_node: bool, holder: str | None) -> bool:
    """Whether processes in the machine's pod cgroups are this state directory's node's to stop: it has (or had) a
    node, and no other state directory's node holds the machine's lock."""
    return has_node and holder in (None, str(state_dir))
