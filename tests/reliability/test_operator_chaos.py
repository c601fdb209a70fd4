"""Operator chaos, CI size: SIGKILL the operator 5 times at random moments while 10 tiers are created, edited and
deleted; the namespace must converge to exactly the desired objects (no orphans, no duplicates, every tier Ready
at its current generation). bench/reliability/operator_sigkill_chaos.py runs the issue's full size (50 tiers,
20 kills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from operator_chaos import run_chaos

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_operator_converges_after_random_sigkills_during_churn(
    crds_installed: Any, namespace: str, tmp_path: Path
) -> None:
    result = run_chaos(crds_installed, namespace, tmp_path, n_tiers=10, kills=5)
    assert result.problems == [], result.problems[:10]
    assert result.converged_s is not None
    assert result.operations > 10  # edits and deletes happened while the operator was being killed
