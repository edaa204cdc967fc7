from __future__ import annotations

import pytest

from mlops_jobs.churn.tables import CHURN_LABELS, CUSTOMERS, EVENTS


def test_lookback_window_ends_strictly_before_the_run_ds() -> None:
    assert EVENTS.partition_range("2026-03-01", 3) == ("2026-02-26", "2026-02-28")
    assert EVENTS.required_partitions("2026-03-01", 3) == [
        "2026-02-26",
        "2026-02-27",
        "2026-02-28",
    ]


def test_labels_read_the_run_ds_and_customers_the_snapshot_as_of_its_cutoff() -> None:
    assert CHURN_LABELS.required_partitions("2026-03-01", 90) == ["2026-03-01"]
    assert CUSTOMERS.required_partitions("2026-03-01", 90) == ["2026-02-28"]


def test_a_span_reads_the_windows_of_its_first_and_last_day_only() -> None:
    """A run spanning a training day (ds - 7) and ds reads the labels of both and everything
    either day's features need (its events lookback and its attributes snapshot), and none of
    the label or attribute partitions of the days in between."""
    assert CHURN_LABELS.partition_range("2026-03-01", 90, 7) == ("2026-02-22", "2026-03-01")
    assert CHURN_LABELS.required_partitions("2026-03-01", 90, 7) == ["2026-02-22", "2026-03-01"]
    assert CUSTOMERS.partition_range("2026-03-01", 90, 7) == ("2026-02-21", "2026-02-28")
    assert CUSTOMERS.required_partitions("2026-03-01", 90, 7) == ["2026-02-21", "2026-02-28"]
    assert EVENTS.partition_range("2026-03-01", 3, 7) == ("2026-02-19", "2026-02-28")
    assert EVENTS.required_partitions("2026-03-01", 3, 7) == [
        "2026-02-19",
        "2026-02-20",
        "2026-02-21",
        "2026-02-26",
        "2026-02-27",
        "2026-02-28",
    ]
    # overlapping lookbacks read every day once
    assert len(EVENTS.required_partitions("2026-03-01", 90, 7)) == 97
    with pytest.raises(ValueError, match="span_days must not be negative"):
        EVENTS.partition_range("2026-03-01", 3, -1)


def test_invalid_window_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="lookback_days"):
        EVENTS.partition_range("2026-03-01", 0)
    with pytest.raises(ValueError, match="run ds"):
        EVENTS.partition_range("2026-02-30", 3)
