"""A real Kubernetes control plane as processes on 127.0.0.1 (envtest-style), plus KWOK for a fake Node.

`up()` is idempotent: it reuses every component that still runs and (re)starts only what is missing, so the same
call serves `tiered dev up`, the pytest session fixture, and chaos tests that kill a component on purpose.
Every process we start carries the state directory in its command line; `down()` uses that to stop our processes
and nothing else, even when the state file was lost.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tiered_dev import procs
from tiered_dev.devcluster import build, node
from tiered_dev.devcluster.pki import Pki, ensure_pki

ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
FAKE_NODE = "kwok-node-0"
OPERATOR_NAMESPACE = "tiered-system"
OPERATOR_SERVICE_ACCOUNT = "tiered-operator"
TOKEN_SECONDS = 48 * 3600


class ComponentFailed(RuntimeError):
    """A component did not become healthy; carries its name and the tail of its log."""

    def __init__(self, component: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{component} failed to start: {reason}\n--- last lines of its log ---\n{log_tail}")
        self.component = component
        self.log_tail = log_tail


@dataclass
class Cluster:
    """What a client needs to use a running local control plane."""

    state_dir: Path
    bin_dir: Path
    server: str
    ports: dict[str, int] = field(default_factory=dict)
    real_node: bool = False
    """A real node (tiered_dev.devcluster.node) runs beside the KWOK node; the API server listens on its address."""

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.state_dir / "operator.kubeconfig"

    @property
    def kubectl_path(self) -> Path:
        return self.bin_dir / "kubectl"

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run the cluster's own kubectl (same version as the API server) with the admin kubeconfig."""
        cmd = [str(self.kubectl_path), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, cmd, result.stdout, result.stderr)
        return result


# --- state -------------------------------------------------------------------------------------------------------


def _state_path(state_dir: Path) -> Path:
    return state_dir / "state.json"


def _load_state(state_dir: Path) -> dict[str, object]:
    path = _state_path(state_dir)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _save_state(state_dir: Path, state: dict[str, object]) -> None:
    tmp = _state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(_state_path(state_dir))


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- processes ---------------------------------------------------------------------------------------------------


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free_port() -> int:
    """A free loopback port BELOW the kernel's ephemeral range.

    A port from bind(0) lies inside that range, so between our probe and the component's own bind any outgoing
    connection on the machine (tests open thousands) may take it: "address already in use" at start-up or at a
    chaos test's restart. Ports under the range are only ever taken by an explicit bind.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _our_processes(state_dir: Path) -> list[int]:
    """Control-plane processes naming our state directory (strays of an earlier run included)."""
    return [p for p in procs.find_ours(state_dir) if Path(procs.cmdline(p).split(" ", 1)[0]).name in build.COMPONENTS]


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _start(name: str, argv: list[str], state_dir: Path) -> int:
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return proc.pid


def _stop_pids(pids: list[int], grace: float = 10.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if procs.alive(pid)]
        if alive:
            time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


# --- health ------------------------------------------------------------------------------------------------------


def _https_context(pki: Pki, client: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    if client:
        ctx.load_cert_chain(str(pki.client_cert(client)), str(pki.client_key(client)))
    return ctx


def _probe(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _wait(name: str, check: Callable[[], bool], pid: int, state_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not procs.alive(pid):
            raise ComponentFailed(name, "process exited", _log_tail(state_dir / "logs" / f"{name}.log"))
        time.sleep(0.25)
    raise ComponentFailed(name, f"not healthy after {timeout:.0f}s", _log_tail(state_dir / "logs" / f"{name}.log"))


# --- kubeconfigs -------------------------------------------------------------------------------------------------


def _kubeconfig(server: str, ca: Path, user: dict[str, str]) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tiered-dev", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "tiered-dev", "context": {"cluster": "tiered-dev", "user": "user"}}],
        "current-context": "tiered-dev",
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _write_cert_kubeconfig(path: Path, server: str, pki: Pki, client: str) -> None:
    user = {"client-certificate": str(pki.client_cert(client)), "client-key": str(pki.client_key(client))}
    path.write_text(_kubeconfig(server, pki.ca_cert, user))
    path.chmod(0o600)


# --- the components ----------------------------------------------------------------------------------------------


def _argv(
    name: str, bins: Path, state_dir: Path, pki: Pki, ports: dict[str, int], real_node: bool = False
) -> list[str]:
    kubeconfigs = state_dir / "kubeconfigs"
    if name == "etcd":
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        return [
            str(bins / "etcd"), "--name=tiered-dev", f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=tiered-dev={peer}", "--unsafe-no-fsync=true", "--log-level=warn",
        ]
    if name == "kube-apiserver":
        address = node.NODE_IP if real_node else "127.0.0.1"
        if real_node:
            # Pods reach the API server at the node address (the `kubernetes` Service's endpoint, kept by the
            # lease reconciler); it calls kubelets by their InternalIP, never by a name.
            node_flags = [
                "--endpoint-reconciler-type=lease", "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
            ]
        else:
            node_flags = ["--endpoint-reconciler-type=none", "--authorization-mode=RBAC"]
        return [
            str(bins / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            f"--bind-address={address}", f"--advertise-address={address}",
            f"--secure-port={ports['kube-apiserver']}",
            f"--cert-dir={state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={node.SERVICE_CIDR}",
            "--allow-privileged=true",
            *node_flags,
            "--v=1",
        ]
    common = [
        f"--kubeconfig={kubeconfigs / name}",
        f"--authentication-kubeconfig={kubeconfigs / name}",
        f"--authorization-kubeconfig={kubeconfigs / name}",
        "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={ports[name]}",
    ]
    if name == "kube-controller-manager":
        return [
            str(bins / name), *common,
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}", f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=true",
            "--controllers=*",
            # The default client rate (20 requests/s, bursts of 30) makes the Deployment and ReplicaSet
            # controllers the bottleneck when hundreds of Deployments arrive at once (the operator's scale bench:
            # ~35 s from Deployment created to Available at 200 tiers); clusters of that size raise it the same way.
            "--kube-api-qps=100", "--kube-api-burst=200",
        ]
    if name == "kube-scheduler":
        return [str(bins / name), *common]
    if name == "kwok":
        return [
            str(bins / "kwok"), f"--kubeconfig={kubeconfigs / 'kwok'}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector=", "--manage-single-node=",
            "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
            "--disregard-status-with-label-selector=",
            "--cidr=10.244.0.1/24", "--node-ip=127.0.0.1", "--node-lease-duration-seconds=40",
            f"--server-address=127.0.0.1:{ports['kwok']}",
        ]
    raise ValueError(f"unknown component {name!r}")


def _health_check(name: str, pki: Pki, ports: dict[str, int], real_node: bool = False) -> Callable[[], bool]:
    if name == "etcd":
        return lambda: _probe(f"http://127.0.0.1:{ports['etcd']}/health", None)
    if name == "kube-apiserver":
        ctx = _https_context(pki, "admin")
        address = node.NODE_IP if real_node else "127.0.0.1"
        return lambda: _probe(f"https://{address}:{ports[name]}/readyz", ctx)
    if name in ("kube-controller-manager", "kube-scheduler"):
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs these components make for themselves
        return lambda: _probe(f"https://127.0.0.1:{ports[name]}/healthz", insecure)
    if name == "kwok":
        return lambda: _probe(f"http://127.0.0.1:{ports['kwok']}/healthz", None)
    raise ValueError(name)


def _fake_node_manifest() -> str:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": FAKE_NODE,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": FAKE_NODE,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "500"},
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "500"},
        },
    }
    return yaml.safe_dump(node)


def _install_crds(cluster: Cluster, root: Path) -> None:
    """The project's CRDs (crds/, generated from the models), so a fresh control plane is ready for samples."""
    crds = root / "crds"
    if (crds / "kustomization.yaml").exists():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-dev", "-k", str(crds))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l",
                        "app.kubernetes.io/part-of=tiered", check=False)


def _ensure_operator_identity(cluster: Cluster, root: Path) -> None:
    """Apply the project's RBAC and mint a token for its ServiceAccount into operator.kubeconfig."""
    rbac = root / "manifests" / "rbac"
    if not (rbac / "kustomization.yaml").exists():
        return
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-dev", "-k", str(rbac))
    path = cluster.operator_kubeconfig
    fresh = path.exists() and time.time() - path.stat().st_mtime < TOKEN_SECONDS / 2
    if fresh and f"server: {cluster.server}\n" in path.read_text():
        return
    token = cluster.kubectl(
        "create", "token", OPERATOR_SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, f"--duration={TOKEN_SECONDS}s"
    ).stdout.strip()
    path.write_text(_kubeconfig(cluster.server, cluster.state_dir / "pki" / "ca.crt", {"token": token}))
    path.chmod(0o600)


def _wait_node_ready(cluster: Cluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cluster.kubectl(
            "get", "node", FAKE_NODE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        )
        if result.stdout.strip() == "True":
            return
        time.sleep(0.5)
    raise ComponentFailed("kwok", f"node {FAKE_NODE} not Ready after {timeout:.0f}s",
                          _log_tail(cluster.state_dir / "logs" / "kwok.log"))


NodeMode = str
"""`kwok` (the fake node only) or `real` (a real node beside it, tiered_dev.devcluster.node)."""


def up(state_dir: Path, progress: Callable[[str], None] = print, node_mode: NodeMode | None = None,
       images: node.NodeImages | None = None) -> Cluster:
    """Start (or reuse) the control plane whose files live in `state_dir`; return how to reach it.

    `node_mode`: None keeps what the state directory runs (KWOK only when new); `real` adds a real node (one per
    machine) and moves the API server to the node address, restarting the components that talk to it."""
    state_dir = state_dir.resolve()
    bins = build.ensure_binaries()
    root = build.repo_root()
    with _locked(state_dir):
        state = _load_state(state_dir)
        mode = node_mode or str(state.get("node") or "kwok")
        if mode not in ("kwok", "real"):
            raise ValueError(f"node mode must be kwok or real, got {mode!r}")
        if mode == "kwok" and state.get("node") == "real":
            raise node.RealNodeError(f"{state_dir} runs a real node: `tiered dev down` first to go back to KWOK only")
        real = mode == "real"
        ports = {k: int(v) for k, v in dict(state.get("ports", {})).items()}  # type: ignore[call-overload]
        for name in (*ORDER, "etcd-peer"):
            ports.setdefault(name, _free_port())
        pids = {k: int(v) for k, v in dict(state.get("pids", {})).items()}  # type: ignore[call-overload]
        lock_fd: int | None = None
        if real:
            missing = node.missing_host_tools()
            if missing:
                raise node.RealNodeError(f"the real node needs Debian packages {' '.join(missing)}: "
                                         "run `make realnode-deps`")
            lock_fd = node.acquire_lock(state_dir)
            node.prepare_host(node.NodePaths(state_dir))
        try:
            pki = ensure_pki(state_dir / "pki", extra_ips=(node.NODE_IP,) if real else (), node_clients=real)
            address = node.NODE_IP if real else "127.0.0.1"
            server = f"https://{address}:{ports['kube-apiserver']}"
            cluster = Cluster(state_dir=state_dir, bin_dir=bins, server=server, ports=ports, real_node=real)
            if state.get("node", "kwok") != mode:
                # The API server moves to the node address: restart it and everything that calls it.
                for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver"):
                    pid = pids.pop(name, None)
                    if pid and procs.is_ours(pid, state_dir):
                        _stop_pids([pid])

            (state_dir / "kubeconfigs").mkdir(parents=True, exist_ok=True)
            _write_cert_kubeconfig(cluster.kubeconfig, server, pki, "admin")
            for name, client in (("kube-controller-manager", "controller-manager"), ("kube-scheduler", "scheduler"),
                                 ("kwok", "kwok")):
                _write_cert_kubeconfig(state_dir / "kubeconfigs" / name, server, pki, client)

            def save() -> None:
                _save_state(state_dir, {"ports": ports, "pids": pids, "bin_dir": str(bins), "node": mode})

            started_any = False
            for name in ORDER:
                pid = pids.get(name)
                check = _health_check(name, pki, ports, real)
                if pid and procs.is_ours(pid, state_dir):
                    if name in ("etcd", "kube-apiserver"):
                        _wait(name, check, pid, state_dir, timeout=60)
                    continue
                progress(f"starting {name} on {address if name == 'kube-apiserver' else '127.0.0.1'}:{ports[name]}")
                pid = _start(name, _argv(name, bins, state_dir, pki, ports, real), state_dir)
                pids[name] = pid
                save()
                _wait(name, check, pid, state_dir, timeout=90)
                started_any = True
            save()

            cluster.kubectl("apply", "--server-side", "--field-manager=tiered-dev", "-f", "-",
                            input=_fake_node_manifest())
            _wait_node_ready(cluster)
            _install_crds(cluster, root)
            _ensure_operator_identity(cluster, root)
            if real:
                node.up(state_dir, server, pki, cluster.kubectl, lock_fd, images or node.project_images(), progress)
        finally:
            if lock_fd is not None:
                os.close(lock_fd)  # the node's processes hold their own copies of the lock
        if started_any:
            progress(f"control plane ready at {server}; kubeconfig: {cluster.kubeconfig}")
        return cluster


def node_mode(state_dir: Path) -> NodeMode:
    """What the state directory runs (or last ran): `kwok` or `real`."""
    return str(_load_state(state_dir.resolve()).get("node") or "kwok")


def down(state_dir: Path, progress: Callable[[str], None] = lambda _m: None) -> list[int]:
    """Stop every process of this control plane (found by state file and by command line) and of its real node,
    and undo what the real node changed on the host; return the pids stopped."""
    state_dir = state_dir.resolve()
    if not state_dir.exists():
        return []
    with _locked(state_dir):
        state = _load_state(state_dir)
        node_pids = node.down(state_dir, progress)
        recorded = [int(p) for p in dict(state.get("pids", {})).values()]  # type: ignore[call-overload]
        pids = sorted({p for p in recorded if procs.is_ours(p, state_dir)} | set(_our_processes(state_dir)))
        # Stop clients before the store: kwok, scheduler, controller-manager, apiserver, etcd.
        by_name = {Path(procs.cmdline(p).split(" ", 1)[0]).name: p for p in pids}
        ordered = [by_name[n] for n in reversed(ORDER) if n in by_name]
        ordered += [p for p in pids if p not in ordered]
        for pid in ordered:
            _stop_pids([pid])
        left = node.restore_host(state_dir, progress)
        if left:
            raise node.RealNodeError("the host still differs from before the real node:\n"
                                     + "\n".join(str(d) for d in left))
        state["pids"] = {}
        state.pop("node", None)
        _save_state(state_dir, state)
        return node_pids + ordered


def status(state_dir: Path) -> dict[str, bool]:
    """Which components of this control plane (and of its real node, when it has one) run now."""
    state_dir = state_dir.resolve()
    state = _load_state(state_dir)
    pids = {k: int(v) for k, v in dict(state.get("pids", {})).items()}  # type: ignore[call-overload]
    running = {name: bool(pids.get(name)) and procs.is_ours(pids[name], state_dir) for name in ORDER}
    if state.get("node") == "real":
        running.update(node.status(state_dir))
    return running


def stop_component(state_dir: Path, name: str, sig: int = signal.SIGKILL) -> None:
    """Kill one component (chaos tests); a later `up()` restarts it with the same ports and data."""
    state_dir = state_dir.resolve()
    pids = {k: int(v) for k, v in dict(_load_state(state_dir).get("pids", {})).items()}  # type: ignore[call-overload]
    pid = pids.get(name)
    if pid and procs.is_ours(pid, state_dir):
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while procs.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


def start_component(state_dir: Path, name: str, timeout: float = 90) -> bool:
    """Start one component again after `stop_component` (same ports, data and flags) and wait until it is healthy.

    Unlike `up()` it touches nothing else (no node, CRD or RBAC apply), so a chaos test can time the moment the
    component is back. Returns False when the component was still running (nothing started). The API server's
    health needs etcd: start etcd first when both are down.
    """
    state_dir = state_dir.resolve()
    with _locked(state_dir):
        state = _load_state(state_dir)
        ports = {k: int(v) for k, v in dict(state.get("ports", {})).items()}  # type: ignore[call-overload]
        pids = {k: int(v) for k, v in dict(state.get("pids", {})).items()}  # type: ignore[call-overload]
        if name not in ports:
            raise ValueError(f"{name!r} was never started in {state_dir} (run up() first)")
        pid = pids.get(name)
        if pid and procs.is_ours(pid, state_dir):
            return False
        bins = Path(str(state["bin_dir"])) if state.get("bin_dir") else build.ensure_binaries()
        pki = ensure_pki(state_dir / "pki")
        deadline = time.monotonic() + timeout
        while True:
            real = state.get("node") == "real"
            pid = _start(name, _argv(name, bins, state_dir, pki, ports, real), state_dir)
            pids[name] = pid
            _save_state(state_dir, {**state, "pids": pids})
            try:
                _wait(name, _health_check(name, pki, ports, real), pid, state_dir,
                      timeout=max(5.0, deadline - time.monotonic()))  # fmt: skip
                return True
            except ComponentFailed as exc:
                # Right after a SIGKILL the port can still be held by the killed process's connections for a
                # moment (seen with a SIGSTOPped client): retry until the deadline instead of failing the restart.
                if "address already in use" not in exc.log_tail or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
