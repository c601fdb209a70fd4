"""`import tiered_operator.handlers` registers every handler module, and the CLI parses its scope options."""

from __future__ import annotations

import pkgutil
import sys

import kopf

import tiered_operator.handlers as handlers
from tiered_operator.__main__ import parse_args

SUPPORT_MODULES = {"reconciler", "runtime", "state"}
"""Modules without kopf decorators (used by the handler modules)."""


def test_package_imports_every_handler_module() -> None:
    modules = {m.name for m in pkgutil.iter_modules(handlers.__path__)} - SUPPORT_MODULES
    missing = [m for m in sorted(modules) if f"tiered_operator.handlers.{m}" not in sys.modules]
    assert not missing, f"handlers/__init__.py must import {missing}"


def test_children_and_custom_resources_are_watched_and_indexed() -> None:
    registry = kopf.get_default_registry()
    ids = {h.id for resource_handlers in registry._indexing._handlers for h in [resource_handlers]}
    assert {"tiered_tiers", "tiered_policies", "tiered_deployments", "tiered_services", "tiered_configmaps",
            "tiered_network_policies", "tiered_pods", "tiered_pod_events", "tiered_namespaces"} <= ids
    watching = {h.id for h in registry._watching._handlers}
    assert {
        "inferencetier_event",
        "routingpolicy_event",
        "owned_deployment_event",
        "owned_service_event",
        "owned_configmap_event",
        "owned_networkpolicy_event",
        "owned_pod_event",
        "namespace_event",
    } <= watching


def test_only_daemons_need_kopfs_finalizer_so_a_plain_tier_gets_none() -> None:
    """A kopf timer or daemon makes kopf put its finalizer on every object it runs for: one more write per
    object. The resync is one loop per process (handlers/startup.py); only the autoscaler (autoscaled tiers)
    and the budget loop (policies) are daemons."""
    registry = kopf.get_default_registry()
    spawning = registry._spawning._handlers
    assert {h.id for h in spawning} == {"autoscale", "budget"}
    assert all(getattr(h, "interval", None) is None for h in spawning)  # no timers


def test_cli_scope_and_peering_options() -> None:
    args = parse_args(["-n", "a", "-n", "b", "--kubeconfig", "/k", "--priority", "7", "--peering", "p"])
    assert args.namespace == ["a", "b"] and args.kubeconfig == "/k" and args.priority == 7 and args.peering == "p"
    assert parse_args(["-A"]).all_namespaces and parse_args([]).priority is None


def test_handler_modules_keep_no_mutable_state_and_start_no_threads_at_import() -> None:
    """What the operator remembers lives on the Reconciler in kopf's memo; importing the handlers starts nothing."""
    import subprocess

    for info in pkgutil.iter_modules(handlers.__path__):
        module = sys.modules[f"tiered_operator.handlers.{info.name}"]
        mutable = [name for name, value in vars(module).items()
                   if not name.startswith("__") and isinstance(value, dict | list | set | bytearray)]  # fmt: skip
        assert mutable == [], f"tiered_operator.handlers.{info.name} holds module-global mutable state: {mutable}"
    code = "import threading, tiered_operator.handlers; print(threading.active_count())"
    threads = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert threads.strip() == "1"


def test_the_operator_has_one_api_client_built_in_kube_py() -> None:
    """Every request of the running operator goes through `tiered_operator.kube.Kube` (the only writer, with its
    write counter); no other module builds a Kubernetes client. cli.py is `tiered status`, its own process."""
    import ast
    from pathlib import Path

    import tiered_operator

    root = Path(tiered_operator.__file__).parent
    builders = {"ApiClient", "new_client_from_config", "new_client_from_config_dict"}
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
                if name in builders or (name.endswith("Api") and name[:1].isupper()):
                    found.setdefault(str(path.relative_to(root)), []).append(name)
    assert set(found) == {"kube.py", "cli.py"}, found
    assert "ApiClient" in found["kube.py"]
