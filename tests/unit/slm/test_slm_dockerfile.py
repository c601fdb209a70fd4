"""The SLM image's Dockerfile keeps its promises (no container engine here, so check the text)."""

import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[3] / "slm_image" / "Dockerfile"


def stages() -> list[str]:
    return re.split(r"^FROM ", DOCKERFILE.read_text(), flags=re.MULTILINE)[1:]


def test_base_image_is_pinned_to_a_patch_release() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))


def test_cpu_flags_are_portable() -> None:
    text = DOCKERFILE.read_text()
    assert "-DGGML_NATIVE=OFF" in text
    assert "-DGGML_NATIVE=ON" not in text and "-march=native" not in text
    assert "-DGGML_AMX_INT8=OFF" in text


def test_final_stage_is_non_root_and_has_no_build_tools() -> None:
    build, runtime = stages()
    assert "build-essential" in build
    assert not re.search(r"build-essential|cmake|gcc|g\+\+|-dev\b", runtime.split("\n", 1)[1].replace(
        "no compiler, no headers, no cmake", ""))
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
