from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_jobs.churn.features import (
    FeatureConfig,
    FeatureConfigError,
    build_churn_features,
)
from mlops_localstack.demo.generator import DemoSpec, generate

CONFIG = FeatureConfig.load()
DS = "2026-03-01"


def frames(spark: Any, customers: pd.DataFrame, events: pd.DataFrame, labels: pd.DataFrame):
    return (
        spark.createDataFrame(customers),
        spark.createDataFrame(events),
        spark.createDataFrame(labels),
    )


def customer(cid: int, signup: str = "2024-01-01", ds: str = "2026-02-28", **attributes: Any):
    """A row of the daily customer snapshot of ``ds`` (the state at the end of that day)."""
    return {
        "customer_id": cid,
        "signup_date": dt.date.fromisoformat(signup),
        "plan": "basic",
        "region": "north",
        "age": 40,
        "monthly_fee": 9.99,
        "is_autopay": True,
        "ds": ds,
        **attributes,
    }


def event(cid: int, when: str, kind: str = "login", channel: str = "web", amount=None):
    return {
        "customer_id": cid,
        "event_time": pd.Timestamp(when),
        "event_type": kind,
        "channel": channel,
        "amount": amount,
    }


def build(spark: Any, customers: list, events: list, labels: list) -> pd.DataFrame:
    events_frame = pd.DataFrame(events).astype({"amount": "float64"})
    result = build_churn_features(
        *frames(spark, pd.DataFrame(customers), events_frame, pd.DataFrame(labels)), CONFIG
    )
    return result.toPandas().set_index("customer_id")


def test_windows_counts_and_recency(spark: Any) -> None:
    events = [
        event(1, "2026-02-28 12:00"),  # 1 day before: in 7/30/90
        event(1, "2026-02-22 06:00", "purchase", "mobile", 20.0),  # 7 days before: in 7/30/90
        event(1, "2026-02-21 23:00", "purchase", "mobile", 5.0),  # 8 days before: 30/90 only
        event(1, "2025-12-01 10:00", "support_ticket"),  # 90 days before: 90 only
        event(1, "2025-11-30 10:00", "support_ticket"),  # 91 days: outside every window
    ]
    row = build(spark, [customer(1)], events, [{"customer_id": 1, "ds": DS, "churned": 1}]).loc[1]
    assert (row["events_7d"], row["events_30d"], row["events_90d"]) == (2, 3, 4)
    assert (row["purchase_7d"], row["purchase_30d"]) == (1, 2)
    assert (row["amount_7d"], row["amount_30d"]) == (20.0, 25.0)
    assert (row["support_ticket_30d"], row["support_ticket_90d"]) == (0, 1)
    assert (row["active_days_7d"], row["active_days_90d"]) == (2, 4)
    assert (row["channel_mobile_30d"], row["channel_web_30d"]) == (2, 1)
    assert row["recency_days"] == pytest.approx(0.5)
    assert row["trend_events_7d_30d"] == pytest.approx(2 / 7 - 3 / 30)
    assert row["tenure_days"] == (dt.date(2026, 3, 1) - dt.date(2024, 1, 1)).days
    assert row["label"] == 1 and row["plan"] == "basic" and row["is_autopay"] == 1


def test_customer_without_events_gets_zeros_and_longest_recency(spark: Any) -> None:
    row = build(
        spark,
        [customer(1), customer(2)],
        [event(1, "2026-02-27 08:00")],
        [{"customer_id": 2, "ds": DS, "churned": 0}],
    ).loc[2]
    assert row["events_90d"] == 0 and row["amount_90d"] == 0.0
    assert row["recency_days"] == CONFIG.max_window


def test_future_events_never_leak_into_features(spark: Any) -> None:
    """Plant events at and after the cutoff; every feature must stay as without them."""
    customers = [customer(1)]
    labels = [{"customer_id": 1, "ds": DS, "churned": 0}]
    past = [event(1, "2026-02-20 10:00", "purchase", "web", 10.0)]
    future = [
        event(1, "2026-03-01 00:00:00", "purchase", "store", 999.0),  # exactly at the cutoff
        event(1, "2026-03-01 13:00", "support_ticket", "store"),
        event(1, "2026-03-05 09:00", "login", "mobile"),
    ]
    clean = build(spark, customers, past, labels)
    leaked = build(spark, customers, past + future, labels)
    pd.testing.assert_frame_equal(clean, leaked)
    assert clean.loc[1, "events_90d"] == 1


def test_attributes_from_or_after_the_label_day_never_leak_into_features(spark: Any) -> None:
    """Plant customer snapshots of the label's day and later (the customer downgraded and
    cancelled autopay because they churned) and an older one; features must use the newest
    snapshot before the cutoff, as without the planted rows."""
    labels = [{"customer_id": 1, "ds": DS, "churned": 1}]
    events = [event(1, "2026-02-20 10:00")]
    as_of = customer(1, plan="premium", monthly_fee=39.99, is_autopay=True)
    planted = [
        customer(1, ds=DS, plan="basic", monthly_fee=9.99, is_autopay=False),
        customer(1, ds="2026-03-02", plan="basic", monthly_fee=9.99, is_autopay=False),
        customer(1, ds="2026-02-10", plan="standard", monthly_fee=19.99, is_autopay=False),
    ]
    clean = build(spark, [as_of], events, labels)
    leaked = build(spark, [as_of, *planted], events, labels)
    pd.testing.assert_frame_equal(clean, leaked)
    row = clean.loc[1]
    assert (row["plan"], row["monthly_fee"], row["is_autopay"]) == ("premium", 39.99, 1)


def test_labels_without_an_earlier_snapshot_of_their_customer_get_no_row(spark: Any) -> None:
    """A customer first seen in the label day's snapshot signed up that day: no label row."""
    labels = [
        {"customer_id": 1, "ds": DS, "churned": 0},
        {"customer_id": 2, "ds": DS, "churned": 0},
    ]
    result = build(spark, [customer(1), customer(2, ds=DS)], [event(1, "2026-02-20 10:00")], labels)
    assert list(result.index) == [1]


def test_snapshot_shorter_than_the_longest_window_is_refused(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_jobs.churn.features import SnapshotError, run
    from tests.support import write_demo_snapshot

    monkeypatch.setenv("MLOPS_LAKE_ROOT", str(tmp_path))
    snapshot = write_demo_snapshot(
        tmp_path, DemoSpec(customers=20, days=30, end_ds=DS, seed=1), lookback_days=14
    )
    out = tmp_path / "features"
    with pytest.raises(SnapshotError, match="holds 14 days of events but the longest feature"):
        run(snapshot, str(out))
    assert not out.exists()


def reference_features(
    customers: pd.DataFrame, events: pd.DataFrame, labels: pd.DataFrame, config: FeatureConfig
) -> pd.DataFrame:
    """An independent pandas implementation of the feature definitions."""
    rows = []
    by_customer = dict(tuple(events.groupby("customer_id")))
    snapshots = customers.sort_values("ds")
    for label in labels.itertuples(index=False):
        cutoff = pd.Timestamp(label.ds)
        history = by_customer.get(label.customer_id, events.iloc[0:0])
        history = history[
            (history["event_time"] < cutoff)
            & (history["event_time"] >= cutoff - pd.Timedelta(days=config.max_window))
        ]
        days_before = (cutoff - history["event_time"].dt.normalize()).dt.days
        row: dict[str, Any] = {"customer_id": label.customer_id, "ds": label.ds}
        row["recency_days"] = (
            (cutoff - history["event_time"].max()).total_seconds() / 86_400
            if len(history)
            else float(config.max_window)
        )
        for w in config.windows_days:
            window = history[days_before <= w]
            row[f"events_{w}d"] = len(window)
            row[f"active_days_{w}d"] = window["event_time"].dt.normalize().nunique()
            buys = window[window["event_type"] == config.amount_event_type]
            row[f"amount_{w}d"] = float(buys["amount"].sum())
            for t in config.event_types:
                row[f"{t}_{w}d"] = int((window["event_type"] == t).sum())
        channel_window = history[days_before <= config.channel_window_days]
        for c in config.channels:
            row[f"channel_{c}_{config.channel_window_days}d"] = int(
                (channel_window["channel"] == c).sum()
            )
        for a, b in config.trends:
            row[f"trend_events_{a}d_{b}d"] = row[f"events_{a}d"] / a - row[f"events_{b}d"] / b
        known = snapshots[
            (snapshots["customer_id"] == label.customer_id) & (snapshots["ds"] < label.ds)
        ]
        info = known.iloc[-1]  # as of the cutoff: the newest snapshot before the label's day
        row["tenure_days"] = (dt.date.fromisoformat(label.ds) - info["signup_date"]).days
        for c in config.numeric:
            row[c] = float(info[c])
        for c in config.boolean:
            row[c] = int(info[c])
        for c in config.categorical:
            row[c] = str(info[c])
        row["label"] = int(label.churned)
        digest = int(hashlib.sha256(str(label.customer_id).encode()).hexdigest()[:8], 16)
        position = digest / 16**8
        train_end = config.split["train"]
        row["split"] = (
            "train"
            if position < train_end
            else "valid"
            if position < train_end + config.split["valid"]
            else "test"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def test_spark_features_equal_an_independent_pandas_reference(spark: Any) -> None:
    data = generate(DemoSpec(customers=60, days=100, end_ds=DS, seed=5))
    labels = data.labels[data.labels["ds"].isin([DS, "2026-02-15"])].drop(columns=[])
    events = data.events.drop(columns=["event_id", "ds"])
    spark_result = (
        build_churn_features(*frames(spark, data.customers, events, labels), CONFIG)
        .toPandas()
        .sort_values(["customer_id", "ds"])
        .reset_index(drop=True)
    )
    expected = (
        reference_features(data.customers, events, labels, CONFIG)
        .sort_values(["customer_id", "ds"])
        .reset_index(drop=True)
    )
    assert list(spark_result.columns) == list(expected.columns)
    assert len(spark_result) == len(labels) > 60
    for name in expected.columns:
        if expected[name].dtype == object:
            assert spark_result[name].tolist() == expected[name].tolist(), name
        else:
            np.testing.assert_allclose(
                spark_result[name].to_numpy(float),
                expected[name].to_numpy(float),
                rtol=1e-9,
                atol=1e-9,
                err_msg=name,
            )
    assert set(spark_result["split"]) == {"train", "valid", "test"}


def test_invalid_config_names_the_key() -> None:
    raw = {
        "windows_days": [7, 30],
        "event_types": ["login"],
        "channels": ["web"],
        "channel_window_days": 14,
        "attributes": {},
        "amount_event_type": "login",
    }
    with pytest.raises(FeatureConfigError, match="channel_window_days 14"):
        FeatureConfig.from_dict(raw)
    with pytest.raises(FeatureConfigError, match="missing the key 'channels'"):
        FeatureConfig.from_dict({k: v for k, v in raw.items() if k != "channels"})
    with pytest.raises(FeatureConfigError, match=r"trend \(30, 7\)"):
        FeatureConfig.from_dict({**raw, "channel_window_days": 7, "trends": [[30, 7]]})
