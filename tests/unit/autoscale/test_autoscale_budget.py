"""Budget math: month boundaries, the exhausted decision and its flip back, the contract read by the builder."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest

from tiered_operator.autoscale import budget

UTC = datetime.UTC


def test_month_start_is_midnight_utc_on_the_first() -> None:
    now = datetime.datetime(2026, 11, 28, 13, 45, 10, tzinfo=UTC)
    assert budget.month_start(now) == datetime.datetime(2026, 11, 1, tzinfo=UTC)
    assert budget.seconds_into_month(now) == 27 * 86400 + 13 * 3600 + 45 * 60 + 10


def test_month_start_converts_other_timezones_to_utc() -> None:
    tokyo = datetime.timezone(datetime.timedelta(hours=9))
    now = datetime.datetime(2026, 12, 1, 5, 0, tzinfo=tokyo)  # still 30 November in UTC
    assert budget.month_start(now) == datetime.datetime(2026, 11, 1, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        budget.month_start(datetime.datetime(2026, 11, 28))


@pytest.mark.parametrize(
    ("value", "text"), [(0, "0.00"), (12.5, "12.50"), (0.1234567, "0.123457"), (3, "3.00"), (-1e-9, "0.00")]
)
def test_money_strings(value: float, text: str) -> None:
    assert budget.format_usd(value) == text


def decide(spend: float | None, monthly: str | None = "10", **kw: object) -> budget.BudgetDecision:
    args: dict[str, object] = {
        "monthly_usd": Decimal(monthly) if monthly is not None else None,
        "when_exhausted": "localOnly",
        "spend_usd": spend,
        "avoided_usd": 4.0,
        "metrics_ok": True,
        "previously_exhausted": False,
    }
    args.update(kw)
    return budget.decide_budget(**args)  # type: ignore[arg-type]


def test_spend_below_budget_is_ok() -> None:
    d = decide(9.99)
    assert (d.exhausted, d.status, d.reason) == (False, "True", "WithinBudget")
    assert (d.month_to_date_usd, d.avoided_usd) == ("9.99", "4.00")


def test_spend_reaching_budget_exhausts_it() -> None:
    d = decide(10.0)
    assert (d.exhausted, d.status, d.reason) == (True, "False", "BudgetExhausted")
    assert "whenExhausted=localOnly" in d.message


def test_next_month_flips_back() -> None:
    # In a new month the range of the spend query starts at the 1st, so spend reads near zero.
    d = decide(0.0, previously_exhausted=True)
    assert not d.exhausted and d.status == "True"


def test_raised_budget_flips_back() -> None:
    assert decide(12.0, monthly="10", previously_exhausted=True).exhausted
    assert not decide(12.0, monthly="20", previously_exhausted=True).exhausted


def test_no_cost_series_yet_means_nothing_spent() -> None:
    d = decide(None)
    assert not d.exhausted and d.month_to_date_usd == "0.00"


def test_no_budget_reports_spend_and_is_ok() -> None:
    d = decide(123.0, monthly=None)
    assert (d.exhausted, d.reason, d.month_to_date_usd) == (False, "NoBudget", "123.00")


def test_no_budget_is_ok_even_without_prometheus() -> None:
    d = decide(None, monthly=None, metrics_ok=False, previously_exhausted=True)  # a budget just removed
    assert (d.exhausted, d.status, d.reason) == (False, "True", "NoBudget")


def test_prometheus_down_keeps_an_exhausted_budget_exhausted() -> None:
    d = decide(None, metrics_ok=False, previously_exhausted=True)
    assert (d.exhausted, d.status, d.reason) == (True, "False", "BudgetExhausted")
    assert d.month_to_date_usd is None


def test_prometheus_down_makes_an_unexhausted_budget_unknown() -> None:
    d = decide(None, metrics_ok=False, previously_exhausted=False)
    assert (d.exhausted, d.status, d.reason) == (False, "Unknown", "MetricsUnavailable")


def test_budget_exhausted_reads_the_budget_ok_condition() -> None:
    assert budget.budget_exhausted({"conditions": [{"type": "BudgetOK", "status": "False"}]})
    assert not budget.budget_exhausted({"conditions": [{"type": "BudgetOK", "status": "Unknown"}]})
    assert not budget.budget_exhausted({"conditions": [{"type": "Ready", "status": "False"}]})
    assert not budget.budget_exhausted(None)
    assert not budget.budget_exhausted({})
