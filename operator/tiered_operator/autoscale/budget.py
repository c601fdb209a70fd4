"""Budget math for a RoutingPolicy: month-to-date spend, spend avoided, and whether the budget is exhausted.

Pure functions over numbers already fetched from Prometheus. The month is the calendar month in UTC, so "the
next month flips it back" needs no state: the spend query's range starts at the first of the month, and a new
month starts from zero.

The contract with the router-config builder is ``budget_exhausted(status)``: the policy's ``BudgetOK``
condition is ``False`` exactly when the router must apply ``whenExhausted``. The budget loop is the only writer
of that condition; the builder only reads it (docs/autoscaling.md, "Budget").
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

CONDITION_BUDGET_OK = "BudgetOK"
BUDGET_STATUS_KEYS = frozenset({"monthToDateUSD", "avoidedUSD", "localShare", "routeThresholds"})
"""Status fields of a RoutingPolicy the budget loop owns (besides its BudgetOK condition)."""
REASON_WITHIN_BUDGET = "WithinBudget"
REASON_NO_BUDGET = "NoBudget"
REASON_EXHAUSTED = "BudgetExhausted"
REASON_METRICS_UNAVAILABLE = "MetricsUnavailable"

_CENT_MICROS = Decimal("0.000001")


def month_start(now: datetime.datetime) -> datetime.datetime:
    """Midnight UTC on the first day of ``now``'s month (``now`` must be timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    utc = now.astimezone(datetime.UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seconds_into_month(now: datetime.datetime) -> float:
    """Seconds since the month started: the range of the month-to-date ``increase()``."""
    return (now.astimezone(datetime.UTC) - month_start(now)).total_seconds()


def format_usd(value: Decimal | float) -> str:
    """A status money string: fixed six decimals at most, trailing zeros trimmed to two (``"12.50"``)."""
    amount = Decimal(str(value)).quantize(_CENT_MICROS, rounding=ROUND_HALF_UP)
    if amount <= 0:  # also turns -0.000000 (rounded float noise) into 0
        amount = Decimal(0)
    text = f"{amount:f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac}"


@dataclass(frozen=True)
class BudgetDecision:
    """What the budget loop writes: the BudgetOK condition and the money figures (None = leave as is)."""

    exhausted: bool
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    month_to_date_usd: str | None
    avoided_usd: str | None


def decide_budget(
    *,
    monthly_usd: Decimal | None,
    when_exhausted: str,
    spend_usd: float | None,
    avoided_usd: float | None,
    metrics_ok: bool,
    previously_exhausted: bool,
) -> BudgetDecision:
    """Compare month-to-date spend with the budget.

    ``spend_usd`` None with ``metrics_ok`` means "no cost series yet", which is zero spend. When Prometheus
    cannot answer, a policy already exhausted stays exhausted (spend cannot go down within a month, and failing
    open would send traffic to the cloud unbudgeted); one that was not exhausted becomes Unknown and the
    router keeps serving as before.
    """
    if monthly_usd is None and not metrics_ok:
        return BudgetDecision(
            False, "True", REASON_NO_BUDGET,
            "no monthly budget set; month-to-date spend cannot be read from Prometheus", None, None,
        )
    if not metrics_ok:
        if previously_exhausted:
            return BudgetDecision(
                True, "False", REASON_EXHAUSTED,
                f"monthly budget exhausted; Prometheus is unavailable, so the router keeps applying "
                f"whenExhausted={when_exhausted} until spend can be measured again",
                None, None,
            )
        return BudgetDecision(
            False, "Unknown", REASON_METRICS_UNAVAILABLE,
            "month-to-date spend cannot be read from Prometheus; the router keeps its current behaviour",
            None, None,
        )
    spend = Decimal(str(spend_usd or 0.0))
    avoided = Decimal(str(avoided_usd or 0.0))
    mtd, avoided_text = format_usd(spend), format_usd(avoided)
    if monthly_usd is None:
        return BudgetDecision(
            False, "True", REASON_NO_BUDGET, f"no monthly budget set; spent ${mtd} this month",
            mtd, avoided_text,
        )
    if spend >= monthly_usd:
        return BudgetDecision(
            True, "False", REASON_EXHAUSTED,
            f"spent ${mtd} of the ${format_usd(monthly_usd)} monthly budget; "
            f"the router applies whenExhausted={when_exhausted} until the month ends or the budget is raised",
            mtd, avoided_text,
        )
    return BudgetDecision(
        False, "True", REASON_WITHIN_BUDGET,
        f"spent ${mtd} of the ${format_usd(monthly_usd)} monthly budget", mtd, avoided_text,
    )


def budget_exhausted(status: Mapping[str, Any] | None) -> bool:
    """True when the policy's router must apply ``whenExhausted``: its BudgetOK condition is ``False``.

    This is what the router-config builder reads to set ``budget.exhausted``; Unknown or a missing condition
    count as not exhausted (a new policy is not blocked before its first measurement).
    """
    conditions: Sequence[Mapping[str, Any]] = (status or {}).get("conditions") or []
    return any(c.get("type") == CONDITION_BUDGET_OK and c.get("status") == "False" for c in conditions)


def local_share(local_served: float | None, all_served: float | None) -> str | None:
    """`status.localShare`: the fraction of the month's answered requests that local tiers served, as a decimal
    string with two places ("0.73"); None (leave the field as it is) when no request was answered yet."""
    if all_served is None or all_served <= 0:
        return None
    share = min(1.0, max(0.0, (local_served or 0.0) / all_served))
    return f"{share:.2f}"
