"""Quantization names and which conversions quantize-on-load accepts."""

from pathlib import Path

import pytest

from tiered_slm.quant import normalize_quant_name, quant_name
from tiered_slm.quantize import QuantizeError, plan_quantization, quantized_cache_path


def test_names_are_normalized() -> None:
    assert normalize_quant_name("q4_k_m") == "Q4_K_M"
    assert normalize_quant_name("Q8-0") == "Q8_0"


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Q4_K_M"):
        normalize_quant_name("Q4_K_XL")


def test_file_type_numbers_map_to_names() -> None:
    assert quant_name(0) == "F32"
    assert quant_name(15) == "Q4_K_M"
    assert quant_name(None) == "unknown"


def test_full_precision_input_is_quantized() -> None:
    assert plan_quantization("F16", "Q4_K_M") is True
    assert plan_quantization("F32", "Q8_0") is True


def test_same_type_is_a_no_op() -> None:
    assert plan_quantization("Q4_K_M", "Q4_K_M") is False


def test_requantizing_a_quantized_model_is_refused() -> None:
    with pytest.raises(QuantizeError, match="full-precision input"):
        plan_quantization("Q8_0", "Q4_K_M")


def test_cache_is_keyed_by_input_digest_and_target(tmp_path: Path) -> None:
    assert quantized_cache_path(tmp_path, "ab" * 32, "Q4_K_M").name == f"{'ab' * 32}-Q4_K_M.gguf"
