"""The project's container images, built without a container engine and cached outside the repository.

`ensure_images()` builds (or reuses) the operator, router and SLM-server images from their Dockerfiles and the pod
sandbox ("pause") image from hack/pause, with buildah (`bud --isolation chroot --network host`, vfs storage, no
daemon). They build FROM a Debian bookworm base the project bootstraps itself with debootstrap (`python3` +
`python3-venv`), passed as the Dockerfiles' PYTHON_IMAGE build argument, so the very same files still build with a
plain `docker build` on the default public python image. Each image is saved as an OCI archive under
`~/.cache/tiered/images/`, named by a key that hashes every input of its build: the Dockerfile, every file its COPY
lines bring in (filtered by .dockerignore, as the build context is), the base's key, the build arguments and the
host wheels offered to the build. Unchanged inputs mean no build at all.

`import_images()` loads the archives into a containerd (the real node's, namespace k8s.io) under exactly the names
the operator writes into its Deployments (tiered_operator.settings, manifests/operator/deployment.yaml).

What building changes on the host, for teardown and its test: nothing outside the cache directory. buildah runs
with its own --root/--runroot/TMPDIR under `~/.cache/tiered/images/`, uses the host network (no CNI bridge, no
network namespace), and its chroot isolation mounts live only in a private mount namespace that ends with the
build step. `host_leftovers()` lists what would contradict that (a cni-podman0 bridge, a mount under the cache,
a buildah process), and the image tests assert it is empty.

docs/images.md has the figures (cold and cached build times, sizes) and the docker-user commands.
"""

from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import importlib.metadata
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tiered_dev.devcluster.build import cache_root, repo_root

RECIPE_VERSION = "1"
"""Part of every key: bump it when the build procedure changes in a way the hashed inputs do not show."""

BASE_SUITE = "bookworm"
BASE_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
"""What the Dockerfiles need from PYTHON_IMAGE: python3 with its venv module (pip comes from ensurepip), and CA
certificates for pip's downloads. Everything else (libgomp1, ...) the Dockerfiles install themselves."""

BASE_CONTAINERFILE = "hack/base/Containerfile"
PAUSE_DIR = "hack/pause"
PAUSE_IMAGE = "localhost/tiered/pause:1"
"""The sandbox image for the real node's containerd (CRI `sandbox_image`)."""

CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
"""The llama.cpp flags of the host build (the Makefile exports the same; a unit test keeps them equal). With
GGML_NATIVE off, llama.cpp enables AVX/AVX2/FMA/F16C/BMI2 and leaves AVX-512 and AMX off: the same build as the
SLM Dockerfile's default CMAKE_ARGS, so the host's wheel is the one that Dockerfile would compile."""

OPERATOR_MANIFEST = "manifests/operator/deployment.yaml"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA_BUNDLE = "/etc/tiered-build-ca.crt"
"""Where RUN steps see the host's CA bundle: a path no package owns. Not HOST_CA_BUNDLE itself: ca-certificates'
postinst rewrites that file, and over a read-only bind mount it fails ("Device or resource busy"), which broke the
base's `apt-get upgrade` as soon as Debian published a ca-certificates update."""
IMAGE_NAMES = ("operator", "router", "slm", "pause")

Progress = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """A build step failed; the message carries the command and the tail of its output."""


@dataclass(frozen=True)
class Recipe:
    """How one image is built: its Dockerfile (relative to the repository root) and the context it names."""

    name: str
    ref: str
    dockerfile: str
    context: str = "."
    host_wheels: tuple[str, ...] = ()
    """Distributions whose wheels the host already built, offered to the build at /wheels (read-only)."""


@dataclass(frozen=True)
class BuiltImage:
    """One image in the cache: `archive` is an OCI archive whose index names the image `ref`."""

    name: str
    ref: str
    key: str
    archive: Path
    archive_bytes: int
    manifest_digest: str
    built: bool
    """True when this call built it, False when the cached archive was reused."""
    seconds: float
    """This call's time for the image (build and save, or the cache check)."""
    build_seconds: float
    """How long the cached archive took to build, when it was built."""


# ---------------------------------------------------------------------------------------------------------------
# Pure parts: image names, COPY sources, ignore rules, keys.


def operator_image_ref(manifest_text: str) -> str:
    """The operator's image, as the Deployment in manifests/ names it (the single source of that name)."""
    for doc in yaml.safe_load_all(manifest_text):
        if not doc or doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            if container.get("name") == "operator":
                return str(container["image"])
    raise ValueError("no Deployment with an `operator` container in the operator manifest")


def image_refs(root: Path | None = None) -> dict[str, str]:
    """Image name → reference, exactly as the operator and its manifest write them."""
    from tiered_operator.settings import OperatorSettings

    root = root or repo_root()
    defaults = OperatorSettings()
    return {
        "operator": operator_image_ref((root / OPERATOR_MANIFEST).read_text()),
        "router": defaults.router_image,
        "slm": defaults.slm_image,
        "pause": PAUSE_IMAGE,
    }


def recipes(root: Path | None = None) -> dict[str, Recipe]:
    refs = image_refs(root)
    return {
        "operator": Recipe("operator", refs["operator"], "operator/Dockerfile"),
        "router": Recipe("router", refs["router"], "router_image/Dockerfile"),
        "slm": Recipe("slm", refs["slm"], "slm_image/Dockerfile", host_wheels=("llama-cpp-python",)),
        "pause": Recipe("pause", refs["pause"], f"{PAUSE_DIR}/Containerfile", context=PAUSE_DIR),
    }


def _logical_lines(text: str) -> Iterator[str]:
    """Dockerfile instructions with backslash continuations joined and comments dropped."""
    current: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(stripped)
        yield " ".join(current)
        current = []
    if current:
        yield " ".join(current)


def copy_sources(dockerfile_text: str) -> list[str]:
    """Every build-context path a COPY or ADD brings in (COPY --from=stage copies from a stage, not the context)."""
    sources: list[str] = []
    for line in _logical_lines(dockerfile_text):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() not in ("COPY", "ADD"):
            continue
        rest = rest.strip()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if any(flag.startswith("--from=") for flag in flags):
            continue
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if len(args) < 2:
            raise ValueError(f"{keyword} needs a source and a destination: {line!r}")
        for source in args[:-1]:
            if "$" in source:
                raise ValueError(f"{keyword} source {source!r} uses a variable; the cache key cannot follow it")
            sources.append(source)
    return sources


def parse_ignore(text: str) -> list[str]:
    """The patterns of a .dockerignore (comments and blank lines dropped, leading '/' and './' removed)."""
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            raise ValueError(f".dockerignore exception {line!r} is not supported by the cache key")
        patterns.append(line.removeprefix("./").lstrip("/").rstrip("/"))
    return patterns


def is_ignored(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a context path (or a directory above it) matches a .dockerignore pattern ('**/' = any depth)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def context_files(context: Path, sources: Iterable[str], patterns: Sequence[str]) -> list[str]:
    """The context-relative files the COPY sources bring in, sorted, after the ignore rules."""
    found: set[str] = set()
    for source in sources:
        source = source.removeprefix("./").rstrip("/") or "."
        matches = sorted(context.glob(source)) if any(c in source for c in "*?[") else [context / source]
        if not any(m.exists() for m in matches):
            raise FileNotFoundError(f"COPY source {source!r} is not in the build context {context}")
        for match in matches:
            paths = [match] if match.is_file() else [p for p in match.rglob("*") if p.is_file()]
            for path in paths:
                relative = path.relative_to(context).as_posix()
                if not is_ignored(relative, patterns):
                    found.add(relative)
    return sorted(found)


def digest_files(context: Path, files: Iterable[str]) -> str:
    """sha256 over each file's path, executable bit and content."""
    digest = hashlib.sha256()
    for relative in files:
        path = context / relative
        digest.update(relative.encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def image_key(name: str, parts: dict[str, str]) -> str:
    """A short, stable key from named input digests (the name and the recipe version included)."""
    digest = hashlib.sha256(f"{name}\0{RECIPE_VERSION}\0".encode())
    for label in sorted(parts):
        digest.update(f"{label}={parts[label]}\0".encode())
    return f"{name}-{digest.hexdigest()[:16]}"


def base_key(containerfile_text: str) -> str:
    return image_key(
        "base",
        {
            "suite": BASE_SUITE,
            "mirror": BASE_MIRROR,
            "packages": ",".join(BASE_PACKAGES),
            "containerfile": hashlib.sha256(containerfile_text.encode()).hexdigest(),
            "cleanup": hashlib.sha256(" ".join(_ROOTFS_CLEANUP).encode()).hexdigest(),
        },
    )


def base_ref(key: str) -> str:
    return f"localhost/tiered/base:{key.removeprefix('base-')}"



def bud_args(context: Path, dockerfile: Path, ref: str, build_args: dict[str, str],
             volumes: Sequence[str] = ()) -> list[str]:
    """`buildah bud` arguments: the Dockerfile as it is in the repository (`-f`), its context, the build arguments
    (PYTHON_IMAGE) and read-only volumes for RUN steps; nothing that rewrites the file."""
    args = ["bud", "--isolation", "chroot", "--network", "host", "--pull=never", "--layers=false",
            "-f", str(dockerfile), "-t", ref]
    for name, value in sorted(build_args.items()):
        args += ["--build-arg", f"{name}={value}"]
    for volume in volumes:
        args += ["--volume", volume]
    return [*args, str(context)]


def trust_volumes(host_bundle: Path, tmp: Path) -> list[str]:
    """Read-only `--volume`s for RUN steps (buildah never commits them to a layer): the host's CA bundle and a pip
    config that trusts it. Machines whose egress goes through a TLS-inspecting proxy trust its CA there, and pip in
    the build must too. None when the host has no bundle."""
    if not host_bundle.is_file():
        return []
    pip_conf = tmp / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {BUILD_CA_BUNDLE}\n")
    return [f"{host_bundle}:{BUILD_CA_BUNDLE}:ro", f"{pip_conf}:/etc/pip.conf:ro"]

# ---------------------------------------------------------------------------------------------------------------
# I/O: buildah, debootstrap, the cache.


def images_cache() -> Path:
    return cache_root() / "images"


def _stderr_progress(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _run(cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
         log: Path | None = None) -> str:
    """Run a build command; on failure raise with its tail. Output goes to `log` when given (builds are long)."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n$ {shlex.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_bytes()[-6000:].decode(errors="replace")
            raise ImageBuildError(f"{shlex.join(cmd)} failed ({proc.returncode}); see {log}:\n{tail}")
        return ""
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"{shlex.join(cmd)} failed ({result.returncode}):\n{result.stderr[-6000:]}")
    return result.stdout


@dataclass
class Buildah:
    """buildah with the project's own storage (vfs), runroot and temporary directory, all under `home`."""

    home: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if shutil.which("buildah") is None:
            raise ImageBuildError("buildah is needed to build images without a container engine "
                                  "(apt-get install buildah; .ci/run installs it)")
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(self.tmp), "BUILDAH_ISOLATION": "chroot",
                    "STORAGE_DRIVER": "vfs"}

    @property
    def tmp(self) -> Path:
        return self.home / "tmp"

    def argv(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.home / "root"), "--runroot", str(self.home / "runroot"),
                "--storage-driver", "vfs", *args]

    def run(self, *args: str, quiet: bool = False) -> str:
        return _run(self.argv(*args), env=self.env, log=None if quiet else self.log)

    def has_image(self, ref: str) -> bool:
        proc = subprocess.run(self.argv("inspect", "--type", "image", ref), env=self.env,
                              capture_output=True, check=False)
        return proc.returncode == 0

    def trust_volumes(self) -> list[str]:
        return trust_volumes(Path(HOST_CA_BUNDLE), self.tmp)

    def bud(self, context: Path, dockerfile: Path, ref: str, build_args: dict[str, str],
            volumes: Sequence[str] = ()) -> None:
        self.run(*bud_args(context, dockerfile, ref, build_args, [*self.trust_volumes(), *volumes]))

    def save(self, ref: str, archive: Path) -> None:
        """Write `ref` to an OCI archive (atomically) whose index annotates the full reference."""
        partial = archive.with_name(archive.name + ".partial")
        partial.unlink(missing_ok=True)
        self.run("push", "--quiet", ref, f"oci-archive:{partial}:{ref}")
        partial.rename(archive)

    def forget(self, ref: str) -> None:
        """Drop an image (and dangling stage images) from storage: the archive is the cache, vfs copies are big."""
        self.run("rmi", ref, quiet=True)
        subprocess.run(self.argv("rmi", "--prune"), env=self.env, capture_output=True, check=False)


def archive_manifest_digest(archive: Path) -> str:
    """The manifest digest an OCI archive's index.json points at (what containerd records as the image target)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive} has no index.json")
        index = json.load(member)
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise ValueError(f"{archive}: expected one manifest in index.json, found {len(manifests)}")
    return str(manifests[0]["digest"])


@contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as handle:
        # Several shells or test sessions may ask at once: one builds, the others wait and reuse.
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_ROOTFS_CLEANUP = (
    "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/doc/*", "usr/share/man/*",
    "usr/share/info/*", "dev/*", "etc/resolv.conf", "etc/hostname", "etc/machine-id",
)
"""Removed from the debootstrap tree before it becomes a layer: package caches, docs, the build host's resolver
and hostname, and device nodes (the runtime provides /dev)."""


def _debootstrap(rootfs: Path, log: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is needed to build the base image (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageBuildError("building the base image needs root (debootstrap, buildah's chroot isolation)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(rootfs),
          BASE_MIRROR], log=log)
    for pattern in _ROOTFS_CLEANUP:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    locale = rootfs / "usr/share/locale"
    for path in locale.iterdir() if locale.is_dir() else ():
        if path.name != "locale.alias":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def ensure_base(buildah: Buildah, root: Path, cache: Path, progress: Progress) -> tuple[str, str]:
    """(key, ref) of the base image, bootstrapped once per key and loaded into buildah's storage when missing."""
    containerfile = root / BASE_CONTAINERFILE
    key = base_key(containerfile.read_text())
    ref = base_ref(key)
    archive = cache / "archives" / f"{key}.oci.tar"
    if buildah.has_image(ref):
        return key, ref
    if archive.exists():
        buildah.run("pull", "--quiet", f"oci-archive:{archive}")
        return key, ref
    progress(f"[images] bootstrapping the base ({BASE_SUITE} minbase + {' '.join(BASE_PACKAGES)}) → {ref}")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="base-", dir=buildah.tmp))
    try:
        rootfs = work / "rootfs"
        _debootstrap(rootfs, buildah.log)
        context = work / "context"
        context.mkdir()
        _run(["tar", "--numeric-owner", "--sort=name", "-C", str(rootfs), "-cf", str(context / "rootfs.tar"), "."])
        shutil.rmtree(rootfs)
        shutil.copy(containerfile, context / "Containerfile")
        buildah.bud(context, context / "Containerfile", ref, {})
        archive.parent.mkdir(parents=True, exist_ok=True)
        buildah.save(ref, archive)
        _prune_older(cache / "archives", "base", keep=archive)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    _write_meta(archive, {"name": "base", "ref": ref, "key": key, "build_seconds": round(seconds, 1)})
    progress(f"[images] base built in {seconds:.0f}s")
    return key, ref


def ensure_host_wheels(distributions: Sequence[str], cache: Path, progress: Progress) -> tuple[Path | None, str]:
    """A directory holding the host's wheels of `distributions`, at the versions the dev venv has installed, and a
    digest of them. pip takes them from its wheel cache (where `make venv` left the compiled llama-cpp-python), so
    nothing compiles twice; only a host that never built one compiles it here, with CMAKE_ARGS."""
    if not distributions:
        return None, ""
    pins = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError as exc:
            raise ImageBuildError(f"{dist} is not installed in this environment (make venv installs it)") from exc
    directory = cache / "wheels" / hashlib.sha256("\0".join(pins).encode()).hexdigest()[:16]
    if not (directory / "pins").is_file():
        progress(f"[images] host wheels: {' '.join(pins)}")
        partial = directory.with_name(directory.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        env = {**os.environ, "CMAKE_ARGS": os.environ.get("CMAKE_ARGS", CMAKE_ARGS)}
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(partial), *pins], env=env)
        (partial / "pins").write_text("\n".join(pins) + "\n")
        shutil.rmtree(directory, ignore_errors=True)
        partial.rename(directory)
    digest = digest_files(directory, sorted(p.name for p in directory.iterdir()))
    return directory, digest


def recipe_inputs(recipe: Recipe, root: Path) -> tuple[Path, Path, list[str]]:
    """(context, dockerfile, the context files its COPY lines bring in)."""
    context = (root / recipe.context).resolve()
    dockerfile = root / recipe.dockerfile
    ignore = context / ".dockerignore"
    patterns = parse_ignore(ignore.read_text()) if ignore.exists() else []
    sources = copy_sources(dockerfile.read_text())
    if recipe.name == "pause":
        sources = [s for s in sources if s != "pause"]  # compiled from pause.c, which the key covers
    return context, dockerfile, context_files(context, sources, patterns)


def _compile_pause(root: Path, out: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ImageBuildError("a C compiler is needed for the pause image (apt-get install gcc libc6-dev)")
    _run([compiler, "-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-o", str(out),
          str(root / PAUSE_DIR / "pause.c")])


def _compiler_version() -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return "none"
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]


def _archive_path(cache: Path, key: str) -> Path:
    return cache / "archives" / f"{key}.oci.tar"


def _write_meta(archive: Path, meta: dict[str, object]) -> None:
    archive.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _read_meta(archive: Path) -> dict[str, object]:
    path = archive.with_suffix(".json")
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


KEEP_PER_IMAGE = 3
"""Archives kept per image, most recently used first: worktrees or branches of the same checkout that differ in an
image's inputs share the cache without evicting each other at every build."""


def _prune_older(directory: Path, name: str, keep: Path) -> None:
    """Drop the least recently used archives of the image beyond KEEP_PER_IMAGE (never `keep`)."""
    archives = sorted(directory.glob(f"{name}-*.oci.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [a for a in archives if a != keep][KEEP_PER_IMAGE - 1:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def recipe_key(recipe: Recipe, root: Path, *, base: str, wheels_digest: str = "",
               compiler: str = "") -> tuple[str, dict[str, str], list[str]]:
    """(key, the input digests it hashes, the context files) of one image; reads only the repository."""
    context, dockerfile, files = recipe_inputs(recipe, root)
    parts = {
        "dockerfile": hashlib.sha256(dockerfile.read_bytes()).hexdigest(),
        "context": digest_files(context, files),
        "ref": recipe.ref,
        "build_args": json.dumps(build_args_for(recipe, base), sort_keys=True),
    }
    if recipe.name == "pause":
        parts["pause.c"] = hashlib.sha256((root / PAUSE_DIR / "pause.c").read_bytes()).hexdigest()
        parts["cc"] = compiler
    else:
        parts["base"] = base
    if recipe.host_wheels:
        parts["wheels"] = wheels_digest
    return image_key(recipe.name, parts), parts, files


def build_args_for(recipe: Recipe, base: str) -> dict[str, str]:
    """The --build-arg values: every Dockerfile image builds FROM the project's base (pause is FROM scratch)."""
    return {} if recipe.name == "pause" else {"PYTHON_IMAGE": base_ref(base)}


def _build_one(recipe: Recipe, root: Path, cache: Path, buildah: Buildah, base: str,
               load_base: Callable[[], None], progress: Progress) -> BuiltImage:
    started = time.monotonic()
    wheels, wheels_digest = ensure_host_wheels(recipe.host_wheels, cache, progress)
    volumes = [f"{wheels}:/wheels:ro"] if wheels is not None else []
    compiler = _compiler_version() if recipe.name == "pause" else ""
    key, parts, files = recipe_key(recipe, root, base=base, wheels_digest=wheels_digest, compiler=compiler)
    build_args = build_args_for(recipe, base)
    context, dockerfile = (root / recipe.context).resolve(), root / recipe.dockerfile
    archive = _archive_path(cache, key)
    if archive.exists():
        os.utime(archive)  # most recently used: the last to be pruned
        meta = _read_meta(archive)
        return BuiltImage(recipe.name, recipe.ref, key, archive, archive.stat().st_size,
                          archive_manifest_digest(archive), built=False, seconds=time.monotonic() - started,
                          build_seconds=float(str(meta.get("build_seconds", 0.0))))
    progress(f"[images] building {recipe.ref} from {recipe.dockerfile} ({len(files)} context files) → {key}")
    build_context = context
    work: Path | None = None
    try:
        if recipe.name != "pause":
            load_base()
            started = time.monotonic()  # the image's own build time; the base's is in its own metadata
        if recipe.name == "pause":
            work = Path(tempfile.mkdtemp(prefix="pause-", dir=buildah.tmp))
            shutil.copy(dockerfile, work / "Containerfile")
            _compile_pause(root, work / "pause")
            build_context, dockerfile = work, work / "Containerfile"
        buildah.bud(build_context, dockerfile, recipe.ref, build_args, volumes)
        archive.parent.mkdir(parents=True, exist_ok=True)
        buildah.save(recipe.ref, archive)
        buildah.forget(recipe.ref)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    _prune_older(archive.parent, recipe.name, keep=archive)
    _write_meta(archive, {"name": recipe.name, "ref": recipe.ref, "key": key, "build_seconds": round(seconds, 1),
                          "inputs": parts, "files": files})
    progress(f"[images] {recipe.ref} built in {seconds:.0f}s ({archive.stat().st_size / 2**20:.0f} MiB archive)")
    return BuiltImage(recipe.name, recipe.ref, key, archive, archive.stat().st_size,
                      archive_manifest_digest(archive), built=True, seconds=seconds, build_seconds=seconds)


def ensure_images(names: Iterable[str] | None = None, progress: Progress = _stderr_progress) -> dict[str, BuiltImage]:
    """Build what is missing or stale among `names` (default: operator, router, slm, pause) and return them all,
    keyed by name. Safe to call from several processes at once (one builds, the others wait and reuse)."""
    wanted = list(names) if names is not None else list(IMAGE_NAMES)
    unknown = sorted(set(wanted) - set(IMAGE_NAMES))
    if unknown:
        raise ValueError(f"unknown image(s) {unknown}; known: {', '.join(IMAGE_NAMES)}")
    root = repo_root()
    cache = images_cache()
    all_recipes = recipes(root)
    with _build_lock(cache):
        buildah = Buildah(cache / "buildah", log=cache / "build.log")
        base = base_key((root / BASE_CONTAINERFILE).read_text())
        out: dict[str, BuiltImage] = {}

        cleaned = False

        def load_base() -> None:
            nonlocal cleaned
            if not cleaned:  # working containers a killed build left in storage
                buildah.run("rm", "--all", quiet=True)
                cleaned = True
            ensure_base(buildah, root, cache, progress)

        try:
            for name in wanted:
                out[name] = _build_one(all_recipes[name], root, cache, buildah, base, load_base, progress)
        finally:
            shutil.rmtree(buildah.tmp, ignore_errors=True)
        return out


# ---------------------------------------------------------------------------------------------------------------
# containerd.


def _ctr(address: str, namespace: str, *args: str, ctr: str = "ctr") -> str:
    return _run([ctr, "--address", address, "--namespace", namespace, *args])


def containerd_images(address: str, namespace: str = "k8s.io", ctr: str = "ctr") -> dict[str, str]:
    """Image name → manifest digest, as a containerd has them."""
    listing = _ctr(address, namespace, "images", "list", ctr=ctr)
    found: dict[str, str] = {}
    for line in listing.splitlines()[1:]:
        columns = line.split()
        if len(columns) >= 3:
            found[columns[0]] = columns[2]
    return found


def import_images(images: Iterable[BuiltImage], address: str, namespace: str = "k8s.io", ctr: str = "ctr",
                  progress: Progress = _stderr_progress) -> list[str]:
    """Load each image into the containerd at `address` (its socket) under its reference, unless it already holds
    that exact manifest. Returns the references imported by this call."""
    present = containerd_images(address, namespace, ctr)
    imported = []
    for image in images:
        if present.get(image.ref) == image.manifest_digest:
            continue
        started = time.monotonic()
        _ctr(address, namespace, "images", "import", str(image.archive), ctr=ctr)
        now = containerd_images(address, namespace, ctr)
        if now.get(image.ref) != image.manifest_digest:
            raise ImageBuildError(f"containerd did not record {image.ref} at {image.manifest_digest} after "
                                  f"importing {image.archive} (it has {now.get(image.ref)})")
        imported.append(image.ref)
        progress(f"[images] imported {image.ref} in {time.monotonic() - started:.1f}s")
    return imported


# ---------------------------------------------------------------------------------------------------------------
# What must not be left on the host.


def host_leftovers(cache: Path | None = None) -> list[str]:
    """What an image build could leave behind and must not: a CNI bridge, mounts under the cache, a buildah process."""
    cache = cache or images_cache()
    found = []
    if Path("/sys/class/net/cni-podman0").exists():
        found.append("network interface cni-podman0")
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line.split()[4]}" for line in mounts if line.split()[4].startswith(str(cache))]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"buildah" and str(cache).encode() in b" ".join(argv):
            found.append(f"process {proc.name}: {b' '.join(argv).decode(errors='replace')[:200]}")
    return found


def describe(images: dict[str, BuiltImage]) -> str:
    """A table of the images: name, reference, archive size, and whether this call built it."""
    out = io.StringIO()
    for name, image in images.items():
        state = f"built in {image.seconds:.0f}s" if image.built else f"cached ({image.seconds:.2f}s)"
        out.write(f"{name:9} {image.ref:45} {image.archive_bytes / 2**20:7.1f} MiB  {state}\n")
    return out.getvalue()
