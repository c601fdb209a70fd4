"""The CLI's argument checks and its documented exit codes."""

import pytest

from tiered_slm.cli import (
    EXIT_INTEGRITY,
    EXIT_LOAD,
    EXIT_QUANTIZE,
    EXIT_SOURCE,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    _model_options,
    build_parser,
    event_loop_factory,
    exit_code_for,
    main,
)
from tiered_slm.integrity import IntegrityError
from tiered_slm.model import ModelLoadError
from tiered_slm.quant import GGUFFormatError
from tiered_slm.quantize import QuantizeError
from tiered_slm.source import ModelSourceError


@pytest.mark.parametrize(
    ("error", "code"),
    [(IntegrityError("x"), EXIT_INTEGRITY), (ModelSourceError("x"), EXIT_SOURCE), (QuantizeError("x"), EXIT_QUANTIZE),
     (ModelLoadError("x"), EXIT_LOAD), (GGUFFormatError("x"), EXIT_LOAD), (ValueError("x"), EXIT_USAGE),
     (RuntimeError("x"), EXIT_UNEXPECTED)],
)
def test_each_start_up_failure_has_its_exit_code(error: Exception, code: int) -> None:
    assert exit_code_for(error) == code


def test_serve_arguments_are_normalized() -> None:
    args = build_parser().parse_args(["serve", "--model", "pvc://c/m.gguf", "--sha256", "sha256:" + "A" * 64,
                                      "--quantize", "q4_k_m", "--speculative", "prompt-lookup",
                                      "--speculative-verify", "batched"])
    assert args.sha256 == "a" * 64 and args.quantize == "Q4_K_M" and args.speculative == "prompt-lookup"
    assert _model_options(args).speculative.verify == "batched"


@pytest.mark.parametrize("argv", [["serve", "--model", "m", "--sha256", "nothex"],
                                  ["serve", "--model", "m", "--quantize", "Q9"],
                                  ["serve", "--model", "m", "--threads", "0"],
                                  ["serve"]])
def test_bad_arguments_exit_with_usage_code(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == EXIT_USAGE


def test_missing_local_model_exits_with_source_code(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["prepare", "--model", f"{tmp_path}/absent.gguf", "--cache-dir", str(tmp_path)])
    assert code == EXIT_SOURCE


def test_event_loop_choice() -> None:
    import uvloop

    assert event_loop_factory("asyncio") is None
    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop
    assert build_parser().parse_args(["serve", "--model", "m"]).stream_interval_ms == 20.0
