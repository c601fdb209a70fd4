"""The SLM server's default llama.cpp thread count follows the container's CPU limit, not the host's CPUs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiered_slm.model import cpu_quota_cores, default_threads


def _v1(root: Path, quota: int, period: int = 100000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period}\n")
    return root


@pytest.mark.parametrize(("quota", "cores"), [(100000, 1.0), (150000, 1.5), (50000, 0.5), (-1, None)])
def test_cgroup_v1_quota_in_cores(tmp_path: Path, quota: int, cores: float | None) -> None:
    assert cpu_quota_cores(_v1(tmp_path, quota)) == cores


@pytest.mark.parametrize(("text", "cores"), [("max 100000", None), ("200000 100000", 2.0), ("70000 100000", 0.7)])
def test_cgroup_v2_quota_in_cores(tmp_path: Path, text: str, cores: float | None) -> None:
    (tmp_path / "cpu.max").write_text(text + "\n")
    assert cpu_quota_cores(tmp_path) == cores


def test_threads_are_capped_by_the_limit_and_never_zero(tmp_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert default_threads(tmp_path / "no-cgroup") == cpus
    assert default_threads(_v1(tmp_path / "one", 100000)) == 1
    assert default_threads(_v1(tmp_path / "half", 50000)) == 1
    assert default_threads(_v1(tmp_path / "many", 6400000)) == cpus  # a limit above the CPUs changes nothing
    if cpus >= 2:
        assert default_threads(_v1(tmp_path / "one-and-a-half", 150000)) == 2
