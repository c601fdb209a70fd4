"""GGUF quantization types: the names users write (``Q4_K_M``) and the numbers llama.cpp uses.

One table so the CLI, the quantize-on-load step and the load report agree on spelling. The numbers are
llama.cpp's ``llama_ftype`` values, which GGUF files also store under ``general.file_type``.
"""

from __future__ import annotations

import struct
from pathlib import Path

FTYPE_BY_NAME: dict[str, int] = {
    "F32": 0,
    "F16": 1,
    "Q4_0": 2,
    "Q4_1": 3,
    "Q8_0": 7,
    "Q5_0": 8,
    "Q5_1": 9,
    "Q2_K": 10,
    "Q3_K_S": 11,
    "Q3_K_M": 12,
    "Q3_K_L": 13,
    "Q4_K_S": 14,
    "Q4_K_M": 15,
    "Q5_K_S": 16,
    "Q5_K_M": 17,
    "Q6_K": 18,
    "IQ4_NL": 25,
    "IQ4_XS": 30,
    "BF16": 32,
}

NAME_BY_FTYPE: dict[int, str] = {number: name for name, number in FTYPE_BY_NAME.items()}

# Types a model may be quantized *from*: re-quantizing an already quantized file compounds the error, so
# quantize-on-load only accepts full-precision inputs.
UNQUANTIZED = frozenset({"F32", "F16", "BF16"})

# Types quantize-on-load may produce. Importance-matrix types (IQ2_*, IQ1_*) need calibration data we do not
# have at load time, so they are left out on purpose.
QUANTIZE_TARGETS = frozenset(FTYPE_BY_NAME) - {"BF16"}


def normalize_quant_name(name: str) -> str:
    """Return the canonical spelling of a quantization type, or raise ValueError listing the known ones."""
    canonical = name.strip().upper().replace("-", "_")
    if canonical not in FTYPE_BY_NAME:
        known = ", ".join(sorted(FTYPE_BY_NAME))
        raise ValueError(f"unknown quantization type {name!r}; expected one of: {known}")
    return canonical


def quant_name(ftype: int | None) -> str:
    """Name of a ``general.file_type`` value; ``unknown`` when the file does not say or uses a rare type."""
    if ftype is None:
        return "unknown"
    return NAME_BY_FTYPE.get(ftype, f"ftype{ftype}")


class GGUFFormatError(ValueError):
    """The file is not a GGUF file (or is truncated); the message names the file."""


def read_file_type(path: Path) -> int | None:
    """``general.file_type`` of a GGUF file (llama.cpp's ftype number), or None when absent.

    Read with the ``gguf`` package's reader, which maps the file and parses only the header and tensor table,
    so a multi-GB model costs no more than its metadata."""
    from gguf import GGUFReader  # imported here: the operator imports this module for the names alone

    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError, struct.error) as error:
        raise GGUFFormatError(f"{path}: not a readable GGUF file ({error})") from None
    field = reader.get_field("general.file_type")
    if field is None:
        return None
    value = field.contents()
    return int(value) if isinstance(value, int) else None
