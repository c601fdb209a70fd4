"""sha256 of model files: the server refuses to start on a mismatch rather than serve unknown weights."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 4 << 20


class IntegrityError(Exception):
    """The model file's digest differs from the expected one; the message holds both digests."""


def normalize_sha256(value: str) -> str:
    """Accept ``<hex>`` or ``sha256:<hex>`` (any case); raise ValueError for anything else."""
    digest = value.strip().lower().removeprefix("sha256:")
    if not _HEX64.fullmatch(digest):
        raise ValueError(f"sha256 must be 64 hex digits (optionally prefixed 'sha256:'), got {value!r}")
    return digest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB models do not need to fit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> str:
    """Return the file's digest when it matches ``expected``; raise IntegrityError when it does not."""
    want = normalize_sha256(expected)
    got = file_sha256(path)
    if got != want:
        raise IntegrityError(f"model sha256 mismatch for {path}: expected {want}, got {got}")
    return got
