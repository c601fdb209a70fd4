"""`tiered status` and `tiered explain --policy-ref` against the real API server, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
TIERED = str(Path(sys.executable).parent / "tiered")


def _tiered(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TIERED, *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def samples(crds_installed: Any, namespace: str) -> str:
    crds_installed.kubectl("-n", namespace, "apply", "-k", str(REPO / "manifests" / "samples"))
    return namespace


def test_status_lists_the_tiers_and_policies_of_a_namespace(crds_installed: Any, samples: str) -> None:
    result = _tiered("status", "-n", samples, kubeconfig=crds_installed.kubeconfig)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    tiers = {line.split()[1]: line.split() for line in lines if line.startswith(samples) and len(line.split()) == 9}
    assert tiers["slm-edge"][2] == "local"
    assert tiers["gpt-cloud"][2] == "cloud"
    assert any(line.startswith(samples) and " hybrid " in line for line in lines)
    # the namespace filter is honoured
    other = _tiered("status", "-n", "default", kubeconfig=crds_installed.kubeconfig)
    assert "No InferenceTiers found." in other.stdout


def test_explain_reads_the_policy_its_tiers_and_the_namespace_labels(crds_installed: Any, samples: str) -> None:
    prompt = "my card number is 4111 1111 1111 1111, prove that the square root of two is irrational"
    result = _tiered("explain", "--policy-ref", f"{samples}/hybrid", "--json", prompt,
                     kubeconfig=crds_installed.kubeconfig)
    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    # the namespace has no residency label: restricted, so a request with a card number stays on the local tier
    assert decision["tier"] == "slm-edge"
    assert "creditCard" in decision["pii"]

    crds_installed.kubectl("label", "namespace", samples, "tiered.dev/residency=local-only")
    clean = _tiered("explain", "--policy-ref", f"{samples}/hybrid", "--json",
                    "design a database schema for a multi-tenant billing system",
                    kubeconfig=crds_installed.kubeconfig)
    assert clean.returncode == 0, clean.stderr
    assert "gpt-cloud" not in json.loads(clean.stdout)["chain"]


def test_explain_names_a_policy_that_does_not_exist(crds_installed: Any, namespace: str) -> None:
    result = _tiered("explain", "--policy-ref", f"{namespace}/nope", "hello", kubeconfig=crds_installed.kubeconfig)
    assert result.returncode == 2
    assert result.stderr.startswith("error: the API server answered 404") and f"{namespace}/nope" in result.stderr
    assert "Traceback" not in result.stderr
