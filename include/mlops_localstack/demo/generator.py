"""Deterministic demo data for the churn pipeline, with a known churn probability.

Churn for customer ``c`` on day ``ds`` is drawn from ``p = sigmoid(logit)``, where ``logit`` is a
fixed function of the customer's attributes and of their events strictly before ``ds`` (activity
in the last 14 days, support tickets and purchase amounts in the last 30 days, tenure, plan,
autopay). Because the pipeline can observe all of these, ``p`` is the Bayes-optimal score and the
AUC of ``p`` against the drawn labels is the best AUC any model can reach. ``p`` is kept in a
separate truth table that the pipeline never reads.

Customers are a daily snapshot (``ds``: the state at the end of that day). Plans change now and
then, and a customer who churns on a day often cancels autopay the same day: a job that read
attributes from on or after the label's day would see that change. The probability for day ``d``
uses the state at the end of ``d - 1``, the newest snapshot before the cutoff.

``drift`` (0..1) blends the coefficients towards a different relationship from ``drift_start`` on,
so a model trained before the drift is worse afterwards.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_jobs.churn.tables import CHANNELS, EVENT_TYPES, PLANS, REGIONS

ACTIVITY_DAYS = 14
SUPPORT_DAYS = 30
SPEND_DAYS = 30
PLAN_MIX = (0.45, 0.35, 0.20)
BASE_FEES = (9.99, 19.99, 39.99)  # per plan, in PLANS order
PLAN_SWITCH_RATE = 0.003  # per customer and day: a new plan drawn from PLAN_MIX
AUTOPAY_CANCEL_ON_CHURN = 0.15  # share of churners who cancel autopay on their churn day
AUTOPAY_ENROLL_RATE = 0.015  # per customer without autopay and day

BASE_COEFFICIENTS = {
    "intercept": 0.6,
    "activity": -0.9,  # per log1p(events in the last 14 days)
    "support": 0.55,  # per support ticket in the last 30 days
    "spend": -0.35,  # per log1p(purchase amount in the last 30 days / 10)
    "tenure": -0.45,  # per year of tenure, capped at 5
    "autopay": -0.7,
    "plan_basic": 0.6,
    "plan_premium": -0.5,
}
DRIFTED_COEFFICIENTS = {
    **BASE_COEFFICIENTS,
    "activity": -0.2,
    "support": -0.3,
    "spend": 0.25,
    "plan_basic": -0.4,
    "plan_premium": 0.6,
}


@dataclass(frozen=True)
class DemoSpec:
    """Size and shape of the demo data."""

    customers: int = 2000
    days: int = 120
    end_ds: str = "2026-03-01"
    seed: int = 7
    drift: float = 0.0
    drift_start_ds: str | None = None

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError(f"customers must be at least 1, got {self.customers}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must be between 0 and 1, got {self.drift}")
        dt.date.fromisoformat(self.end_ds)
        if self.drift_start_ds is not None:
            dt.date.fromisoformat(self.drift_start_ds)

    @property
    def dates(self) -> list[dt.date]:
        """Every partition date, oldest first, ending at ``end_ds``."""
        end = dt.date.fromisoformat(self.end_ds)
        return [end - dt.timedelta(days=self.days - 1 - i) for i in range(self.days)]


@dataclass(frozen=True)
class DemoData:
    customers: pd.DataFrame  # one row per customer and ds from their signup day on
    events: pd.DataFrame
    labels: pd.DataFrame
    truth: pd.DataFrame


def coefficients(spec: DemoSpec, day: dt.date) -> dict[str, float]:
    """The coefficients in force on ``day`` (drift applies from ``drift_start_ds`` on)."""
    start = dt.date.fromisoformat(spec.drift_start_ds) if spec.drift_start_ds else None
    weight = spec.drift if start is None or day >= start else 0.0
    return {
        key: (1 - weight) * BASE_COEFFICIENTS[key] + weight * DRIFTED_COEFFICIENTS[key]
        for key in BASE_COEFFICIENTS
    }


def churn_probability(
    c: dict[str, float],
    activity: np.ndarray,
    tickets: np.ndarray,
    spent: np.ndarray,
    tenure_years: np.ndarray,
    autopay: np.ndarray,
    plan: np.ndarray,
) -> np.ndarray:
    """The true churn probability from the observable inputs.

    :param activity: events in the ``ACTIVITY_DAYS`` days before the label date
    :param tickets: support tickets in the ``SUPPORT_DAYS`` days before it
    :param spent: purchase amount in the ``SPEND_DAYS`` days before it
    :param tenure_years: years since signup, capped at 5
    """
    logit = (
        c["intercept"]
        + c["activity"] * np.log1p(activity)
        + c["support"] * tickets
        + c["spend"] * np.log1p(spent / 10.0)
        + c["tenure"] * tenure_years
        + c["autopay"] * autopay
        + c["plan_basic"] * (plan == "basic")
        + c["plan_premium"] * (plan == "premium")
    )
    return 1.0 / (1.0 + np.exp(-logit))


def generate(spec: DemoSpec) -> DemoData:
    """Generate all demo tables for ``spec`` (same spec, same bytes)."""
    rng = np.random.default_rng(spec.seed)
    dates = spec.dates
    n, days = spec.customers, len(dates)
    first_day = dates[0]

    customer_id = np.arange(1, n + 1, dtype=np.int64) * 7919 % 1_000_003
    signup_offset = rng.integers(-4 * 365, days - 1, size=n)  # days relative to the first day
    signup = np.array([first_day + dt.timedelta(days=int(o)) for o in signup_offset])
    plan_index = rng.choice(len(PLANS), size=n, p=PLAN_MIX)
    region = rng.choice(REGIONS, size=n)
    age = rng.integers(18, 80, size=n).astype(np.int32)
    fee_offset = rng.normal(0, 1.5, size=n).round(2)
    autopay = rng.random(n) < 0.55

    # Daily event counts per customer; engagement varies a lot between customers.
    engagement = rng.gamma(shape=1.2, scale=1.0, size=n)
    active = signup_offset[:, None] <= np.arange(days)[None, :]
    weekday = np.array([1.15 if d.weekday() < 5 else 0.7 for d in dates])
    counts = rng.poisson(engagement[:, None] * weekday[None, :]) * active
    type_weights = np.stack(
        [
            np.full(n, 0.55),
            np.full(n, 0.25),
            0.08 + 0.12 * autopay,  # as at the start: a lasting habit
            0.02 + 0.10 * rng.beta(1.0, 4.0, size=n),
        ],
        axis=1,
    )
    type_weights /= type_weights.sum(axis=1, keepdims=True)

    rows_customer = np.repeat(np.repeat(np.arange(n), days), counts.ravel())
    rows_day = np.repeat(np.tile(np.arange(days), n), counts.ravel())
    total = len(rows_customer)
    cumulative = type_weights.cumsum(axis=1)[rows_customer]
    type_index = (rng.random(total)[:, None] > cumulative).sum(axis=1).clip(0, 3)
    channel_index = rng.choice(len(CHANNELS), size=total, p=[0.5, 0.4, 0.1])
    seconds = rng.integers(0, 86_400, size=total)
    amount = np.where(
        type_index == EVENT_TYPES.index("purchase"),
        rng.lognormal(mean=3.0, sigma=0.8, size=total).round(2),
        np.nan,
    )
    day_start = np.array([np.datetime64(d, "s") for d in dates])
    event_time = day_start[rows_day] + seconds.astype("timedelta64[s]")
    order = np.lexsort((seconds, rows_customer, rows_day))
    events = pd.DataFrame(
        {
            "event_id": np.arange(1, total + 1, dtype=np.int64),
            "customer_id": customer_id[rows_customer[order]],
            "event_time": event_time[order].astype("datetime64[us]"),
            "event_type": np.asarray(EVENT_TYPES)[type_index[order]],
            "channel": np.asarray(CHANNELS)[channel_index[order]],
            "amount": amount[order],
            "ds": np.asarray([d.isoformat() for d in dates])[rows_day[order]],
        }
    )

    # Per customer and day: totals used by the probability function (events of that day).
    support = np.zeros((n, days))
    spend = np.zeros((n, days))
    np.add.at(support, (rows_customer, rows_day), type_index == EVENT_TYPES.index("support_ticket"))
    np.add.at(spend, (rows_customer, rows_day), np.nan_to_num(amount))

    def window_before(matrix: np.ndarray, width: int) -> np.ndarray:
        """Sum over the ``width`` days strictly before each day."""
        padded = np.concatenate([np.zeros((n, 1)), matrix.cumsum(axis=1)], axis=1)
        idx = np.arange(days)
        return padded[:, idx] - padded[:, np.maximum(idx - width, 0)]

    activity = window_before(counts.astype(float), ACTIVITY_DAYS)
    tickets = window_before(support, SUPPORT_DAYS)
    spent = window_before(spend, SPEND_DAYS)
    tenure_years = np.clip((np.arange(days)[None, :] - signup_offset[:, None]) / 365.25, 0, 5)

    plans = np.asarray(PLANS)
    fees = np.asarray(BASE_FEES)
    label_frames, truth_frames, customer_frames = [], [], []
    for j, day in enumerate(dates):
        # plan_index and autopay hold the state at the end of the day before: what the
        # pipeline may see for a label of this day.
        c = coefficients(spec, day)
        plan = plans[plan_index]
        probability = churn_probability(
            c, activity[:, j], tickets[:, j], spent[:, j], tenure_years[:, j], autopay, plan
        )
        churned = (rng.random(n) < probability).astype(np.int32)
        eligible = signup_offset < j  # signed up strictly before the label date
        ds = day.isoformat()
        label_frames.append(
            pd.DataFrame(
                {"customer_id": customer_id[eligible], "churned": churned[eligible], "ds": ds}
            )
        )
        truth_frames.append(
            pd.DataFrame(
                {
                    "customer_id": customer_id[eligible],
                    "ds": ds,
                    "probability": probability[eligible],
                    "churned": churned[eligible],
                }
            )
        )
        # What changes during the day, seen first in this day's snapshot.
        switch = rng.random(n) < PLAN_SWITCH_RATE
        plan_index = np.where(switch, rng.choice(len(PLANS), size=n, p=PLAN_MIX), plan_index)
        cancel = eligible & (churned == 1) & (rng.random(n) < AUTOPAY_CANCEL_ON_CHURN)
        enroll = rng.random(n) < AUTOPAY_ENROLL_RATE
        autopay = np.where(cancel, False, autopay | enroll)
        signed_up = signup_offset <= j
        customer_frames.append(
            pd.DataFrame(
                {
                    "customer_id": customer_id[signed_up],
                    "signup_date": signup[signed_up],
                    "plan": plans[plan_index][signed_up],
                    "region": region[signed_up],
                    "age": age[signed_up],
                    "monthly_fee": (fees[plan_index] + fee_offset)[signed_up].round(2),
                    "is_autopay": autopay[signed_up],
                    "ds": ds,
                }
            )
        )
    customers = pd.concat(customer_frames, ignore_index=True)
    labels = pd.concat(label_frames, ignore_index=True)
    truth = pd.concat(truth_frames, ignore_index=True)
    return DemoData(customers=customers, events=events, labels=labels, truth=truth)


def bayes_auc(truth: pd.DataFrame) -> float:
    """AUC of the true probability against the drawn labels (Mann-Whitney, ties averaged)."""
    positives = truth["churned"].to_numpy() == 1
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    ranks = pd.Series(truth["probability"].to_numpy()).rank(method="average").to_numpy()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
