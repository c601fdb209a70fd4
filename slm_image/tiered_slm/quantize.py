"""Quantize-on-load: turn a full-precision GGUF into the requested type once, then reuse the result.

A tier can ship one F16/F32 file and pick its quantization in the InferenceTier spec. Quantizing takes
seconds to minutes, so the output is cached under ``<cache>/quantized/<input-sha256>-<TYPE>.gguf``: keyed by
the input's content (not its path), a changed input never hits a stale cache entry, and a restarted pod with a
persistent cache starts at load speed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tiered_slm.quant import (
    FTYPE_BY_NAME,
    QUANTIZE_TARGETS,
    UNQUANTIZED,
    normalize_quant_name,
    quant_name,
    read_file_type,
)

log = logging.getLogger(__name__)


class QuantizeError(Exception):
    """Quantize-on-load cannot produce the requested type; the message says why."""


@dataclass(frozen=True)
class QuantizeResult:
    """What quantize-on-load did: the file to load, and whether it came from the cache."""

    path: Path
    source_type: str
    target_type: str
    cache_hit: bool
    seconds: float


def quantized_cache_path(cache_dir: Path, input_sha256: str, target: str) -> Path:
    """Cache file for ``input`` quantized to ``target``."""
    return cache_dir / "quantized" / f"{input_sha256}-{target}.gguf"


def plan_quantization(source_type: str, target: str) -> bool:
    """Whether quantization must run (False: the file already has the target type).

    Raises QuantizeError for conversions we refuse: from an already quantized file, or to a type that needs
    an importance matrix.
    """
    if source_type == target:
        return False
    if target not in QUANTIZE_TARGETS:
        raise QuantizeError(f"quantize-on-load cannot produce {target}; choose one of {sorted(QUANTIZE_TARGETS)}")
    if source_type not in UNQUANTIZED:
        raise QuantizeError(
            f"quantize-on-load needs a full-precision input (F32/F16/BF16), but the model is {source_type}; "
            "re-quantizing a quantized model compounds the error - provide the original weights"
        )
    return True


def quantize_gguf(source: Path, target_path: Path, target: str, threads: int = 0) -> None:
    """Run llama.cpp's quantizer (blocking). Writes to a temporary name and renames, so a crash mid-way
    never leaves a truncated file that a later start would take for a cache hit."""
    import llama_cpp

    # llama.cpp prints a line per tensor through llama-cpp-python's logger; keep that for --log-level DEBUG.
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG)
                                                   else logging.WARNING)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPE_BY_NAME[target]
    params.nthread = threads
    target_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = target_path.with_name(f".{target_path.name}.{os.getpid()}.tmp")
    try:
        status = llama_cpp.llama_model_quantize(
            str(source).encode(), str(temporary).encode(), ctypes.byref(params)
        )
        if status != 0:
            raise QuantizeError(f"llama.cpp failed to quantize {source} to {target} (status {status})")
        temporary.replace(target_path)
    finally:
        temporary.unlink(missing_ok=True)


def quantize_on_load(source: Path, input_sha256: str, requested: str, cache_dir: Path,
                     threads: int = 0) -> QuantizeResult:
    """Return the file to load for ``requested`` quantization, quantizing (or hitting the cache) as needed."""
    target = normalize_quant_name(requested)
    source_type = quant_name(read_file_type(source))
    started = time.perf_counter()
    if not plan_quantization(source_type, target):
        log.info("model is already %s; quantize-on-load has nothing to do", target)
        return QuantizeResult(source, source_type, target, cache_hit=False, seconds=0.0)
    cached = quantized_cache_path(cache_dir, input_sha256, target)
    if cached.is_file():
        log.info("quantize-on-load cache hit: %s", cached)
        return QuantizeResult(cached, source_type, target, cache_hit=True,
                              seconds=time.perf_counter() - started)
    log.info("quantizing %s (%s) to %s -> %s", source, source_type, target, cached)
    quantize_gguf(source, cached, target, threads)
    seconds = time.perf_counter() - started
    log.info("quantized to %s in %.2fs (%d -> %d bytes)", target, seconds, source.stat().st_size,
             cached.stat().st_size)
    return QuantizeResult(cached, source_type, target, cache_hit=False, seconds=seconds)
