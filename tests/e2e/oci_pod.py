"""Run the project's OCI image archives the way a kubelet would run the pod specs the operator writes, with runc.

No container engine and no node: each image archive is unpacked by umoci into a runtime bundle, and the bundle's
config.json is rewritten from the pod spec with Kubernetes' rules — `command` replaces the image ENTRYPOINT, `args`
its CMD; the user, group and supplementary fsGroup come from the security contexts; `readOnlyRootFilesystem`,
`allowPrivilegeEscalation: false` and `capabilities: drop [ALL]` are applied; every volumeMount becomes a bind
mount of a host directory (emptyDir: a fresh group-writable directory, configMap/secret: a read-only directory of
its keys, persistentVolumeClaim: a directory the test fills). A pause container holds the pod's network, IPC and
UTS namespaces, and every other container joins them, so containers reach each other on 127.0.0.1 as in a pod.

What this does not reproduce: the RuntimeDefault seccomp profile, cgroup CPU limits, and the image pull itself
(the real node imports these same archives into containerd: tiered_dev.images.import_images).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config a runtime uses."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]
    user: str
    workdir: str


def read_image_config(layout: Path) -> ImageConfig:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(_blob(layout, manifest_digest).read_text())
    config = json.loads(_blob(layout, manifest["config"]["digest"]).read_text()).get("config") or {}
    return ImageConfig(
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
        env=list(config.get("Env") or []),
        user=str(config.get("User") or ""),
        workdir=str(config.get("WorkingDir") or "/"),
    )


def _blob(layout: Path, digest: str) -> Path:
    algorithm, value = digest.split(":", 1)
    return layout / "blobs" / algorithm / value


def process_argv(image: ImageConfig, container: Mapping[str, Any]) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args is not None else image.cmd)]


def effective_ids(image: ImageConfig, pod_security: Mapping[str, Any], container_security: Mapping[str, Any]
                  ) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids): the container's securityContext over the pod's over the image's USER."""
    user, _, group = image.user.partition(":")
    uid = container_security.get("runAsUser", pod_security.get("runAsUser"))
    gid = container_security.get("runAsGroup", pod_security.get("runAsGroup"))
    if uid is None:
        if not user.isdigit():
            raise ValueError(f"image USER {image.user!r} is not numeric: the kubelet cannot verify runAsNonRoot")
        uid = int(user)
    if gid is None:
        gid = int(group) if group.isdigit() else 0
    non_root = container_security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
    if non_root and uid == 0:
        raise ValueError("runAsNonRoot is set but the container would run as UID 0")
    extra = [pod_security["fsGroup"]] if "fsGroup" in pod_security else []
    return int(uid), int(gid), [int(g) for g in extra]


def merge_env(image_env: Sequence[str], container_env: Sequence[Mapping[str, Any]]) -> list[str]:
    merged = dict(item.split("=", 1) for item in image_env if "=" in item)
    for item in container_env:
        if "value" not in item:
            raise ValueError(f"env {item.get('name')} uses valueFrom, which this runner does not resolve")
        merged[str(item["name"])] = str(item["value"])
    return [f"{k}={v}" for k, v in merged.items()]


@dataclass
class PodVolumes:
    """Host directories standing in for the pod's volumes, by volume name."""

    root: Path
    fs_group: int | None
    paths: dict[str, Path] = field(default_factory=dict)

    def materialize(self, volumes: Sequence[Mapping[str, Any]], contents: Mapping[str, Mapping[str, bytes]],
                    claims: Mapping[str, Path]) -> None:
        """emptyDir: an empty directory (0777, setgid fsGroup, as the kubelet makes it); configMap/secret: files
        from `contents[name]`; persistentVolumeClaim: the directory `claims[claimName]`."""
        for volume in volumes:
            name = str(volume["name"])
            if "emptyDir" in volume:
                path = self.root / "empty" / name
                path.mkdir(parents=True)
                if self.fs_group is not None:
                    os.chown(path, 0, self.fs_group)
                os.chmod(path, 0o2777 if self.fs_group is not None else 0o777)
            elif "configMap" in volume or "secret" in volume:
                path = self.root / "data" / name
                path.mkdir(parents=True)
                for key, data in contents[name].items():
                    (path / key).write_bytes(data)
                    os.chmod(path / key, 0o644)
            elif "persistentVolumeClaim" in volume:
                path = claims[str(volume["persistentVolumeClaim"]["claimName"])]
            else:
                raise ValueError(f"volume {name}: unsupported source {sorted(volume)}")
            self.paths[name] = path


def bind(source: Path, destination: str, read_only: bool) -> dict[str, Any]:
    return {"destination": destination, "type": "bind", "source": str(source),
            "options": ["rbind", "ro" if read_only else "rw", "nosuid", "nodev"]}


def container_spec(base: dict[str, Any], image: ImageConfig, container: Mapping[str, Any],
                   pod_security: Mapping[str, Any], volumes: PodVolumes, *, sandbox_pid: int | None,
                   hosts_file: Path, cgroup: str) -> dict[str, Any]:
    """The runtime spec of one container from umoci's `base` (the image's defaults) and the pod spec."""
    spec = json.loads(json.dumps(base))
    security = container.get("securityContext") or {}
    uid, gid, extra_gids = effective_ids(image, pod_security, security)
    process = spec["process"]
    process["terminal"] = False
    process["args"] = process_argv(image, container)
    process["env"] = merge_env(image.env, container.get("env") or [])
    process["cwd"] = container.get("workingDir") or image.workdir
    process["user"] = {"uid": uid, "gid": gid, "additionalGids": extra_gids}
    process["noNewPrivileges"] = not security.get("allowPrivilegeEscalation", True)
    dropped = set((security.get("capabilities") or {}).get("drop") or [])
    if "ALL" in dropped:
        process["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
    spec["root"] = {"path": "rootfs", "readonly": bool(security.get("readOnlyRootFilesystem"))}
    spec["hostname"] = "pod"
    mounts = [m for m in spec["mounts"] if m["destination"] not in ("/etc/hosts",)]
    mounts.append(bind(hosts_file, "/etc/hosts", read_only=True))
    for mount in container.get("volumeMounts") or []:
        mounts.append(bind(volumes.paths[mount["name"]], mount["mountPath"], bool(mount.get("readOnly"))))
    spec["mounts"] = mounts
    linux = spec.setdefault("linux", {})
    linux["cgroupsPath"] = cgroup
    namespaces = [{"type": "pid"}, {"type": "mount"}]
    for kind in ("network", "ipc", "uts"):
        if sandbox_pid is None:
            namespaces.append({"type": kind})
        else:
            short = {"network": "net", "ipc": "ipc", "uts": "uts"}[kind]
            namespaces.append({"type": kind, "path": f"/proc/{sandbox_pid}/ns/{short}"})
    linux["namespaces"] = namespaces
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    if limit:
        linux.setdefault("resources", {})["memory"] = {"limit": parse_quantity(str(limit))}
    return spec


def parse_quantity(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


@dataclass
class RunningContainer:
    name: str
    pid: int
    log: Path


@dataclass
class Pod:
    """A pause container and the containers that joined its namespaces, all run by runc under `state`."""

    state: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    containers: list[RunningContainer] = field(default_factory=list)
    sandbox_pid: int | None = None

    def runc(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runc", "--root", str(self.state / "runc"), *args], text=True,
                              capture_output=True, check=check, **kwargs)

    def container_id(self, name: str) -> str:
        return f"tiered-img-{self.suffix}-{name}"

    def start(self, name: str, bundle: Path, spec: dict[str, Any]) -> RunningContainer:
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        log = self.state / f"{name}.log"
        with open(log, "wb") as out:
            result = subprocess.run(
                ["runc", "--root", str(self.state / "runc"), "run", "--detach", "--bundle", str(bundle),
                 self.container_id(name)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(f"runc run {name} failed ({result.returncode}):\n{log.read_text()[-3000:]}")
        state = json.loads(self.runc("state", self.container_id(name)).stdout)
        running = RunningContainer(name, int(state["pid"]), log)
        self.containers.append(running)
        return running

    def status(self, name: str) -> str:
        result = self.runc("state", self.container_id(name), check=False)
        return json.loads(result.stdout)["status"] if result.returncode == 0 else "gone"

    def stop(self, name: str, grace: float = 20.0) -> str:
        """SIGTERM, wait for the exit (SIGKILL after `grace`), delete; returns the status seen after SIGTERM."""
        cid = self.container_id(name)
        self.runc("kill", cid, "TERM", check=False)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.status(name) == "running":
            time.sleep(0.2)
        seen = self.status(name)
        if seen == "running":
            self.runc("kill", cid, "KILL", check=False)
            time.sleep(0.5)
        self.runc("delete", "--force", cid, check=False)
        return seen

    def stop_all(self) -> None:
        for container in reversed(self.containers):
            self.stop(container.name)
        self.containers.clear()


def unpack(archive: Path, dest: Path) -> tuple[Path, ImageConfig]:
    """Unpack an OCI archive (the one `ref` in its index) into a runc bundle; return it and the image config."""
    layout = dest / "layout"
    layout.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        # Extraction filters came with Python 3.11.4 (Debian 12's python3 is 3.11.2); the archive is our own.
        tar.extractall(layout, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    index = json.loads((layout / "index.json").read_text())
    ref = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    bundle = dest / "bundle"
    result = subprocess.run(["umoci", "unpack", "--image", f"{layout}:{ref}", str(bundle)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"umoci unpack {archive} failed:\n{result.stderr[-3000:]}")
    config = read_image_config(layout)
    shutil.rmtree(layout)
    return bundle, config


def http_in_netns(pid: int, url: str, body: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """An HTTP request from inside the network namespace of process `pid` (the pod's), with the host's Python."""
    script = (
        "import sys,urllib.request,urllib.error\n"
        "data=sys.stdin.buffer.read() or None\n"
        "req=urllib.request.Request(sys.argv[1],data=data,headers={'Content-Type':'application/json'})\n"
        "try:\n r=urllib.request.urlopen(req,timeout=float(sys.argv[2])); code=r.status; out=r.read()\n"
        "except urllib.error.HTTPError as e:\n code=e.code; out=e.read()\n"
        "except OSError as e:\n code=0; out=str(e).encode()\n"
        "sys.stdout.buffer.write(str(code).encode()+b'\\n'+out)\n"
    )
    result = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", script, url,
                             str(timeout)], input=body or b"", capture_output=True, timeout=timeout + 10,
                            check=True)
    code, _, payload = result.stdout.partition(b"\n")
    return int(code), payload


def wait_http(pid: int, url: str, timeout: float, alive: Any = None) -> tuple[int, bytes]:
    """Poll until `url` answers 200 (or `alive()` turns false, or the time is up); return the last answer."""
    deadline = time.monotonic() + timeout
    last: tuple[int, bytes] = (0, b"")
    while time.monotonic() < deadline:
        last = http_in_netns(pid, url, timeout=5)
        if last[0] == 200 or (alive is not None and not alive()):
            return last
        time.sleep(0.5)
    return last


def process_ids(pid: int) -> tuple[int, int]:
    """(real uid, real gid) of a host process."""
    uid = gid = -1
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            uid = int(line.split()[1])
        elif line.startswith("Gid:"):
            gid = int(line.split()[1])
    return uid, gid


@contextlib.contextmanager
def pod_sandbox(state: Path, pause_archive: Path) -> Iterator[Pod]:
    """A pod with its pause container up; stops and deletes every container on exit."""
    pod = Pod(state)
    bundle, image = unpack(pause_archive, state / "pause")
    base = json.loads((bundle / "config.json").read_text())
    hosts = state / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    spec = container_spec(base, image, {"securityContext": {"readOnlyRootFilesystem": True,
                                                           "allowPrivilegeEscalation": False,
                                                           "capabilities": {"drop": ["ALL"]}}},
                          {}, PodVolumes(state / "vol-pause", None), sandbox_pid=None, hosts_file=hosts,
                          cgroup=f"/tiered-img-{pod.suffix}-pause")
    try:
        sandbox = pod.start("pause", bundle, spec)
        pod.sandbox_pid = sandbox.pid
        # A new network namespace starts with loopback down; the CNI loopback plugin brings it up on a node.
        subprocess.run(["nsenter", f"--net=/proc/{sandbox.pid}/ns/net", "ip", "link", "set", "lo", "up"],
                       check=True)
        yield pod
    finally:
        pod.stop_all()

