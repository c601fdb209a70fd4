"""crds/ and docs/api.md are exactly what the models generate now (run `make crds` when this fails)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tiered_operator.api.crdgen import HEADER, render_all, stale_files, write_all

REPO = Path(__file__).resolve().parents[3]


def test_generated_files_are_fresh() -> None:
    assert stale_files(REPO) == [], "generated files are stale: run `make crds`"


def test_generated_files_are_marked_as_generated() -> None:
    for rel, content in render_all().items():
        assert "DO NOT EDIT" in content.splitlines()[0], rel
    assert (REPO / "crds" / "inferencetiers.yaml").read_text(encoding="utf-8").startswith(HEADER)


def test_generation_is_deterministic() -> None:
    assert render_all() == render_all()


def test_check_mode_fails_on_a_stale_tree_and_passes_after_writing(tmp_path: Path) -> None:
    def check() -> int:
        cmd = [sys.executable, "-m", "tiered_operator.api.crdgen", "--check", "--root", str(tmp_path)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).returncode

    assert check() == 1
    assert sorted(write_all(tmp_path)) == sorted(render_all())
    assert check() == 0
    (tmp_path / "crds" / "routingpolicies.yaml").write_text("# edited by hand\n", encoding="utf-8")
    assert check() == 1
    assert stale_files(tmp_path) == ["crds/routingpolicies.yaml"]
