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
from collections.abc import Sequence
from typing import Any

from tiered_operator.settings import OperatorSettings

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
    from tiered_operator.handlers.startup import load_client_config
    from tiered_operator.kube import Kube

    load_client_config()
    return Kube().ensure_peering(name, list(namespaces))


def drop_unserved_admission_handlers(registry: Any, settings: OperatorSettings) -> int:
    """Unregister validating handlers when no webhook server is configured; returns how many were dropped.

    The residency webhook is optional (served only with TIERED_WEBHOOK_PORT), but kopf refuses to run at all
    when admission handlers exist without a server. Without the webhook, status conditions and the router
    config still enforce residency (docs/residency.md), so the operator runs rather than crash-loops.
    """
    if settings.webhook is not None:
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
    namespaces = list(args.namespace) or list(OperatorSettings.from_env().namespaces)
    if args.all_namespaces:
        namespaces = []
    # The scope the command line chose is the one the startup handler reads (OperatorSettings.from_env).
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
    dropped = drop_unserved_admission_handlers(kopf.get_default_registry(), OperatorSettings.from_env())
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
