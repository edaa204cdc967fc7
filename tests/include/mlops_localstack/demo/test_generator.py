from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_localstack.demo.generator import (
    ACTIVITY_DAYS,
    SPEND_DAYS,
    SUPPORT_DAYS,
    DemoSpec,
    bayes_auc,
    churn_probability,
    coefficients,
    generate,
)

SMALL = DemoSpec(customers=120, days=30, end_ds="2026-03-01", seed=3)


def test_same_spec_gives_identical_data() -> None:
    first, second = generate(SMALL), generate(SMALL)
    for name in ("customers", "events", "labels", "truth"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))


def test_other_seed_gives_other_data() -> None:
    other = generate(dataclasses.replace(SMALL, seed=4))
    assert not other.events["customer_id"].equals(generate(SMALL).events["customer_id"])


def test_tables_have_the_expected_shape() -> None:
    data = generate(SMALL)
    assert not data.customers.duplicated(["customer_id", "ds"]).any()
    # every customer is in each daily snapshot from their signup day on
    first_ds = data.customers.groupby("customer_id")["ds"].min()
    signup = data.customers.groupby("customer_id")["signup_date"].first()
    first_day = SMALL.dates[0]
    expected_first = signup.map(lambda d: max(d, first_day).isoformat())
    assert (first_ds == expected_first).all()
    assert sorted(data.events["ds"].unique()) == [d.isoformat() for d in SMALL.dates]
    # event_time falls on its partition's day
    assert (data.events["event_time"].dt.strftime("%Y-%m-%d") == data.events["ds"]).all()
    purchases = data.events["event_type"] == "purchase"
    assert data.events.loc[purchases, "amount"].gt(0).all()
    assert data.events.loc[~purchases, "amount"].isna().all()
    assert set(data.labels["churned"].unique()) <= {0, 1}


def test_labels_only_for_customers_signed_up_before_the_label_date() -> None:
    data = generate(SMALL)
    joined = data.labels.merge(data.customers.drop(columns="ds").drop_duplicates("customer_id"))
    assert (pd.to_datetime(joined["signup_date"]) < pd.to_datetime(joined["ds"])).all()


def test_truth_is_kept_apart_and_matches_labels() -> None:
    data = generate(SMALL)
    assert "probability" not in data.labels.columns
    merged = data.labels.merge(data.truth, on=["customer_id", "ds"], suffixes=("", "_truth"))
    assert len(merged) == len(data.labels)
    assert (merged["churned"] == merged["churned_truth"]).all()
    assert merged["probability"].between(0, 1).all()


def test_probability_uses_only_events_before_the_label_date() -> None:
    """Recompute each label's probability from the event table with pandas (windows strictly
    before the label date) and compare with the generator's truth: the known probability
    function is point-in-time correct, so a model can in principle reach the Bayes AUC."""
    data = generate(SMALL)
    events = data.events.assign(day=pd.to_datetime(data.events["ds"]))
    for ds in ("2026-02-10", "2026-03-01"):
        cutoff = pd.Timestamp(ds)
        # attributes as of the cutoff: the snapshot of the day before
        before = (cutoff - pd.Timedelta(days=1)).date().isoformat()
        customers = data.customers[data.customers["ds"] == before].set_index("customer_id")

        def window(days: int, frame: pd.DataFrame = events, cutoff: pd.Timestamp = cutoff):
            start = cutoff - pd.Timedelta(days=days)
            return frame[(frame["day"] >= start) & (frame["day"] < cutoff)]

        truth = data.truth[data.truth["ds"] == ds].set_index("customer_id")
        ids = truth.index
        activity = window(ACTIVITY_DAYS).groupby("customer_id").size()
        support = window(SUPPORT_DAYS)
        tickets = support[support["event_type"] == "support_ticket"].groupby("customer_id").size()
        spent = window(SPEND_DAYS).groupby("customer_id")["amount"].sum()
        signup = pd.to_datetime(customers.loc[ids, "signup_date"])
        tenure = ((cutoff - signup).dt.days / 365.25).clip(0, 5)
        expected = churn_probability(
            coefficients(SMALL, dt.date.fromisoformat(ds)),
            activity.reindex(ids, fill_value=0).to_numpy(float),
            tickets.reindex(ids, fill_value=0).to_numpy(float),
            spent.reindex(ids, fill_value=0.0).to_numpy(float),
            tenure.to_numpy(float),
            customers.loc[ids, "is_autopay"].to_numpy(),
            customers.loc[ids, "plan"].to_numpy(),
        )
        np.testing.assert_allclose(truth["probability"].to_numpy(), expected, rtol=1e-9)


def test_attributes_change_and_churners_cancel_autopay_on_their_churn_day() -> None:
    """The daily snapshots are not constant, and the snapshot of the label's own day carries
    information about the label that the snapshot before the cutoff does not have: the leak a
    point-in-time join must avoid."""
    data = generate(dataclasses.replace(SMALL, customers=2000))
    customers = data.customers.set_index(["customer_id", "ds"])
    labels = data.labels[data.labels["ds"] > SMALL.dates[0].isoformat()]
    day_before = (pd.to_datetime(labels["ds"]) - pd.Timedelta(days=1)).dt.strftime("%Y-%m-%d")
    ids = labels["customer_id"]
    same_day = customers.loc[list(zip(ids, labels["ds"], strict=True)), "is_autopay"]
    as_of = customers.loc[list(zip(ids, day_before, strict=True)), "is_autopay"]
    churned = labels["churned"].to_numpy() == 1
    had_autopay = as_of.to_numpy()
    cancelled = had_autopay & ~same_day.to_numpy()
    # the churn day's snapshot reveals the label
    assert cancelled[churned & had_autopay].mean() > 0.1
    assert cancelled[~churned].mean() == 0.0
    plans = data.customers.groupby("customer_id")["plan"].nunique()
    assert (plans > 1).any()


def test_bayes_auc_on_a_known_example() -> None:
    truth = pd.DataFrame({"probability": [0.1, 0.4, 0.35, 0.8], "churned": [0, 0, 1, 1]})
    assert bayes_auc(truth) == pytest.approx(0.75)


def test_drift_changes_coefficients_only_from_its_start() -> None:
    spec = dataclasses.replace(SMALL, drift=1.0, drift_start_ds="2026-02-20")
    before = coefficients(spec, SMALL.dates[0])
    after = coefficients(spec, SMALL.dates[-1])
    assert before == coefficients(SMALL, SMALL.dates[0])
    assert after["support"] != before["support"]
    drifted = generate(spec).truth
    base = generate(SMALL).truth
    early = drifted["ds"] < "2026-02-20"
    np.testing.assert_allclose(drifted.loc[early, "probability"], base.loc[early, "probability"])
    assert not np.allclose(drifted.loc[~early, "probability"], base.loc[~early, "probability"])


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("customers", 0, "customers"), ("days", 0, "days"), ("drift", 1.5, "drift")],
)
def test_invalid_spec_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSpec(**{field: value})  # type: ignore[arg-type]
