"""A thin, synchronous Prometheus query layer over prometheus-api-client.

Synchronous on purpose (prometheus-api-client uses requests): kopf handlers call it from sync handlers or
``asyncio.to_thread`` so a slow Prometheus never blocks the event loop. Every call has a timeout and at most
one retry, so "Prometheus is down" turns into ``MetricsUnavailableError`` within seconds, not after the
client's default back-off.

Results are plain floats or ``None``: ``None`` means "no sample" (empty vector or NaN), never zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from tiered_operator.autoscale import promql
from tiered_operator.autoscale.algorithm import TierMetrics

log = logging.getLogger(__name__)


class MetricsUnavailableError(RuntimeError):
    """Prometheus could not answer (unreachable, timed out, HTTP error, malformed reply)."""


@dataclass(frozen=True)
class PrometheusSettings:
    """Where Prometheus is and how to authenticate (from the operator settings' TIERED_PROMETHEUS_*)."""

    url: str
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    timeout_seconds: float = 5.0
    verify_tls: bool = True

    @classmethod
    def from_files(
        cls, url: str, token_file: str | None = None, basic_auth_file: str | None = None
    ) -> PrometheusSettings:
        """Read credentials from mounted files: a token, or ``user:password`` on one line.

        Files rather than environment variables so a rotated Secret is picked up by re-reading.
        """
        token = Path(token_file).read_text().strip() if token_file else None
        auth: tuple[str, str] | None = None
        if basic_auth_file:
            user, sep, password = Path(basic_auth_file).read_text().strip().partition(":")
            if not sep:
                raise ValueError(f"{basic_auth_file}: expected 'user:password' on one line")
            auth = (user, password)
        return cls(url=url.rstrip("/"), bearer_token=token, basic_auth=auth)


def _scalar(result: Any) -> float | None:
    """The single value of an instant-vector result, None for an empty vector or NaN."""
    if not isinstance(result, list):
        raise MetricsUnavailableError(f"unexpected query result type {type(result).__name__}")
    if not result:
        return None
    if len(result) != 1:
        raise MetricsUnavailableError(f"expected one series, got {len(result)}")
    try:
        value = float(result[0]["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MetricsUnavailableError(f"malformed sample {result[0]!r}") from exc
    return None if math.isnan(value) or math.isinf(value) else value


class PrometheusMetrics:
    """Answers the autoscaler's and the budget loop's questions from one Prometheus."""

    def __init__(self, settings: PrometheusSettings) -> None:
        self.settings = settings
        headers: Mapping[str, str] | None = (
            {"Authorization": f"Bearer {settings.bearer_token}"} if settings.bearer_token else None
        )
        self._client = PrometheusConnect(
            url=settings.url,
            headers=dict(headers) if headers else None,
            disable_ssl=not settings.verify_tls,
            auth=settings.basic_auth,
            retry=Retry(total=1, backoff_factor=0, status_forcelist=[502, 503, 504]),
            timeout=settings.timeout_seconds,
        )

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def query_scalar(self, query: str) -> float | None:
        """Run an instant query that yields at most one series; None when it has no (finite) sample."""
        log.debug("PromQL: %s", query)
        try:
            result = self._client.custom_query(query)
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise MetricsUnavailableError(f"Prometheus at {self.settings.url} did not answer: {exc}") from exc
        value = _scalar(result)
        log.debug("PromQL result: %s -> %s", query, value)
        return value

    def query_vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        """Run an instant query; every series as (labels, value), NaN and infinite samples left out."""
        log.debug("PromQL: %s", query)
        try:
            result = self._client.custom_query(query)
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise MetricsUnavailableError(f"Prometheus at {self.settings.url} did not answer: {exc}") from exc
        if not isinstance(result, list):
            raise MetricsUnavailableError(f"unexpected query result type {type(result).__name__}")
        out = []
        for series in result:
            try:
                value = float(series["value"][1])
                labels_ = {str(k): str(v) for k, v in dict(series.get("metric") or {}).items()}
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise MetricsUnavailableError(f"malformed sample {series!r}") from exc
            if math.isfinite(value):
                out.append((labels_, value))
        return out

    def tier_metrics(
        self, selector: promql.TierSelector, metric: promql.SLOMetric, window: str
    ) -> TierMetrics:
        """The tier's p95 (ms) over the SLO window and its requests in flight."""
        p95 = self.query_scalar(promql.p95_ms_query(selector, metric, window))
        in_flight = self.query_scalar(promql.in_flight_query(selector))
        return TierMetrics(p95_ms=p95, in_flight=in_flight)
