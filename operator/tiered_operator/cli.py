"""`tiered`: the command-line entry point — `status`, `explain`, and (in a development checkout, where the
`tiered_dev` package is installed) the local cluster, `tiered dev up|down`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiered_operator import labels


def _kubeconfig(explicit: str | None) -> str | None:
    """--kubeconfig, else $KUBECONFIG, else the local control plane's admin kubeconfig when it exists."""
    if explicit:
        return explicit
    if os.environ.get("KUBECONFIG"):
        return None
    local = Path(os.environ.get("TIERED_DEV_DIR", ".dev")) / "kubeconfig"
    return str(local) if local.exists() else None


def _custom_objects(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    config.load_kube_config(config_file=kubeconfig)
    return client.CustomObjectsApi(), client.CoreV1Api()


def _list(api: Any, plural: str, namespace: str | None) -> list[dict[str, Any]]:
    if namespace:
        found = api.list_namespaced_custom_object(labels.GROUP, labels.VERSION, namespace, plural)
    else:
        found = api.list_cluster_custom_object(labels.GROUP, labels.VERSION, plural)
    return list(found.get("items", []))


def _status(args: argparse.Namespace) -> int:
    from tiered_operator.views import render_status

    custom, _core = _custom_objects(_kubeconfig(args.kubeconfig))
    namespace = None if args.all_namespaces else args.namespace
    tiers = _list(custom, labels.PLURAL_INFERENCE_TIERS, namespace)
    policies = _list(custom, labels.PLURAL_ROUTING_POLICIES, namespace)
    print(render_status(tiers, policies))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    from tiered_operator.views import PolicyBundle, bundle_from_documents, compile_bundle, render_explanation
    from tiered_router.explain import explain

    try:
        if args.policy:
            bundle = bundle_from_documents(Path(args.policy).read_text(), residency=args.residency)
        else:
            namespace, _, name = args.policy_ref.partition("/")
            if not name:
                raise ValueError("--policy-ref takes NAMESPACE/NAME")
            custom, core = _custom_objects(_kubeconfig(args.kubeconfig))
            policy = custom.get_namespaced_custom_object(
                labels.GROUP, labels.VERSION, namespace, labels.PLURAL_ROUTING_POLICIES, name)
            tiers = {t["metadata"]["name"]: t for t in _list(custom, labels.PLURAL_INFERENCE_TIERS, namespace)}
            ns_labels = dict(core.read_namespace(namespace).metadata.labels or {})
            if args.residency:
                ns_labels[labels.LABEL_RESIDENCY] = args.residency
            bundle = PolicyBundle(policy, tiers, ns_labels)
        config = compile_bundle(bundle)
    except ApiException as exc:
        print(f"error: the API server answered {exc.status} {exc.reason} for {args.policy_ref}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = explain(args.prompt, config, pinned_tier=args.tier)
    print(json.dumps(result, indent=2) if args.json else render_explanation(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiered", description="Hybrid LLM inference operator tooling.")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="tiers and policies in the cluster: P95 vs SLO, replicas, spend")
    status.add_argument("--kubeconfig", help="default: $KUBECONFIG, else .dev/kubeconfig when it exists")
    status.add_argument("-n", "--namespace", help="only this namespace")
    status.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace (default)")
    status.set_defaults(func=_status)

    explain = sub.add_parser("explain", help="which tier and route a prompt gets under a policy, and why")
    source = explain.add_mutually_exclusive_group(required=True)
    source.add_argument("--policy", metavar="FILE",
                        help="YAML with the RoutingPolicy and its InferenceTiers (and optionally the Namespace)")
    source.add_argument("--policy-ref", metavar="NS/NAME", help="read the policy and its tiers from the cluster")
    explain.add_argument("--kubeconfig", help="for --policy-ref")
    explain.add_argument("--residency", choices=list(labels.RESIDENCY_CLASSES),
                         help="override the namespace's residency class")
    explain.add_argument("--tier", help="pin a tier, as the router's override header would")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument("prompt")
    explain.set_defaults(func=_explain)

    try:
        from tiered_dev.cli import add_dev_commands
    except ImportError:  # an installed operator or image: no development tooling
        pass
    else:
        add_dev_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
