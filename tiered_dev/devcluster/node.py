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
import shlex
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
from tiered_dev.devcluster.pki import REAL_NODE_NAME, Pki

REAL_NODE = REAL_NODE_NAME
BRIDGE = "tiered0"
NODE_IP = "10.200.0.1"
POD_CIDR = "10.200.0.0/24"
SERVICE_CIDR = "10.0.0.0/24"
CLUSTER_DNS = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
OUTSIDE_NETNS = "tiered-outside"
OUTSIDE_HOST_LINK = "tiered-out0"
OUTSIDE_GATEWAY = "10.201.0.1"
OUTSIDE_ADDRESSES = ("10.201.0.2", "10.201.0.3")
"""Two addresses in the outside namespace: a cloud tier declares one, the other shows that only it is open."""
LOCK_PATH = Path("/tmp/tiered-realnode.lock")
KWOK_TAINT = {"key": "tiered.dev/simulated", "value": "kwok", "effect": "NoSchedule"}
"""On the KWOK node while a real node exists, so workloads land on the real one; a pod that should stay simulated
(scale tests with hundreds of replicas) tolerates it."""
REAL_NODE_LABELS = {"tiered.dev/node": "real"}
COREDNS_IMAGE = f"localhost/tiered/coredns:{build.COREDNS_VERSION}"
CONTAINERD_NAMESPACE = "k8s.io"
PROCESSES = ("containerd", "kubelet", "kube-proxy", "kube-router")
"""Host processes of the node, in start order (stopped in reverse)."""
CHAIN_PREFIXES = ("KUBE-", "CNI-")

Progress = Callable[[str], None]


class RealNodeError(RuntimeError):
    """The real node cannot be brought up (or down); the message says what to do."""


@dataclass(frozen=True)
class NodePaths:
    """Every file of the node, under `<state>/node/`."""

    state: Path

    @property
    def root(self) -> Path:
        return self.state / "node"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_data(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> Path:
        return self.kubelet / "root"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    @property
    def snapshot(self) -> Path:
        return self.root / "host-before.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def kubeconfig(self, name: str) -> Path:
        return self.state / "kubeconfigs" / name


# --- small host helpers ------------------------------------------------------------------------------------------


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


# --- configuration files (pure builders) -------------------------------------------------------------------------


def containerd_config(paths: NodePaths, sandbox_image: str) -> str:
    """containerd 1.6 with its CRI plugin, everything under the node's directory.

    restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE, and without it every sandbox fails with runc
    "can't get final child's PID from pipe: EOF". cgroupfs (SystemdCgroup false): PID 1 is not systemd."""
    c = paths.containerd
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{c / 'root'}"
state = "{c / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{c / 'containerd.sock.ttrpc'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{c / 'opt'}"

[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
  discard_unpacked_layers = false

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"

[{cri}.cni]
  bin_dir = "{paths.cni_bin}"
  conf_dir = "{paths.cni_conf}"
  max_conf_num = 1

[{cri}.registry]
  config_path = ""
"""


def cni_config(paths: NodePaths) -> dict[str, Any]:
    """The bridge on `tiered0`, addresses from host-local in the pod CIDR, portmap for hostPorts."""
    return {
        "cniVersion": "1.0.0",
        "name": "tiered",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_data),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def kubelet_config(paths: NodePaths, pki: Pki, port: int, healthz_port: int) -> dict[str, Any]:
    """KubeletConfiguration for this machine: cgroup v1 with cgroupfs, no swap check, no oom_score_adj changes
    (no CAP_SYS_RESOURCE), image GC off (images cannot be pulled again here), everything under the node dir."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(paths.resolv_conf),
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet / "volume-plugins"),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "maxPods": 60,
        "registerNode": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "shutdownGracePeriod": "0s",
        "logging": {"format": "text"},
    }


def kube_proxy_config(paths: NodePaths, healthz_port: int, metrics_port: int) -> dict[str, Any]:
    """iptables mode; NodePorts only on the node address; conntrack sysctls left as they are."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "hostnameOverride": REAL_NODE,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "oomScoreAdj": 0,
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
    }


COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        ttl 30
    }}
    cache 30
    reload
}}
"""
"""No `forward`: names outside the cluster are answered REFUSED here, never asked of the machine's resolver."""


def coredns_objects() -> list[dict[str, Any]]:
    """CoreDNS as most distributions run it (kube-system, k8s-app=kube-dns, Service kube-dns at CLUSTER_DNS), so
    the operator's DNS egress rule selects it as it would on any cluster."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"namespace": "kube-system", "labels": {**labels, "app.kubernetes.io/part-of": "tiered-dev"}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", **meta}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "tiered-dev:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tiered-dev:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tiered-dev:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", **meta},
         "data": {"Corefile": COREFILE}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", **meta},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "nodeSelector": dict(REAL_NODE_LABELS),
                        "securityContext": {
                            "runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            # Port 53 without root or capabilities (a namespaced, "safe" sysctl).
                            "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}],
                        },
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                      {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2},
                            "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
                            "resources": {"requests": {"cpu": "20m", "memory": "32Mi"},
                                          "limits": {"memory": "128Mi"}},
                            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}},
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                        }],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", **meta},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            },
        },
    ]


def kube_router_rbac() -> list[dict[str, Any]]:
    """What kube-router's firewall reads (its upstream ClusterRole, firewall part) for the identity in pki."""
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "tiered-dev:kube-router"},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "nodes", "endpoints"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["get", "list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "tiered-dev:kube-router"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "tiered-dev:kube-router"},
            "subjects": [{"kind": "User", "name": "tiered-kube-router", "apiGroup": "rbac.authorization.k8s.io"}],
        },
    ]


def process_argv(name: str, paths: NodePaths, bins: Path, ports: Mapping[str, int]) -> list[str]:
    if name == "containerd":
        return [shutil.which("containerd") or "containerd", "--config", str(paths.containerd_config)]
    if name == "kubelet":
        return [
            str(bins / "kubelet"), f"--config={paths.kubelet / 'config.yaml'}",
            f"--kubeconfig={paths.kubeconfig('kubelet')}", f"--root-dir={paths.kubelet_root}",
            f"--cert-dir={paths.kubelet / 'pki'}", f"--hostname-override={REAL_NODE}", f"--node-ip={NODE_IP}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in REAL_NODE_LABELS.items()), "--v=1",
        ]
    if name == "kube-proxy":
        return [str(bins / "kube-proxy"), f"--config={paths.root / 'kube-proxy.yaml'}", "--v=1"]
    if name == "kube-router":
        return [
            str(bins / "kube-router"), f"--kubeconfig={paths.kubeconfig('kube-router')}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false", "--enable-cni=false",
            f"--hostname-override={REAL_NODE}", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--health-port=0", "--metrics-port=0", "--iptables-sync-period=30s", "--v=1",
        ]
    raise ValueError(f"unknown node process {name!r}")


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
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


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


# --- down --------------------------------------------------------------------------------------------------------

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
    # Shims of containers the CRI could not remove, then anything still in a pod's cgroup.
    shims = [pid for pid in procs.find_ours(paths.containerd) if "containerd-shim" in procs.cmdline(pid)]
    _stop(shims, grace=5)
    _kill_pod_processes()
    return stopped + shims


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
    for link in sorted(set(now.links) - set(before.links)):
        master = Path(f"/sys/class/net/{link}/master")
        if link in (BRIDGE, OUTSIDE_HOST_LINK) or (master.exists() and master.resolve().name == BRIDGE):
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
    left = hoststate.diff(before, hoststate.take(markers=[str(paths.root) + "/"]))
    if not left:
        paths.snapshot.unlink()
    return left
