"""A one-layer OCI image archive from a few files: how the real node gets images for its own static Go programs
(CoreDNS), which need no base, no package manager and no build step.

The archive is reproducible (sorted entries, zero timestamps, root ownership), so its digest changes only when a
file does; `ctr images import` loads it under the name written in its index.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class ImageFile:
    """A file placed in the image at `path` with `mode`, read from `source` (or given as `data`)."""

    path: str
    mode: int = 0o755
    source: Path | None = None
    data: bytes | None = None

    def content(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.source is None:
            raise ValueError(f"{self.path}: neither source nor data")
        return self.source.read_bytes()


def _tar_entry(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def layer_tar(files: Sequence[ImageFile]) -> bytes:
    """The filesystem layer: parent directories first, then the files, all in sorted order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for f in files:
            parts = f.path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            _tar_entry(tar, d + "/", None, 0o755)
        for f in sorted(files, key=lambda f: f.path):
            _tar_entry(tar, f.path.strip("/"), f.content(), f.mode)
    return buffer.getvalue()


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def image_archive(name: str, files: Sequence[ImageFile], entrypoint: Sequence[str], user: str = "65532:65532",
                  env: Mapping[str, str] | None = None) -> bytes:
    """An OCI image layout as a tar stream, tagged `name` (e.g. `localhost/tiered/coredns:v1.15.0`)."""
    layer_digest, layer = _blob(layer_tar(files))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": list(entrypoint), "User": user,
                   "Env": [f"{k}={v}" for k, v in sorted((env or {}).items())]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": len(layer)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": len(manifest_bytes),
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]},
        }],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_entry(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644)
        _tar_entry(tar, "index.json", json.dumps(index, sort_keys=True).encode(), 0o644)
        _tar_entry(tar, "blobs/", None, 0o755)
        _tar_entry(tar, "blobs/sha256/", None, 0o755)
        for digest, data in sorted(((layer_digest, layer), (config_digest, config_bytes),
                                    (manifest_digest, manifest_bytes))):
            _tar_entry(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", data, 0o644)
    return out.getvalue()
