"""The churn pipeline's source contract: which Hive tables it reads, their columns and types,
and which partitions one run (``ds``) needs.

The demo generator creates its tables from this contract and the extraction stage checks the live
tables against it, so the two cannot drift apart silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from mlops_jobs.hql import TableName, validate_ds, validate_identifier

DEFAULT_LOOKBACK_DAYS = 90


class PartitionWindow(StrEnum):
    """Which partitions of a ``ds``-partitioned table one run reads."""

    NONE = "none"  # not partitioned: the whole table
    CURRENT = "current"  # ds = run ds
    LOOKBACK = "lookback"  # run ds - lookback <= ds < run ds (strictly before the cutoff)


@dataclass(frozen=True)
class TableContract:
    """Expected columns (name -> Hive type, partition column excluded) of one source table."""

    alias: str
    table: TableName
    columns: tuple[tuple[str, str], ...]
    window: PartitionWindow = PartitionWindow.NONE
    partition_column: str = "ds"

    def __post_init__(self) -> None:
        validate_identifier(self.alias, "table alias")
        validate_identifier(self.partition_column, "partition column")
        for name, _ in self.columns:
            validate_identifier(name, f"column of {self.table}")

    @property
    def partitioned(self) -> bool:
        return self.window is not PartitionWindow.NONE

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]

    def partition_range(self, ds: str, lookback_days: int) -> tuple[str, str] | None:
        """First and last ``ds`` this run reads, or None for an unpartitioned table."""
        day = dt.date.fromisoformat(validate_ds(ds, "run ds"))
        if self.window is PartitionWindow.NONE:
            return None
        if self.window is PartitionWindow.CURRENT:
            return ds, ds
        if lookback_days < 1:
            raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
        first = day - dt.timedelta(days=lookback_days)
        return first.isoformat(), (day - dt.timedelta(days=1)).isoformat()

    def required_partitions(self, ds: str, lookback_days: int) -> list[str]:
        """Every ``ds`` value this run needs, oldest first."""
        bounds = self.partition_range(ds, lookback_days)
        if bounds is None:
            return []
        first, last = (dt.date.fromisoformat(b) for b in bounds)
        return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


CUSTOMERS = TableContract(
    alias="customers",
    table=TableName("raw", "customers"),
    columns=(
        ("customer_id", "bigint"),
        ("signup_date", "date"),
        ("plan", "string"),
        ("region", "string"),
        ("age", "int"),
        ("monthly_fee", "double"),
        ("is_autopay", "boolean"),
    ),
)

EVENTS = TableContract(
    alias="events",
    table=TableName("raw", "events"),
    columns=(
        ("event_id", "bigint"),
        ("customer_id", "bigint"),
        ("event_time", "timestamp"),
        ("event_type", "string"),
        ("channel", "string"),
        ("amount", "double"),
    ),
    window=PartitionWindow.LOOKBACK,
)

CHURN_LABELS = TableContract(
    alias="churn_labels",
    table=TableName("raw", "churn_labels"),
    columns=(("customer_id", "bigint"), ("churned", "int")),
    window=PartitionWindow.CURRENT,
)

CHURN_SOURCES: tuple[TableContract, ...] = (CUSTOMERS, EVENTS, CHURN_LABELS)

EVENT_TYPES = ("page_view", "login", "purchase", "support_ticket")
CHANNELS = ("web", "mobile", "store")
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
