"""The churn pipeline's source contract: which Hive tables it reads, their columns and types,
and which partitions one run (``ds``) needs.

The demo generator creates its tables from this contract and the extraction stage checks the live
tables against it, so the two cannot drift apart silently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from mlops_jobs.hql import (
    TableName,
    quote_identifier,
    string_literal,
    validate_ds,
    validate_identifier,
)

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

    def create_statement(self) -> str:
        """``CREATE TABLE IF NOT EXISTS`` for the contract (Parquet, partitioned when it is)."""
        columns = ", ".join(f"{quote_identifier(n)} {t.upper()}" for n, t in self.columns)
        partition = (
            f" PARTITIONED BY ({quote_identifier(self.partition_column)} STRING)"
            if self.partitioned
            else ""
        )
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table.quoted} ({columns}){partition} "
            "STORED AS PARQUET"
        )

    def load_statements(
        self, staging: TableName, location: str, partition_value: str | None = None
    ) -> list[str]:
        """Statements that replace the table's rows with the Parquet files at ``location``,
        exposed as the external table ``staging`` and dropped again.

        With ``partition_value`` the files hold the columns without the partition column and
        replace exactly that partition; without it a partitioned table's files carry the
        partition column and replace every partition they contain.
        """
        if "'" in location or "\\" in location:
            raise ValueError(f"location {location!r} cannot be quoted in HiveQL")
        columns = list(self.columns)
        if self.partitioned and partition_value is None:
            columns.append((self.partition_column, "string"))
        staging_columns = ", ".join(f"{quote_identifier(n)} {t.upper()}" for n, t in columns)
        select = ", ".join(quote_identifier(n) for n, _ in columns)
        partition = ""
        if self.partitioned:
            column = quote_identifier(self.partition_column)
            partition = (
                f" PARTITION ({column} = {string_literal(partition_value)})"
                if partition_value is not None
                else f" PARTITION ({column})"
            )
        return [
            f"DROP TABLE IF EXISTS {staging.quoted}",
            f"CREATE EXTERNAL TABLE {staging.quoted} ({staging_columns}) STORED AS PARQUET "
            f"LOCATION '{location}'",
            f"INSERT OVERWRITE TABLE {self.table.quoted}{partition} "
            f"SELECT {select} FROM {staging.quoted}",
            f"DROP TABLE IF EXISTS {staging.quoted}",
        ]

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
#: What batch scoring reads: customers and their events, no labels (they do not exist yet).
CHURN_SCORING_SOURCES: tuple[TableContract, ...] = (CUSTOMERS, EVENTS)

#: Where batch scoring writes: one partition per scored ``ds``.
CHURN_PREDICTIONS = TableContract(
    alias="churn_predictions",
    table=TableName("ml", "churn_predictions"),
    columns=(
        ("customer_id", "bigint"),
        ("churn_probability", "double"),
        ("churn_predicted", "boolean"),
        ("model_version", "string"),
        ("scored_at", "timestamp"),
    ),
    window=PartitionWindow.CURRENT,
)

EVENT_TYPES = ("page_view", "login", "purchase", "support_ticket")
CHANNELS = ("web", "mobile", "store")
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
