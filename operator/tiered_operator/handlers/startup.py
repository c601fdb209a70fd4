"""Operator-wide kopf settings, the process's collaborators and its one resync loop, in one startup handler
(kopf's recommended place), and their teardown in one cleanup handler."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import kopf
import kubernetes

from tiered_operator import labels
from tiered_operator.handlers.reconciler import Reconciler, outranked
from tiered_operator.handlers.state import Indexes
from tiered_operator.kube import Kube
from tiered_operator.residency.tls import ensure_certificates
from tiered_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

WATCH_SERVER_TIMEOUT = 240  # an integer: kopf sends it as timeoutSeconds, which the API server parses as int
"""Ask the API server to end each watch after this long; kopf re-establishes it (stale watches cannot linger)."""
WATCH_CLIENT_TIMEOUT = 270.0
WATCH_INACTIVITY_TIMEOUT = 300.0
"""No bytes for this long on a watch means a silently dead connection (load balancers): reconnect."""
OWNED_PLURALS = ("deployments", "services", "configmaps", "networkpolicies", "ciliumnetworkpolicies",
                 "poddisruptionbudgets", "pods")  # fmt: skip
"""Kinds the operator watches only for what it owns (label `app.kubernetes.io/managed-by=tiered-operator`)."""


def load_client_config() -> kubernetes.client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig (`KUBECONFIG` / --kubeconfig)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    config = kubernetes.client.Configuration.get_default_copy()
    config.connection_pool_maxsize = 16
    kubernetes.client.Configuration.set_default(config)
    return config


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **kwargs: Any) -> None:
    op = OperatorSettings.from_env()
    settings.persistence.finalizer = labels.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=labels.KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = WATCH_INACTIVITY_TIMEOUT
    # Filter on the API server's side: the operator receives only its own children and pods, and only the Warning
    # events about pods, not every object of these kinds in its scope (kopf's handler filters are client-side).
    for plural in OWNED_PLURALS:
        settings.watching.label_selectors[plural] = f"{labels.LABEL_MANAGED_BY}={labels.MANAGED_BY_VALUE}"
    settings.watching.field_selectors["events"] = "type=Warning,involvedObject.kind=Pod"
    settings.networking.request_timeout = 30
    # kopf posts its log lines about an object as Events on it: one per handler run ("Handler ... succeeded")
    # at INFO. Only warnings and errors become Events (a handler that failed), so a tier costs no Event writes.
    settings.posting.level = logging.WARNING
    settings.peering.lifetime = op.peering_lifetime
    settings.peering.stealth = True
    settings.execution.max_workers = op.workers
    if op.webhook is not None:
        cert, key, ca = ensure_certificates(op.webhook)
        settings.admission.server = kopf.WebhookServer(
            addr=op.webhook.addr,
            port=op.webhook.port or None,
            host=op.webhook.host,
            certfile=cert,
            pkeyfile=key,
            cafile=ca,
        )
        settings.admission.managed = op.webhook.configuration
        logger.info(
            "admission webhook on %s:%s, configuration %s", op.webhook.addr, op.webhook.port, op.webhook.configuration
        )
    load_client_config()
    kube = Kube(
        field_manager=op.field_manager,
        reporting_instance=os.environ.get("POD_NAME", "tiered-operator"),
        discovery_ttl=op.discovery_ttl_seconds,
    )
    rec = Reconciler(op, kube)
    memo.reconciler = rec
    peering = None if settings.peering.standalone else (settings.peering.name, settings.peering.priority)
    memo.resync = asyncio.get_running_loop().create_task(_resync_loop(rec, rec.indexes(kwargs), peering))
    if op.stats_seconds > 0:
        threading.Thread(target=_log_stats, args=(rec, op.stats_seconds), name="tiered-stats", daemon=True).start()
    logger.info(
        "tiered-operator configured: field manager %s, resync %ss, peering lifetime %ss",
        op.field_manager,
        op.resync_seconds,
        settings.peering.lifetime,
    )


async def _resync_loop(rec: Reconciler, idx: Indexes, peering: tuple[str, int] | None) -> None:
    """Every resync interval, reconcile what no event reconciled meanwhile (and audit the indexes).

    One loop for the process instead of a kopf timer per object: a timer needs kopf's finalizer on every object,
    one more write per tier. kopf pauses its own handlers while another replica outranks this one; this loop
    asks kopf's peering record the same question before each round.
    """
    interval = rec.settings.resync_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            if peering is not None:
                status = await asyncio.to_thread(rec.kube.peering_status, peering[0], list(rec.settings.namespaces))
                if outranked(status, peering[1], time.time()):
                    continue
            await asyncio.to_thread(rec.resync, idx)
        except asyncio.CancelledError:
            raise
        except Exception:  # a long-lived loop: log and try again next round
            log.exception("resync round failed")


def stats_line(rec: Reconciler) -> str:
    return (
        f"operator stats: reconciles={sum(rec.reconciles.values())} tier={rec.reconciles['tier']} "
        f"policy={rec.reconciles['policy']} writes={rec.kube.total_writes}"
    )


def _log_stats(rec: Reconciler, every: float) -> None:
    """TIERED_STATS_SECONDS > 0: a line with the reconcile and write counts whenever they changed (benchmarks)."""
    last = ""
    while True:
        time.sleep(every)
        line = stats_line(rec)
        if line != last:
            log.info("%s", line)
            last = line


@kopf.on.cleanup()
async def report_writes(memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Stop the resync loop; log the write counts on exit: the operator's own account of what it changed."""
    task = getattr(memo, "resync", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
    rec = getattr(memo, "reconciler", None)
    if isinstance(rec, Reconciler):
        logger.info("writes issued: %s", dict(rec.kube.writes))
        logger.info("%s", stats_line(rec))


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials from the same source as our client (in-cluster, else the kubeconfig given by
    --kubeconfig/KUBECONFIG read at call time: the client library reads KUBECONFIG only at import time)."""
    config = load_client_config()
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
    )
