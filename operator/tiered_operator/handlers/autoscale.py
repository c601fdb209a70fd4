"""kopf handlers of the autoscaler and the budget loop: observe (Prometheus, scale subresource) → decide
(pure functions in tiered_operator.autoscale) → act (scale, status, Event).

Both loops are kopf *daemons* rather than ``@kopf.timer``: a timer's interval is fixed at registration, but
``evaluationIntervalSeconds`` is per tier. A daemon per object sleeps its own interval, re-reading the live
spec each round, and stops by itself when the ``when`` filter no longer matches (autoscaling removed). The
handlers are synchronous (kopf runs them in threads) because prometheus-api-client and the official
Kubernetes client block. ``cancellation_backoff`` makes kopf re-check a stopping daemon after 1 s (the loop exits
as soon as ``stopped`` is set); without it kopf re-checks only after ``cancellation_timeout`` and a deleted tier
keeps its finalizer 10 s longer.

Writes go through the operator's ``Kube`` under the field manager ``tiered-autoscaler``: replicas through the
Deployment's scale subresource, the tier's status slice (p95Ms, lastScaleTime, lastScaleReason, SLOMet) and the policy's
budget slice (BudgetOK, monthToDateUSD, avoidedUSD) through server-side apply on the status subresource.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from tiered_operator import labels
from tiered_operator.api.inferencetier import InferenceTier
from tiered_operator.api.routingpolicy import RoutingPolicy
from tiered_operator.autoscale import budget as budget_math
from tiered_operator.autoscale import promql
from tiered_operator.autoscale.algorithm import Recommendation, ScaleDecision, TierMetrics, desired_replicas
from tiered_operator.autoscale.prometheus import MetricsUnavailableError, PrometheusMetrics, PrometheusSettings
from tiered_operator.autoscale.tierstatus import (
    AUTOSCALER_STATUS_KEYS,
    AutoscaleTarget,
    autoscale_target,
    slo_condition,
    tier_status,
)
from tiered_operator.handlers.runtime import reconciler
from tiered_operator.handlers.state import autoscaled
from tiered_operator.kube import Kube
from tiered_operator.reconcile import naming
from tiered_operator.reconcile.conditions import Condition, merge_conditions, status_differs, transitions
from tiered_operator.reconcile.status import route_thresholds_status
from tiered_operator.settings import OperatorSettings

log = logging.getLogger(__name__)

BUDGET_INTERVAL_SECONDS = 60.0
"""How often month-to-date spend is compared with the budget (cost counters move slowly)."""


# ---------------------------------------------------------------------------------------------------------------
# I/O: the few Kubernetes calls the loops make
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AutoscalerKube:
    """The autoscaler's Kubernetes calls, through the operator's one `Kube` writing as ``tiered-autoscaler``."""

    kube: Kube

    @classmethod
    def sharing(cls, operator_kube: Kube) -> AutoscalerKube:
        """The operator's client (its connection pool and write counter), writing as ``tiered-autoscaler``."""
        return cls(operator_kube.as_manager(labels.AUTOSCALER_FIELD_MANAGER))

    def deployment_replicas(self, namespace: str, name: str) -> int | None:
        """``spec.replicas`` of the Deployment's scale subresource, None when the Deployment does not exist."""
        return self.kube.deployment_replicas(namespace, name)

    def cloud_tiers(self, namespace: str, names: Sequence[str]) -> list[str]:
        """Which of ``names`` are InferenceTiers with ``backend: cloud`` (absent tiers are skipped)."""
        found = []
        for name in names:
            try:
                obj = self.kube.custom.get_namespaced_custom_object(
                    labels.GROUP, labels.VERSION, namespace, labels.PLURAL_INFERENCE_TIERS, name
                )
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            if isinstance(obj, Mapping) and (obj.get("spec") or {}).get("backend") == "cloud":
                found.append(name)
        return found

    def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        """Set ``spec.replicas`` through the scale subresource under the autoscaler's field manager."""
        self.kube.scale_deployment(namespace, name, replicas)

    def apply_status(self, plural: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Server-side apply of the autoscaler's status slice: only these fields change, and the conditions
        list (a list-map keyed by type) keeps every other writer's entries."""
        self.kube.apply_status(plural, kind, namespace, name, status)

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the tier or policy (best effort, as in `Kube.event`)."""
        self.kube.event(obj, reason, message, type_)


# ---------------------------------------------------------------------------------------------------------------
# One evaluation (observe → decide → act), callable without kopf
# ---------------------------------------------------------------------------------------------------------------


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def evaluate_tier(
    tier_obj: Mapping[str, Any],
    target: AutoscaleTarget,
    prometheus: PrometheusMetrics | None,
    kube: AutoscalerKube,
    history: tuple[Recommendation, ...],
    now: float,
) -> ScaleDecision | None:
    """Evaluate one tier once. Returns the decision (its ``history`` feeds the next call), or None when the
    tier's Deployment does not exist yet (the reconciler creates it; nothing to scale)."""
    current = kube.deployment_replicas(target.namespace, target.deployment)
    if current is None:
        log.debug("tier %s/%s: Deployment %s not found yet", target.namespace, target.name, target.deployment)
        return None

    metrics: TierMetrics | None = None
    error: str | None = None
    if prometheus is None:
        error = "no Prometheus configured (set TIERED_PROMETHEUS_URL)"
    else:
        try:
            metrics = prometheus.tier_metrics(target.selector, target.metric, target.window)
        except MetricsUnavailableError as exc:
            error = str(exc)
    decision = desired_replicas(current, metrics or TierMetrics(None, None), target.policy, now=now, history=history)
    log.info("tier %s/%s: %s (%s)", target.namespace, target.name, decision.reason.value, decision.message)

    if decision.changed:
        kube.scale_deployment(target.namespace, target.deployment, decision.desired)
        kube.event(
            tier_obj,
            "Normal",
            decision.reason.value,
            f"Scaled Deployment {target.deployment} from {decision.current} to {decision.desired} replicas: "
            f"{decision.message}",
        )

    status = dict(tier_obj.get("status") or {})
    generation = int((tier_obj.get("metadata") or {}).get("generation") or 0)
    condition = slo_condition(metrics, target.policy.slo_p95_ms, error)
    desired_status = tier_status(
        status,
        condition=condition,
        metrics=metrics,
        decision=decision,
        scaled=decision.changed,
        generation=generation,
        now=_rfc3339(now),
    )
    if status_differs(status, desired_status, AUTOSCALER_STATUS_KEYS):
        kube.apply_status(
            labels.PLURAL_INFERENCE_TIERS, labels.KIND_INFERENCE_TIER, target.namespace, target.name, desired_status
        )
    for changed in transitions(status.get("conditions"), desired_status["conditions"]):
        kind = "Normal" if changed["status"] == "True" else "Warning"
        kube.event(tier_obj, kind, str(changed["reason"]), f"SLOMet={changed['status']}: {changed['message']}")
    return decision


def evaluate_budget(
    policy_obj: Mapping[str, Any],
    prometheus: PrometheusMetrics | None,
    kube: AutoscalerKube,
    now: datetime.datetime,
) -> budget_math.BudgetDecision:
    """Measure one RoutingPolicy's month-to-date spend and write BudgetOK / monthToDateUSD / avoidedUSD / localShare."""
    policy = RoutingPolicy.from_k8s(policy_obj)
    namespace, name = policy.metadata.namespace or "default", policy.metadata.name or ""
    status = dict(policy_obj.get("status") or {})
    budget_spec = policy.spec.budget
    seconds = budget_math.seconds_into_month(now)
    spend: float | None = None
    avoided: float | None = None
    share: str | None = None
    thresholds: list[dict[str, str]] | None = None
    metrics_ok = prometheus is not None
    if prometheus is not None:
        try:
            cloud = kube.cloud_tiers(namespace, policy.spec.tiers)
            spend = prometheus.query_scalar(promql.spend_query(namespace, name, seconds, cloud)) if cloud else 0.0
            avoided = prometheus.query_scalar(promql.avoided_query(namespace, name, seconds))
            local = [t for t in policy.spec.tiers if t not in cloud]
            served = prometheus.query_scalar(promql.served_query(namespace, name, seconds))
            served_local = (
                prometheus.query_scalar(promql.served_query(namespace, name, seconds, local)) if local else 0.0
            )
            share = budget_math.local_share(served_local, served)
            thresholds = route_thresholds_status(
                prometheus.query_vector(promql.route_threshold_query(namespace, name))
            )
        except MetricsUnavailableError as exc:
            log.warning("policy %s/%s: %s", namespace, name, exc)
            metrics_ok = False
    decision = budget_math.decide_budget(
        monthly_usd=budget_spec.monthly if budget_spec is not None else None,
        when_exhausted=str(budget_spec.when_exhausted) if budget_spec is not None else "localOnly",
        spend_usd=spend,
        avoided_usd=avoided,
        metrics_ok=metrics_ok,
        previously_exhausted=budget_math.budget_exhausted(status),
    )
    generation = int((policy_obj.get("metadata") or {}).get("generation") or 0)
    condition = Condition(budget_math.CONDITION_BUDGET_OK, decision.status, decision.reason, decision.message)
    merged = merge_conditions(
        status.get("conditions"), [condition], generation=generation, now=_rfc3339(now.timestamp())
    )
    slice_: dict[str, Any] = {"conditions": [c for c in merged if c["type"] == budget_math.CONDITION_BUDGET_OK]}
    figures = (("monthToDateUSD", decision.month_to_date_usd), ("avoidedUSD", decision.avoided_usd),
               ("localShare", share), ("routeThresholds", thresholds))
    for key, value in figures:
        if value is not None:
            slice_[key] = value
        elif status.get(key) is not None:
            slice_[key] = status[key]
    if status_differs(status, slice_, budget_math.BUDGET_STATUS_KEYS):
        kube.apply_status(labels.PLURAL_ROUTING_POLICIES, labels.KIND_ROUTING_POLICY, namespace, name, slice_)
    for changed in transitions(status.get("conditions"), slice_["conditions"]):
        kind = "Normal" if changed["status"] == "True" else "Warning"
        kube.event(policy_obj, kind, str(changed["reason"]), f"BudgetOK={changed['status']}: {changed['message']}")
    return decision


# ---------------------------------------------------------------------------------------------------------------
# kopf wiring
# ---------------------------------------------------------------------------------------------------------------


def _collaborators(memo: Any) -> tuple[AutoscalerKube, OperatorSettings]:
    """The operator's `Kube` and settings, from the Reconciler the startup handler put into ``memo``."""
    rec = reconciler(memo)
    return AutoscalerKube.sharing(rec.kube), rec.settings


def _prometheus(settings: OperatorSettings) -> PrometheusMetrics | None:
    if not settings.prometheus_url:
        return None
    return PrometheusMetrics(
        PrometheusSettings.from_files(
            settings.prometheus_url, settings.prometheus_token_file, settings.prometheus_basic_auth_file
        )
    )


@kopf.daemon(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_INFERENCE_TIERS,
    id="autoscale",
    when=autoscaled,
    cancellation_backoff=1.0,
    cancellation_timeout=10.0,
)
async def inferencetier_autoscale(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Evaluate the tier every ``evaluationIntervalSeconds`` until autoscaling is removed or the tier deleted.

    The recommendation history lives in this loop (kept across spec edits, lost on operator restart, after
    which scale-down waits one stabilization window again — the safe direction).
    """
    history: tuple[Recommendation, ...] = ()
    kube, settings = _collaborators(memo)
    prometheus = _prometheus(settings)
    try:
        while not stopped:
            tier_obj = dict(body)  # kopf keeps `body` live: each round sees the latest spec and status
            interval = 30.0
            try:
                target = autoscale_target(InferenceTier.from_k8s(tier_obj), naming.deployment_name(body.meta.name))
                if target is not None:
                    interval = target.interval_seconds
                    # Blocking I/O in a worker thread only for the round: a daemon must not hold one of kopf's
                    # sync-handler threads for its whole life (N policies would starve every other handler).
                    decision = await asyncio.to_thread(
                        evaluate_tier, tier_obj, target, prometheus, kube, history, time.time()
                    )
                    if decision is not None:
                        history = decision.history
            except Exception:  # a long-lived loop: log, keep the history, try again next round
                log.exception("autoscaling %s/%s failed this round", body.meta.namespace, body.meta.name)
            await stopped.wait(interval)
    finally:
        if prometheus is not None:
            prometheus.close()


@kopf.daemon(
    labels.GROUP,
    labels.VERSION,
    labels.PLURAL_ROUTING_POLICIES,
    id="budget",
    cancellation_backoff=1.0,
    cancellation_timeout=10.0,
)
async def routingpolicy_budget(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Compare the policy's month-to-date spend with its budget every minute.

    Runs for every policy, with or without a budget: spend and avoided spend are reported either way, and a
    budget that is removed must flip BudgetOK back to True (a filtered daemon would just stop).
    """
    kube, settings = _collaborators(memo)
    prometheus = _prometheus(settings)
    try:
        while not stopped:
            try:
                await asyncio.to_thread(
                    evaluate_budget, dict(body), prometheus, kube, datetime.datetime.now(datetime.UTC)
                )
            except Exception:  # a long-lived loop: log and try again next round
                log.exception("budget of %s/%s failed this round", body.meta.namespace, body.meta.name)
            await stopped.wait(BUDGET_INTERVAL_SECONDS)
    finally:
        if prometheus is not None:
            prometheus.close()
