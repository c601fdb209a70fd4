"""Read a few metadata keys from a GGUF header without loading the model.

The server needs the file type (for the quantization report and to decide whether quantize-on-load applies)
before llama.cpp touches the file. Reading the header directly is cheap, stops at the keys it needs, and keeps
the ``gguf`` package out of the runtime image.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

GGUF_MAGIC = b"GGUF"

_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING = 8
_ARRAY = 9

Scalar = int | float | bool | str


class GGUFFormatError(ValueError):
    """The file is not a GGUF file (or is truncated); the message names the file."""


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise GGUFFormatError("unexpected end of file in GGUF header")
    return data


def _read_string(stream: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _read_exact(stream, 8))
    return _read_exact(stream, length).decode("utf-8", errors="replace")


def _read_value(stream: BinaryIO, value_type: int) -> Scalar | None:
    """Read one value; arrays are skipped (returned as None) because no caller needs them."""
    if value_type in _SCALARS:
        fmt = _SCALARS[value_type]
        value: Scalar = struct.unpack(fmt, _read_exact(stream, struct.calcsize(fmt)))[0]
        return value
    if value_type == _STRING:
        return _read_string(stream)
    if value_type == _ARRAY:
        (element_type,) = struct.unpack("<I", _read_exact(stream, 4))
        (count,) = struct.unpack("<Q", _read_exact(stream, 8))
        if element_type in _SCALARS:
            stream.seek(struct.calcsize(_SCALARS[element_type]) * count, 1)
        else:
            for _ in range(count):
                _read_value(stream, element_type)
        return None
    raise GGUFFormatError(f"unknown GGUF value type {value_type}")


def read_gguf_metadata(path: Path, keys: frozenset[str] | None = None) -> dict[str, Scalar]:
    """Return the scalar metadata of ``path`` (only ``keys`` when given, stopping once all are found)."""
    found: dict[str, Scalar] = {}
    try:
        with path.open("rb") as stream:
            if _read_exact(stream, 4) != GGUF_MAGIC:
                raise GGUFFormatError("not a GGUF file (bad magic)")
            (version,) = struct.unpack("<I", _read_exact(stream, 4))
            if version < 2:
                raise GGUFFormatError(f"GGUF version {version} is too old (need 2 or newer)")
            _tensor_count, kv_count = struct.unpack("<QQ", _read_exact(stream, 16))
            for _ in range(kv_count):
                key = _read_string(stream)
                (value_type,) = struct.unpack("<I", _read_exact(stream, 4))
                value = _read_value(stream, value_type)
                if value is not None and (keys is None or key in keys):
                    found[key] = value
                    if keys is not None and keys.issubset(found):
                        break
    except GGUFFormatError as error:
        raise GGUFFormatError(f"{path}: {error}") from None
    return found


def read_file_type(path: Path) -> int | None:
    """``general.file_type`` of a GGUF file (llama.cpp's ftype number), or None when absent."""
    value = read_gguf_metadata(path, frozenset({"general.file_type"})).get("general.file_type")
    return int(value) if isinstance(value, int) else None
