"""The project's images, built without a container engine (tiered_dev.images), run for real with runc.

Each container is run from its OCI archive as the kubelet would run the pod spec the operator writes
(tests/e2e/oci_pod.py): the operator's own securityContext (non-root UID 10001, read-only root filesystem, no
capabilities, no privilege escalation), its volumes and mounts, its command and args, its probes' paths and ports.
A local tier's pod runs its pause container, the SLM server on a tiny real GGUF model from a read-only "PVC", and
the router sidecar with the config the operator generates; a chat completion goes through the router to the model.
The operator's image runs with the Deployment in manifests/operator, signed in with a ServiceAccount token the way a
pod is, and reconciles an InferenceTier on the local control plane.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from oci_pod import (
    Pod,
    PodVolumes,
    container_spec,
    http_in_netns,
    pod_sandbox,
    process_ids,
    unpack,
    wait_http,
)

from tiered_dev import images
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.deployment import build_deployment
from tiered_operator.reconcile.router_config import NamespacePolicy, tier_router_config
from tiered_operator.settings import OperatorSettings
from tiered_slm.testmodel import write_test_model

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT = 3600
"""The first test builds every image when the cache is cold (6 to 11 minutes measured on 2 shared cores)."""
TIER = "edge"
NAMESPACE = "team-a"


@pytest.fixture(scope="module")
def built() -> dict[str, images.BuiltImage]:
    """Every image, built once per cache key (minutes cold, about a second when cached)."""
    return images.ensure_images(progress=lambda message: print(message, flush=True))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    """The test's directory; the unpacked root filesystems (hundreds of MB each) go when it ends, logs stay."""
    yield tmp_path
    for bundle in tmp_path.glob("**/bundle"):
        shutil.rmtree(bundle, ignore_errors=True)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_second_call_reuses_every_image_and_the_build_leaves_nothing_on_the_host(
    built: dict[str, images.BuiltImage],
) -> None:
    again = images.ensure_images(progress=lambda message: print(message, flush=True))
    assert set(again) == set(images.IMAGE_NAMES)
    for name, image in again.items():
        assert not image.built, f"{name} was rebuilt although no input changed"
        assert image.key == built[name].key
        assert image.archive.is_file()
        assert image.manifest_digest == images.archive_manifest_digest(image.archive)
    assert {name: image.ref for name, image in again.items()} == images.image_refs()
    assert images.host_leftovers() == []



CONTAINERD_CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{dir}/c.sock"
[ttrpc]
  address = "{dir}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"""


@pytest.fixture
def containerd() -> Iterator[str]:
    """A containerd of the test's own (its root, state and sockets in one directory; no CRI, so no network or pod
    state), for the image store only. Not the real node's: that one needs the host-wide node lock."""
    directory = Path(tempfile.mkdtemp(prefix="tiered-ctd-", dir="/var/tmp"))  # short: a socket path is <108 bytes
    (directory / "config.toml").write_text(CONTAINERD_CONFIG.format(dir=directory))
    with open(directory / "containerd.log", "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", str(directory / "config.toml")], stdout=log,
                                stderr=subprocess.STDOUT)
    socket = str(directory / "c.sock")
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "--address", socket, "version"], capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, (directory / "containerd.log").read_text()
            time.sleep(0.2)
        yield socket
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
        assert not [m for m in mounts if m.startswith(str(directory))], "containerd left mounts behind"
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_containerd_holds_each_image_under_the_reference_the_operator_writes(
    built: dict[str, images.BuiltImage], containerd: str
) -> None:
    # The references as the operator generates them: a local tier's Deployment (model + router sidecar), the
    # operator's own Deployment in manifests/, and the real node's sandbox image.
    settings = OperatorSettings()
    tier = _tier("pvc://models/m.gguf", "0" * 64)
    router = tier_router_config(tier, [], [], {TIER: tier}, NamespacePolicy(), settings)
    generated = _containers(build_deployment(tier, router.sidecar, settings))
    (operator,) = _operator_deployment()["spec"]["template"]["spec"]["containers"]
    wanted = {"slm": generated["model"]["image"], "router": generated["router"]["image"],
              "operator": operator["image"], "pause": images.PAUSE_IMAGE}

    imported = images.import_images(built.values(), containerd, "k8s.io")
    assert sorted(imported) == sorted(wanted.values())
    held = images.containerd_images(containerd, "k8s.io")
    assert set(held) == set(wanted.values()), "containerd holds other names than the operator writes"
    for name, ref in wanted.items():
        assert held[ref] == built[name].manifest_digest, f"{ref} is not the archive of {name}"
    # Importing again changes nothing: every reference is already there at its digest.
    assert images.import_images(built.values(), containerd, "k8s.io") == []


def _tier(source: str, sha256: str) -> InferenceTier:
    return InferenceTier.model_validate({
        "apiVersion": "tiered.dev/v1alpha1",
        "kind": "InferenceTier",
        "metadata": {"name": TIER, "namespace": NAMESPACE, "uid": "uid-edge", "generation": 1},
        "spec": {
            "backend": "local",
            "local": {
                "runtime": "llamacpp",
                "model": {"source": source, "format": "gguf", "sha256": sha256, "contextLength": 256},
            },
        },
    })


def _containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def _probe_url(container: dict[str, Any], probe: str) -> str:
    get = container[probe]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = ports.get(get["port"], get["port"])
    return f"http://127.0.0.1:{port}{get['path']}"


@pytest.mark.timeout(BUILD_TIMEOUT)
def test_a_local_tier_pod_runs_from_the_images_as_the_operator_specifies_it(
    built: dict[str, images.BuiltImage], state: Path
) -> None:
    settings = OperatorSettings()
    model = write_test_model(state / "claim" / "tiny.gguf", seed=3)
    tier = _tier("pvc://models/tiny.gguf", hashlib.sha256(model.read_bytes()).hexdigest())
    router = tier_router_config(tier, [], [], {TIER: tier}, NamespacePolicy(), settings)
    deployment = build_deployment(tier, router.sidecar, settings)
    pod_spec = deployment["spec"]["template"]["spec"]
    containers = _containers(deployment)
    assert containers["model"]["image"] == built["slm"].ref
    assert containers["router"]["image"] == built["router"].ref

    volumes = PodVolumes(state / "volumes", pod_spec["securityContext"].get("fsGroup"))
    contents = {v["name"]: router.data for v in pod_spec["volumes"] if "configMap" in v}
    volumes.materialize(pod_spec["volumes"], {k: {f: d.encode() for f, d in v.items()} for k, v in contents.items()},
                        claims={"models": model.parent})
    os.chmod(model.parent, 0o755)
    os.chmod(model, 0o644)

    with pod_sandbox(state / "pod", built["pause"].archive) as pod:
        sandbox_pid = pod.sandbox_pid
        assert sandbox_pid is not None
        assert process_ids(sandbox_pid) == (65535, 65535)  # the pause image's own USER
        # The Service name the router's config points at resolves to this pod, as the tier's Service would.
        service_host = router_upstream_host(router.data[naming.ROUTER_CONFIG_FILE])
        (state / "pod" / "hosts").write_text(f"127.0.0.1\tlocalhost {service_host}\n")
        started = {}
        for name, image_name in (("model", "slm"), ("router", "router")):
            bundle, image = unpack(built[image_name].archive, state / name)
            base = json.loads((bundle / "config.json").read_text())
            spec = container_spec(base, image, containers[name], pod_spec["securityContext"], volumes,
                                  sandbox_pid=sandbox_pid, hosts_file=state / "pod" / "hosts",
                                  cgroup=f"/tiered-img-{pod.suffix}-{name}")
            assert spec["root"]["readonly"] is True
            started[name] = pod.start(name, bundle, spec)

        def running(name: str) -> bool:
            return pod.status(name) == "running"

        model_c, router_c = containers["model"], containers["router"]
        answer = wait_http(sandbox_pid, _probe_url(model_c, "startupProbe"), 180, lambda: running("model"))
        assert answer[0] == 200, _logs(pod, answer)
        answer = wait_http(sandbox_pid, _probe_url(model_c, "readinessProbe"), 120, lambda: running("model"))
        assert answer[0] == 200, _logs(pod, answer)
        answer = wait_http(sandbox_pid, _probe_url(router_c, "readinessProbe"), 120, lambda: running("router"))
        assert answer[0] == 200, _logs(pod, answer)
        assert http_in_netns(sandbox_pid, _probe_url(router_c, "livenessProbe"))[0] == 200

        for name, container in started.items():
            assert process_ids(container.pid) == (10001, 10001), f"{name} does not run as the pod's user"
            log = container.log.read_text(errors="replace")
            # Nothing in the image is written to at start, nor unreadable to the pod's user.
            assert "Read-only file system" not in log and "Permission denied" not in log, _logs(pod, (0, b""))

        router_port = router_c["ports"][0]["containerPort"]
        request = {"model": TIER, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        code, body = http_in_netns(sandbox_pid, f"http://127.0.0.1:{router_port}/v1/chat/completions",
                                   json.dumps(request).encode(), timeout=60)
        assert code == 200, _logs(pod, (code, body))
        completion = json.loads(body)
        assert completion["choices"][0]["message"]["content"] is not None
        assert completion["usage"]["completion_tokens"] >= 1

        # A graceful stop: the model server drains and exits on SIGTERM, within the pod's grace period.
        for name in ("router", "model"):
            assert pod.stop(name, grace=float(pod_spec["terminationGracePeriodSeconds"])) == "stopped", \
                _logs(pod, (0, b""))
        assert pod.stop("pause", grace=5) == "stopped"


def router_upstream_host(config_text: str) -> str:
    config = json.loads(config_text)
    from urllib.parse import urlsplit

    hosts = {urlsplit(t["baseURL"]).hostname for t in config["tiers"] if t.get("kind") == "local"}
    assert len(hosts) == 1, hosts
    return str(hosts.pop())


def _logs(pod: Pod, answer: tuple[int, bytes]) -> str:
    out = [f"last answer: {answer[0]} {answer[1][:500]!r}"]
    for container in pod.containers:
        tail = container.log.read_text(errors="replace")[-3000:] if container.log.exists() else ""
        out.append(f"--- {container.name} ({pod.status(container.name)}):\n{tail}")
    return "\n".join(out)


def _operator_deployment() -> dict[str, Any]:
    for doc in yaml.safe_load_all((REPO / images.OPERATOR_MANIFEST).read_text()):
        if doc and doc.get("kind") == "Deployment":
            return dict(doc)
    raise AssertionError("no Deployment in the operator manifest")


@pytest.mark.integration
@pytest.mark.timeout(BUILD_TIMEOUT)
def test_the_operator_image_runs_the_manifest_deployment_against_the_control_plane(
    built: dict[str, images.BuiltImage], crds_installed: Any, namespace: str, state: Path
) -> None:
    cluster = crds_installed
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests",
                    "-f", str(REPO / "manifests" / "operator" / "peering-crds.yaml"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=tiered-tests",
                    "-k", str(REPO / "manifests" / "rbac"))
    deployment = _operator_deployment()
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["image"] == built["operator"].ref

    # What the kubelet gives a pod: the ServiceAccount's token, the cluster CA and the namespace, and the
    # `kubernetes` Service's address in the environment. This runner keeps the host's network namespace, so the
    # Service address is the API server's loopback address, and the liveness port is a free one (the manifest's
    # 8080 may be taken on a shared machine); nothing else in the container spec changes.
    token = cluster.kubectl("create", "token", pod_spec["serviceAccountName"], "-n",
                            deployment["metadata"]["namespace"], "--duration=1h").stdout.strip()
    server = cluster.server.removeprefix("https://")
    host, _, port = server.rpartition(":")
    liveness_port = _free_port()
    container = json.loads(json.dumps(container))
    container["args"] = [a if not a.startswith("--liveness=") else f"--liveness=http://127.0.0.1:{liveness_port}/healthz"
                         for a in container["args"]]
    container["env"] = [e for e in container["env"] if "valueFrom" not in e] + [
        {"name": "POD_ID", "value": "operator-image-test"},
        {"name": "POD_NAME", "value": "operator-image-test"},
        {"name": "KUBERNETES_SERVICE_HOST", "value": host},
        {"name": "KUBERNETES_SERVICE_PORT", "value": port},
    ]
    sa_mount = "/var/run/secrets/kubernetes.io/serviceaccount"
    container["volumeMounts"] = [*container["volumeMounts"], {"name": "sa", "mountPath": sa_mount, "readOnly": True}]
    volumes = PodVolumes(state / "volumes", pod_spec["securityContext"].get("fsGroup"))
    ca = (cluster.state_dir / "pki" / "ca.crt").read_bytes()
    volumes.materialize([*pod_spec["volumes"], {"name": "sa", "secret": {}}],
                        {"sa": {"token": token.encode(), "ca.crt": ca, "namespace": b"tiered-system"}}, claims={})

    pod = Pod(state / "pod")
    (state / "pod").mkdir()
    hosts = state / "pod" / "hosts"
    hosts.write_text("127.0.0.1\tlocalhost\n")
    bundle, image = unpack(built["operator"].archive, state / "operator")
    base = json.loads((bundle / "config.json").read_text())
    spec = container_spec(base, image, container, pod_spec["securityContext"], volumes, sandbox_pid=None,
                          hosts_file=hosts, cgroup=f"/tiered-img-{pod.suffix}-operator")
    # The host's network namespace (the API server listens on its loopback); PID, mount, IPC, UTS stay private.
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    assert spec["root"]["readonly"] is True
    try:
        started = pod.start("operator", bundle, spec)
        assert process_ids(started.pid) == (10001, 10001)
        url = f"http://127.0.0.1:{liveness_port}{container['livenessProbe']['httpGet']['path']}"
        answer = wait_http(started.pid, url, 120, lambda: pod.status("operator") == "running")
        assert answer[0] == 200, _logs(pod, answer)

        # It reconciles: a local tier gets its Deployment, written by the operator in the container.
        body = _tier("pvc://models/m.gguf", "0" * 64).model_dump(by_alias=True, exclude_none=True, mode="json")
        body["metadata"] = {"name": TIER, "namespace": namespace}
        manifest = state / "tier.yaml"
        manifest.write_text(yaml.safe_dump(body))
        cluster.kubectl("apply", "-f", str(manifest))
        deadline = time.monotonic() + 90
        found = None
        while time.monotonic() < deadline and pod.status("operator") == "running":
            result = cluster.kubectl("get", "deployment", TIER, "-n", namespace, "-o", "json", check=False)
            if result.returncode == 0:
                found = json.loads(result.stdout)
                break
            time.sleep(1)
        assert found is not None, _logs(pod, (0, b"no Deployment"))
        assert _containers(found)["model"]["image"] == built["slm"].ref
        assert pod.stop("operator", grace=20) == "stopped", _logs(pod, (0, b""))
    finally:
        pod.stop_all()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
