"""Where a model comes from: parse the source string the operator writes, and turn it into a local file.

Sources mirror ``InferenceTier.spec.local.model.source``:

* ``/abs/path.gguf`` or ``file:///abs/path.gguf`` - already on disk (baked into an image, hostPath, ...);
* ``pvc://claim/dir/model.gguf`` - a PersistentVolumeClaim the operator mounts at ``<pvc-root>/<claim>``;
* ``https://host/model.gguf`` (and ``http://`` for in-cluster mirrors) - downloaded into the cache directory,
  resuming a partial download with an HTTP Range request after a restart or a dropped connection;
* ``hf://org/repo[@revision]/path/model.gguf`` - fetched with ``huggingface_hub`` when it is installed.

Integrity is not this module's job: the sha256 check runs on whatever file this returns.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

log = logging.getLogger(__name__)

SourceKind = Literal["file", "pvc", "http", "hf"]

DEFAULT_PVC_ROOT = Path("/models")
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class ModelSourceError(Exception):
    """The model source cannot be parsed or fetched; the message says which source and why."""


@dataclass(frozen=True)
class ModelSource:
    """A parsed model source. ``location`` is a path, a URL, or ``org/repo``; ``path`` is inside pvc/hf."""

    kind: SourceKind
    location: str
    path: str = ""
    revision: str | None = None

    def __str__(self) -> str:
        if self.kind == "pvc":
            return f"pvc://{self.location}/{self.path}"
        if self.kind == "hf":
            revision = f"@{self.revision}" if self.revision else ""
            return f"hf://{self.location}{revision}/{self.path}"
        return self.location


def _safe_relative(path: str, source: str) -> str:
    """Reject empty, absolute or ``..`` paths inside a volume or repo: a source must not escape its root."""
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts:
        raise ModelSourceError(f"model source {source!r}: the path inside it must be relative without '..'")
    return str(PurePosixPath(*parts))


def parse_source(text: str) -> ModelSource:
    """Parse a source string into a :class:`ModelSource`, or raise ModelSourceError naming the problem."""
    text = text.strip()
    if not text:
        raise ModelSourceError("model source is empty")
    if text.startswith("pvc://"):
        claim, _, path = text.removeprefix("pvc://").partition("/")
        if not claim:
            raise ModelSourceError(f"model source {text!r}: expected pvc://<claim>/<path>")
        return ModelSource(kind="pvc", location=claim, path=_safe_relative(path, text))
    if text.startswith("hf://"):
        rest = text.removeprefix("hf://")
        pieces = rest.split("/", 2)
        if len(pieces) < 3 or not pieces[0] or not pieces[1]:
            raise ModelSourceError(f"model source {text!r}: expected hf://<org>/<repo>[@revision]/<file>")
        repo_name, _, revision = pieces[1].partition("@")
        return ModelSource(
            kind="hf",
            location=f"{pieces[0]}/{repo_name}",
            path=_safe_relative(pieces[2], text),
            revision=revision or None,
        )
    if text.startswith(("https://", "http://")):
        return ModelSource(kind="http", location=text)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ModelSourceError(
            f"model source {text!r}: unsupported scheme {scheme!r} (use a path, pvc://, https:// or hf://)"
        )
    return ModelSource(kind="file", location=text)


def pvc_path(source: ModelSource, pvc_root: Path) -> Path:
    """Where a ``pvc://claim/path`` source lives inside this container (the operator mounts claims there)."""
    return pvc_root / source.location / source.path


def download_cache_path(url: str, cache_dir: Path) -> Path:
    """Stable cache file for a URL: keyed by the URL's hash so two URLs with one basename never collide."""
    name = PurePosixPath(url.split("?", 1)[0]).name or "model.gguf"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / "downloads" / f"{digest}-{name}"


def resume_offset(status: int, content_range: str | None, have: int) -> int:
    """Byte offset the response body starts at, given how many bytes of the file we already have.

    A server that honours Range answers 206 with ``Content-Range: bytes <have>-...``; one that ignores it
    answers 200 with the whole file, and the partial file must then be rewritten from zero.
    """
    if status == 200:
        return 0
    if status == 206 and content_range:
        match = _CONTENT_RANGE.match(content_range)
        if match and int(match.group(1)) == have:
            return have
    raise ModelSourceError(f"unexpected download response {status} (Content-Range {content_range!r})")


def expected_total(status: int, content_range: str | None, content_length: str | None, offset: int) -> int | None:
    """Full file size announced by the server, when it says; a short body is then detectable."""
    if status == 206 and content_range:
        match = _CONTENT_RANGE.match(content_range)
        if match and match.group(3) != "*":
            return int(match.group(3))
    if content_length is not None and content_length.isdigit():
        return offset + int(content_length)
    return None


def _download_once(url: str, partial: Path, timeout_s: float) -> None:
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tiered-slm"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:
            # Range not satisfiable: the partial file already holds every byte.
            return
        raise
    with response:
        offset = resume_offset(response.status, response.headers.get("Content-Range"), have)
        if have and offset:
            log.info("resuming download of %s at byte %d", url, offset)
        total = expected_total(response.status, response.headers.get("Content-Range"),
                               response.headers.get("Content-Length"), offset)
        with partial.open("r+b" if offset else "wb") as sink:
            sink.seek(offset)
            sink.truncate()
            while chunk := response.read(_CHUNK):
                sink.write(chunk)
            size = sink.tell()
    # http.client returns a short body without error when the connection drops; compare with the announced size.
    if total is not None and size != total:
        raise ModelSourceError(f"connection closed after {size} of {total} bytes")


def download_with_resume(url: str, target: Path, *, attempts: int = 5, timeout_s: float = 30.0) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming after dropped connections.

    An existing ``target`` is reused as is (the sha256 check that follows decides whether it is good).
    """
    if target.exists():
        log.info("using cached download %s", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            _download_once(url, partial, timeout_s)
            partial.replace(target)
            return target
        except (OSError, urllib.error.URLError, ModelSourceError) as error:
            last_error = error
            got = partial.stat().st_size if partial.exists() else 0
            log.warning("download of %s failed (attempt %d/%d, %d bytes so far): %s",
                        url, attempt, attempts, got, error)
            if attempt < attempts:
                time.sleep(min(0.2 * 2**attempt, 5.0))
    raise ModelSourceError(f"could not download {url} after {attempts} attempts: {last_error}")


def _fetch_from_hub(source: ModelSource, cache_dir: Path) -> Path:
    try:
        import huggingface_hub  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ModelSourceError(
            f"model source {source} needs the huggingface_hub package, which is not installed in this image; "
            "install it (pip install 'huggingface_hub>=0.24') or use a pvc:// or https:// source"
        ) from None
    try:
        downloaded = huggingface_hub.hf_hub_download(
            repo_id=source.location,
            filename=source.path,
            revision=source.revision,
            cache_dir=str(cache_dir / "hf"),
        )
    except Exception as error:  # the hub raises many types; all mean "could not fetch"
        raise ModelSourceError(f"could not fetch {source} from the Hugging Face Hub: {error}") from error
    return Path(downloaded)


def resolve_source(
    source: ModelSource, *, pvc_root: Path = DEFAULT_PVC_ROOT, cache_dir: Path, attempts: int = 5
) -> Path:
    """Return a local file holding the model named by ``source`` (downloading it if needed)."""
    if source.kind == "file":
        path = Path(source.location)
    elif source.kind == "pvc":
        path = pvc_path(source, pvc_root)
    elif source.kind == "http":
        path = download_with_resume(source.location, download_cache_path(source.location, cache_dir),
                                    attempts=attempts)
    else:
        path = _fetch_from_hub(source, cache_dir)
    if not path.is_file():
        hint = f" (pvc root is {pvc_root}; is the claim mounted?)" if source.kind == "pvc" else ""
        raise ModelSourceError(f"model source {source}: no file at {path}{hint}")
    return path
