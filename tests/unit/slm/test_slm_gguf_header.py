"""Reading a GGUF file's quantization (``general.file_type``) without loading the model."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from tiered_slm.quant import GGUFFormatError, read_file_type


def write_gguf(path: Path, file_type: int | None) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(4096)
    writer.add_token_list(["a", "bc"])  # an array before the key we want
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tensor("w", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_reads_the_file_type(tmp_path: Path) -> None:
    assert read_file_type(write_gguf(tmp_path / "m.gguf", 15)) == 15


def test_missing_file_type_is_none(tmp_path: Path) -> None:
    assert read_file_type(write_gguf(tmp_path / "m.gguf", None)) is None


def test_not_a_gguf_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"PK\x03\x04 something else, long enough to hold a header")
    with pytest.raises(GGUFFormatError, match=r"m\.bin: not a readable GGUF file"):
        read_file_type(path)


def test_truncated_header_is_reported(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", 15)
    path.write_bytes(path.read_bytes()[:70])
    with pytest.raises(GGUFFormatError, match=r"m\.gguf: not a readable GGUF file"):
        read_file_type(path)
