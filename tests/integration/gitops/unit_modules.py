"""Load a helper module of tests/unit/gitops by path (tests/ is not a package, so it cannot be imported)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

UNIT_GITOPS = Path(__file__).resolve().parents[2] / "unit" / "gitops"


def load_unit_module(name: str) -> ModuleType:
    """tests/unit/gitops/<name>.py, registered under `name` so that both test trees share one module object."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, UNIT_GITOPS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
