"""Run the Argo CD health checks in manifests/argocd/health/ the way Argo CD runs them.

Argo CD evaluates a health script with gopher-lua (Lua 5.1): the object is the global `obj`, the script's chunk
returns a table `{status=..., message=...}`, and only the base, table, string and math libraries exist. We run
the same file in lupa's Lua 5.1 runtime with io/os/require/debug removed, so a script that would fail inside
Argo CD (for example by calling `os.time()` or using a 5.3 integer operator) fails here too.

Shared by tests/unit/gitops (health_test.yaml cases) and tests/integration/gitops (objects read back from a real
API server); the integration side loads this file by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lupa import lua51

REPO = Path(__file__).resolve().parents[3]
HEALTH_DIR = REPO / "manifests" / "argocd" / "health"
GROUP = "tiered.dev"
KINDS = ("InferenceTier", "RoutingPolicy")
HEALTH_STATUSES = ("Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown")

# Globals an Argo CD health script does not get (Argo CD opens base, table, string, math; lupa adds `python`).
_UNAVAILABLE_GLOBALS = (
    "io", "os", "require", "package", "debug", "dofile", "loadfile", "module", "coroutine", "python",
)


@dataclass(frozen=True)
class HealthStatus:
    """What Argo CD shows for a resource: one of HEALTH_STATUSES and a message ('' when the script sets none)."""

    status: str
    message: str


@dataclass(frozen=True)
class HealthCase:
    """One entry of a health_test.yaml: the object in `input_path` must produce `expected`."""

    kind: str
    input_path: Path
    expected: HealthStatus


def health_script_path(kind: str) -> Path:
    """Where Argo CD's layout puts the check for one kind: <group>/<Kind>/health.lua."""
    return HEALTH_DIR / GROUP / kind / "health.lua"


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON value -> Lua value; nulls become nil (dropped from tables), as in Argo CD's JSON decoding."""
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items() if v is not None})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value if v is not None])
    return value


def run_health_script(script: str, obj: dict[str, Any]) -> HealthStatus:
    """Evaluate a health script against one object (a dict as `kubectl get -o json` returns it)."""
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    lua_globals = runtime.globals()
    for name in _UNAVAILABLE_GLOBALS:
        lua_globals[name] = None
    lua_globals["obj"] = _to_lua(runtime, obj)
    chunk = runtime.compile(script)
    result = chunk()
    if result is None:
        raise AssertionError("the health script returned nothing (Argo CD needs a table with status)")
    status = result["status"]
    message = result["message"]
    if status not in HEALTH_STATUSES:
        raise AssertionError(f"the health script returned status {status!r}, not one of {HEALTH_STATUSES}")
    return HealthStatus(status=str(status), message="" if message is None else str(message))


def run_health_check(kind: str, obj: dict[str, Any]) -> HealthStatus:
    """Evaluate the shipped check for `kind` against one object."""
    return run_health_script(health_script_path(kind).read_text(), obj)


def load_health_cases(kind: str) -> list[HealthCase]:
    """The cases of <Kind>/health_test.yaml, in Argo CD's format (tests: [{healthStatus, inputPath}])."""
    kind_dir = HEALTH_DIR / GROUP / kind
    document = yaml.safe_load((kind_dir / "health_test.yaml").read_text())
    cases = []
    for entry in document["tests"]:
        expected = entry["healthStatus"]
        cases.append(
            HealthCase(
                kind=kind,
                input_path=kind_dir / entry["inputPath"],
                expected=HealthStatus(status=expected["status"], message=expected.get("message", "")),
            )
        )
    return cases


def load_object(path: Path) -> dict[str, Any]:
    """A testdata object (YAML)."""
    obj = yaml.safe_load(path.read_text())
    if not isinstance(obj, dict):
        raise AssertionError(f"{path} does not hold one Kubernetes object")
    return obj
