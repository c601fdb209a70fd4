"""`tiered-operator` / `python -m tiered_operator`: run the kopf operator with the tiered handlers.

Two replicas may run: kopf peering elects the one with the highest priority (random per process unless given),
the other pauses and takes over when the leader's peering record expires (`TIERED_PEERING_LIFETIME`, 15 s).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_PEERING = "tiered-operator"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tiered-operator", description="Reconcile InferenceTiers and RoutingPolicies (tiered.dev/v1alpha1)."
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument(
        "--peering",
        default=os.environ.get("TIERED_PEERING", DEFAULT_PEERING),
        help="kopf peering object name (KopfPeering / ClusterKopfPeering)",
    )
    parser.add_argument("--standalone", action="store_true", help="run without peering (single replica only)")
    parser.add_argument(
        "--priority", type=int, default=None, help="peering priority; the highest live one reconciles (default: random)"
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("TIERED_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="kopf liveness endpoint URL ('' disables)",
    )
    parser.add_argument("--resync-seconds", type=float, default=None, help="periodic resync per object")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def ensure_peering(name: str, namespaces: Sequence[str]) -> bool:
    """Create the kopf peering object(s) if missing; False when the peering CRDs are not installed.

    kopf only pauses a replica through an existing peering object, so two replicas without one would both
    reconcile; creating it here (idempotently) makes `--replicas 2` safe out of the box.
    """
    import kubernetes

    from tiered_operator.handlers.startup import load_client_config

    load_client_config()
    api = kubernetes.client.CustomObjectsApi()
    conflict_or_exists = (409,)
    try:
        if not namespaces:
            body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": name}}
            api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
        for ns in namespaces:
            body = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": name, "namespace": ns}}
            try:
                api.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", body)
            except kubernetes.client.ApiException as exc:
                if exc.status not in conflict_or_exists:
                    raise
    except kubernetes.client.ApiException as exc:
        if exc.status in conflict_or_exists:
            return True
        if exc.status == 404:
            return False
        raise
    return True


def drop_unserved_admission_handlers(registry: Any, env: Mapping[str, str]) -> int:
    """Unregister validating handlers when no webhook server is configured; returns how many were dropped.

    The residency webhook is optional (served only with TIERED_WEBHOOK_PORT), but kopf refuses to run at all
    when admission handlers exist without a server. Without the webhook, status conditions and the router
    config still enforce residency (docs/residency.md), so the operator runs rather than crash-loops.
    """
    if env.get("TIERED_WEBHOOK_PORT", "").strip():
        return 0
    webhooks = getattr(registry, "_webhooks", None)
    handlers = getattr(webhooks, "_handlers", None)
    if not isinstance(handlers, list):
        return 0
    count = len(handlers)
    handlers.clear()
    return count


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    if args.resync_seconds is not None:
        os.environ["TIERED_RESYNC_SECONDS"] = str(args.resync_seconds)
    namespaces = list(args.namespace) or [
        n.strip() for n in os.environ.get("TIERED_WATCH_NAMESPACES", "").split(",") if n.strip()
    ]
    if args.all_namespaces:
        namespaces = []
    # One scope for every handler module, including those that read it from the environment (residency).
    os.environ["TIERED_WATCH_NAMESPACES"] = ",".join(namespaces)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:  # kopf logs every handler success at INFO: thousands of lines per minute at scale
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Imported here so the environment above is in place when handler modules read their settings.
    import kopf

    import tiered_operator.handlers  # noqa: F401  (registers every handler)

    log = logging.getLogger("tiered_operator")
    dropped = drop_unserved_admission_handlers(kopf.get_default_registry(), os.environ)
    if dropped:
        log.info("admission webhook not configured (TIERED_WEBHOOK_PORT): %d validating handlers inactive", dropped)
    priority = args.priority if args.priority is not None else random.randint(1, 2**31 - 1)
    standalone = args.standalone
    if not standalone and not ensure_peering(args.peering, namespaces):
        log.warning("kopf peering CRDs are not installed: running standalone (run a single replica only)")
        standalone = True
    log.info(
        "starting: namespaces=%s peering=%s priority=%d standalone=%s",
        namespaces or "all",
        args.peering,
        priority,
        standalone,
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=standalone,
            peering_name=None if standalone else args.peering,  # a name makes kopf's peering mandatory
            priority=priority,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
