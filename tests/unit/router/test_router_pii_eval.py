"""`tiered-router pii-eval`: the row format, what it reports, and a clear error for a bad row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiered_router.__main__ import main

ROWS = [
    {"id": "split", "body": {"model": "auto", "messages": [
        {"role": "user", "content": "my card starts 4111 1111"}, {"role": "assistant", "content": "and the rest?"},
        {"role": "user", "content": "1111 1111"}]},
     "values": [{"entity": "creditCard", "disguise": "split-user-turns", "written": ["4111 1111", "1111 1111"]}]},
    {"id": "ssn", "text": "please update 123456789 in the file", "values": [{"entity": "SSN", "disguise": "bare"}]},
    {"id": "clean", "prompt": "What is the capital of France?"},
]  # fmt: skip


def _run(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    code = main(["pii-eval", "--data", str(data), "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_recall_per_entity_and_disguise_and_false_positives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(tmp_path, capsys)
    result = json.loads(out)
    assert code == 0 and result["config"]["strict"] is True  # restricted by default, strict by default there
    assert result["values"] == 2 and result["leaked"] == 0
    assert result["per_disguise"]["split-user-turns"]["recall"] == 1.0
    assert result["per_entity"]["usSsn"]["values"] == 1  # the RoutingPolicy name SSN is accepted
    assert result["rows_without_values"] == 1 and result["false_positive_rate"] == 0.0
    assert result["scan_us"]["p99"] >= result["scan_us"]["p50"] > 0


def test_strict_off_lets_the_ambiguous_value_through(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(tmp_path, capsys, "--strict", "off")
    result = json.loads(out)
    assert result["leaked"] == 1 and result["leaks"] == [{"id": "ssn", "entity": "usSsn", "disguise": "bare"}]


def test_a_bad_row_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "x", "values": [{"entity": "passport"}]}\n')
    assert main(["pii-eval", "--data", str(data)]) == 2
    assert "line 1: unknown entity 'passport'" in capsys.readouterr().err
