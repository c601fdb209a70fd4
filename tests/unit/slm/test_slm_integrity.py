"""sha256 pinning of model files."""

import hashlib
from pathlib import Path

import pytest

from tiered_slm.integrity import IntegrityError, file_sha256, normalize_sha256, verify_sha256


def test_normalize_accepts_prefix_and_uppercase() -> None:
    digest = "AB" * 32
    assert normalize_sha256(f"sha256:{digest}") == digest.lower()


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "sha1:" + "a" * 64])
def test_normalize_rejects_non_digests(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        normalize_sha256(bad)


def test_file_digest_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"x" * (5 << 20))
    assert file_sha256(path) == hashlib.sha256(b"x" * (5 << 20)).hexdigest()


def test_mismatch_names_both_digests(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"weights")
    wrong = "0" * 64
    with pytest.raises(IntegrityError) as caught:
        verify_sha256(path, wrong)
    assert wrong in str(caught.value) and hashlib.sha256(b"weights").hexdigest() in str(caught.value)
