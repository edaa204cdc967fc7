"""Source and target table contracts: a Hive table's expected columns and types, and which of
its ``ds`` partitions one run reads.

Generic operators and sensors (extraction, partition sensing, partition loads) work on these
contracts; each pipeline declares its own tables (for example ``mlops_jobs.churn.tables``).
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
    """Which partitions of a ``ds``-partitioned table one run reads (for one day; a run that
    spans several days reads each window from its first day on, see ``partition_range``)."""

    NONE = "none"  # not partitioned: the whole table
    CURRENT = "current"  # ds = run ds
    LOOKBACK = "lookback"  # run ds - lookback <= ds < run ds (strictly before the cutoff)
    # ds = run ds - 1: a daily snapshot of a dimension, taken at the end of its day, so the
    # newest one before the run's cutoff holds the state as of that cutoff.
    AS_OF = "as_of"


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

    def partition_range(
        self, ds: str, lookback_days: int, span_days: int = 0
    ) -> tuple[str, str] | None:
        """First and last ``ds`` this run reads, or None for an unpartitioned table.

        :param lookback_days: days of history before a day, for ``LOOKBACK`` tables
        :param span_days: the run covers every day from ``ds - span_days`` to ``ds`` (for
            example a training day and a later day to test on); each window starts that
            much earlier
        """
        day = dt.date.fromisoformat(validate_ds(ds, "run ds"))
        if self.window is PartitionWindow.NONE:
            return None
        if span_days < 0:
            raise ValueError(f"span_days must not be negative, got {span_days}")
        first_day = day - dt.timedelta(days=span_days)
        if self.window is PartitionWindow.CURRENT:
            return first_day.isoformat(), ds
        before = (day - dt.timedelta(days=1)).isoformat()
        if self.window is PartitionWindow.AS_OF:
            return (first_day - dt.timedelta(days=1)).isoformat(), before
        if lookback_days < 1:
            raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
        return (first_day - dt.timedelta(days=lookback_days)).isoformat(), before

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

    def required_partitions(self, ds: str, lookback_days: int, span_days: int = 0) -> list[str]:
        """Every ``ds`` value this run needs, oldest first."""
        bounds = self.partition_range(ds, lookback_days, span_days)
        if bounds is None:
            return []
        first, last = (dt.date.fromisoformat(b) for b in bounds)
        return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
