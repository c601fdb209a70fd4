"""The GGUF header reader that reports a file's quantization without loading it."""

import struct
from pathlib import Path

import pytest

from tiered_slm.gguf_header import GGUFFormatError, read_file_type, read_gguf_metadata


def gguf_bytes(kvs: list[tuple[str, int, bytes]]) -> bytes:
    """A GGUF v3 header with the given (key, type, encoded value) entries and no tensors."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, value_type, value in kvs:
        encoded = key.encode()
        out += struct.pack("<Q", len(encoded)) + encoded + struct.pack("<I", value_type) + value
    return out


def string_value(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def test_reads_scalars_and_skips_arrays(tmp_path: Path) -> None:
    tokens = struct.pack("<IQ", 8, 2) + string_value("a") + string_value("bc")
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes([
        ("general.architecture", 8, string_value("llama")),
        ("tokenizer.ggml.tokens", 9, tokens),
        ("llama.context_length", 4, struct.pack("<I", 4096)),
        ("general.file_type", 4, struct.pack("<I", 15)),
    ]))
    assert read_gguf_metadata(path) == {"general.architecture": "llama", "llama.context_length": 4096,
                                        "general.file_type": 15}
    assert read_file_type(path) == 15


def test_missing_file_type_is_none(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes([("general.architecture", 8, string_value("llama"))]))
    assert read_file_type(path) is None


def test_not_a_gguf_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"PK\x03\x04 something else")
    with pytest.raises(GGUFFormatError, match=r"m\.bin: not a GGUF file"):
        read_file_type(path)


def test_truncated_header_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes([("general.file_type", 4, struct.pack("<I", 15))])[:-2])
    with pytest.raises(GGUFFormatError, match="unexpected end of file"):
        read_file_type(path)
