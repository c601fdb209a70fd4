"""Build the control-plane binaries once from the pinned Go modules and cache them outside the repo.

The pins live in hack/controlplane/go.mod (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and
etcd from one k8s.io/kubernetes release) and hack/kwok/go.mod (KWOK, kept apart because its k8s.io dependencies
differ). The cache key is the versions plus a hash of both go.sum files, so bumping a pin rebuilds and nothing else
does.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
KWOK_VERSION = "v0.7.0"
CNI_PLUGINS_VERSION = "v1.10.0"
COREDNS_VERSION = "v1.15.0"
KUBE_ROUTER_VERSION = "v2.1.0"
CRI_TOOLS_VERSION = "v1.37.0"

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok")
NODE_COMPONENTS = ("kubelet", "kube-proxy", "bridge", "host-local", "loopback", "portmap", "coredns", "kube-router",
                   "crictl")
"""A real node's programs (`tiered dev up --node real`), built from hack/{node,cni,coredns,kube-router,cri-tools}.
hack/node requires the same k8s.io/kubernetes release as hack/controlplane but is a module of its own, so adding
the node changed neither the control plane's module graph nor its cache key."""
NODE_MODULES = ("node", "cni", "coredns", "kube-router", "cri-tools")


@dataclass(frozen=True)
class GoTarget:
    """One `go build` invocation: a module directory and the packages built from it."""

    module_dir: str
    packages: dict[str, str]  # binary name -> Go package
    ldflags: str


def repo_root() -> Path:
    """The checkout this package was imported from (editable install) or the working directory."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "hack" / "controlplane" / "go.mod").is_file():
            return parent
    cwd = Path.cwd()
    if (cwd / "hack" / "controlplane" / "go.mod").is_file():
        return cwd
    raise FileNotFoundError("cannot find hack/controlplane/go.mod above the package or in the working directory")


def _k8s_ldflags() -> str:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    prefix = "k8s.io/component-base/version"
    flags = {
        "gitVersion": KUBERNETES_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    client = "k8s.io/client-go/pkg/version"
    parts = [f"-X {prefix}.{k}={v}" for k, v in flags.items()]
    parts += [f"-X {client}.{k}={v}" for k, v in flags.items()]
    return "-s -w " + " ".join(parts)


def targets(root: Path) -> list[GoTarget]:
    return [
        GoTarget(
            module_dir=str(root / "hack" / "controlplane"),
            packages={
                "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
                "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
                "kubectl": "k8s.io/kubernetes/cmd/kubectl",
            },
            ldflags=_k8s_ldflags(),
        ),
        GoTarget(
            module_dir=str(root / "hack" / "controlplane"),
            packages={"etcd": "go.etcd.io/etcd/server/v3"},
            ldflags=f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={ETCD_VERSION}",
        ),
        GoTarget(
            module_dir=str(root / "hack" / "kwok"),
            packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            ldflags=f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION.lstrip('v')}",
        ),
    ]


def cache_root() -> Path:
    base = os.environ.get("TIERED_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tiered"
    )
    return Path(base)


def _modules_digest(root: Path, modules: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for mod in modules:
        for name in ("go.mod", "go.sum"):
            path = root / "hack" / mod / name
            if path.exists():
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def cache_key(root: Path) -> str:
    digest = _modules_digest(root, ("controlplane", "kwok"))
    return f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}_{digest}"


def node_cache_key(root: Path) -> str:
    digest = _modules_digest(root, NODE_MODULES)
    return (f"k8s-{KUBERNETES_VERSION}_cni-{CNI_PLUGINS_VERSION}_coredns-{COREDNS_VERSION}"
            f"_kube-router-{KUBE_ROUTER_VERSION}_crictl-{CRI_TOOLS_VERSION}_{digest}")


def bin_dir(root: Path | None = None) -> Path:
    root = root or repo_root()
    return cache_root() / "controlplane" / cache_key(root) / "bin"


def node_bin_dir(root: Path | None = None) -> Path:
    root = root or repo_root()
    return cache_root() / "node" / node_cache_key(root) / "bin"


def node_targets(root: Path) -> list[GoTarget]:
    hack = root / "hack"
    cni = "github.com/containernetworking/plugins/plugins"
    return [
        GoTarget(
            module_dir=str(hack / "node"),
            packages={"kubelet": "k8s.io/kubernetes/cmd/kubelet", "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy"},
            ldflags=_k8s_ldflags(),
        ),
        GoTarget(
            module_dir=str(hack / "cni"),
            packages={"bridge": f"{cni}/main/bridge", "host-local": f"{cni}/ipam/host-local",
                      "loopback": f"{cni}/main/loopback", "portmap": f"{cni}/meta/portmap"},
            ldflags=f"-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion="
                    f"{CNI_PLUGINS_VERSION}",
        ),
        GoTarget(
            module_dir=str(hack / "coredns"),
            packages={"coredns": "tiered.dev/hack/coredns"},  # upstream's main with only the plugins we use
            ldflags=f"-s -w -X github.com/coredns/coredns/coremain.GitCommit={COREDNS_VERSION}",
        ),
        GoTarget(
            module_dir=str(hack / "kube-router"),
            packages={"kube-router": "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"},
            ldflags=f"-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version={KUBE_ROUTER_VERSION}",
        ),
        GoTarget(
            module_dir=str(hack / "cri-tools"),
            packages={"crictl": "sigs.k8s.io/cri-tools/cmd/crictl"},
            ldflags=f"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={CRI_TOOLS_VERSION}",
        ),
    ]


def binaries_present(directory: Path, components: tuple[str, ...] = COMPONENTS) -> bool:
    return all((directory / name).is_file() and os.access(directory / name, os.X_OK) for name in components)


Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    stream = sys.stderr
    if stream.isatty():
        stream.write("\r\033[K" + message[:150])
    else:
        stream.write(message + "\n")
    stream.flush()


def _count_packages(target: GoTarget, env: dict[str, str]) -> int:
    result = subprocess.run(
        ["go", "list", "-deps", *target.packages.values()],
        cwd=target.module_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return max(1, len(result.stdout.splitlines()))


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOFLAGS", "-mod=mod")
    return env


def _build_target(target: GoTarget, out_dir: Path, progress: Progress, label: str) -> None:
    env = _go_env()
    download = subprocess.run(
        ["go", "mod", "download"], cwd=target.module_dir, env=env, capture_output=True, text=True, check=False
    )
    if download.returncode != 0:
        raise RuntimeError(f"go mod download failed in {target.module_dir}:\n{download.stderr[-4000:]}")
    total = _count_packages(target, env)
    cmd = ["go", "build", "-v", "-trimpath", "-ldflags", target.ldflags, "-o", str(out_dir) + "/"]
    cmd += list(target.packages.values())
    if len(target.packages) == 1:
        (name,) = target.packages
        cmd[cmd.index("-o") + 1] = str(out_dir / name)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=target.module_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    done = 0
    last_shown = -1
    every = 0 if sys.stderr.isatty() else 5  # a terminal gets a live line, a log file a line per 5 %
    tail: list[str] = []
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail[-40:], line]
        if re.match(r"^[\w.\-]+(/[\w.\-~]+)*$", line):
            done += 1
            elapsed = int(time.monotonic() - started)
            pct = min(99, done * 100 // total)
            if pct - last_shown < every:
                continue
            last_shown = pct
            progress(f"[build {label}] {pct:3d}% {done}/{total} pkgs {elapsed // 60}m{elapsed % 60:02d}s  {line}")
    if proc.wait() != 0:
        raise RuntimeError(f"go build failed for {label}:\n" + "\n".join(tail))
    progress(f"[build {label}] done in {time.monotonic() - started:.0f}s")


def ensure_binaries(progress: Progress = _stderr_progress) -> Path:
    """Return the directory holding every control-plane binary, building what is missing (once)."""
    root = repo_root()
    return _ensure(bin_dir(root), COMPONENTS, targets(root), progress)


def ensure_node_binaries(progress: Progress = _stderr_progress) -> Path:
    """Return the directory holding a real node's binaries (kubelet, kube-proxy, CNI plugins, CoreDNS,
    kube-router), building what is missing (once)."""
    root = repo_root()
    return _ensure(node_bin_dir(root), NODE_COMPONENTS, node_targets(root), progress)


def _ensure(out: Path, components: tuple[str, ...], build_targets: list[GoTarget], progress: Progress) -> Path:
    if binaries_present(out, components):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / "build.lock", "w") as lock:
        # Several shells (or test sessions) may ask at once: one builds, the others wait and reuse.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not binaries_present(out, components):
                _build_all(build_targets, out, progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out


def _build_all(build_targets: list[GoTarget], out: Path, progress: Progress) -> None:
    if shutil.which("go") is None:
        raise RuntimeError("the Go toolchain is needed to build the control plane once (apt install golang or .ci/run)")
    staging = out.parent / "bin.partial"
    staging.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for target in build_targets:
        if all((staging / name).is_file() for name in target.packages):
            continue
        _build_target(target, staging, progress, "+".join(target.packages))
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    (out.parent / "build-seconds").write_text(f"{time.monotonic() - started:.0f}\n")
    if sys.stderr.isatty():
        sys.stderr.write("\n")


def main() -> None:
    print(ensure_binaries())
    if "--node" in sys.argv[1:]:
        print(ensure_node_binaries())


if __name__ == "__main__":
    main()
