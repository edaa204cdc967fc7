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
    spans days reads the windows of its first and its last day, see ``required_partitions``)."""

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
        """First and last ``ds`` this run reads, or None for an unpartitioned table (a run that
        spans days may skip days in between, see ``required_partitions``).

        :param lookback_days: days of history before a day, for ``LOOKBACK`` tables
        :param span_days: the run covers the days ``ds - span_days`` and ``ds`` (for example
            a day to train on and a later day to test on)
        """
        windows = self.windows(ds, lookback_days, span_days)
        if not windows:
            return None
        return windows[0][0].isoformat(), windows[-1][1].isoformat()

    def windows(
        self, ds: str, lookback_days: int, span_days: int = 0
    ) -> list[tuple[dt.date, dt.date]]:
        """The window (first and last day, inclusive) of each day the run covers, first day
        first; none for an unpartitioned table. Parameters as for ``partition_range``."""
        day = dt.date.fromisoformat(validate_ds(ds, "run ds"))
        if span_days < 0:
            raise ValueError(f"span_days must not be negative, got {span_days}")
        if self.window is PartitionWindow.LOOKBACK and lookback_days < 1:
            raise ValueError(f"lookback_days must be at least 1, got {lookback_days}")
        if self.window is PartitionWindow.NONE:
            return []
        days = sorted({day - dt.timedelta(days=span_days), day})
        one = dt.timedelta(days=1)
        if self.window is PartitionWindow.CURRENT:
            return [(d, d) for d in days]
        if self.window is PartitionWindow.AS_OF:
            return [(d - one, d - one) for d in days]
        return [(d - dt.timedelta(days=lookback_days), d - one) for d in days]

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
        """Every ``ds`` value this run needs, oldest first: the days of its windows
        (``windows``), and no day between them that none of them reads."""
        days: set[str] = set()
        for first, last in self.windows(ds, lookback_days, span_days):
            days.update(
                (first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)
            )
        return sorted(days)
