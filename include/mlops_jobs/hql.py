"""Safe HiveQL building blocks: validated identifiers, partition values and the few statements
whose syntax differs between Apache Hive 4 and Spark's Thrift server.

Every table, column and partition value that reaches a statement passes through here first, so a
hostile name such as ``events; DROP TABLE x`` is rejected before anything is sent.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_DS = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class InvalidIdentifierError(ValueError):
    """A table, column or partition name is not a plain Hive identifier."""


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, underscore), else raise."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: only letters, digits and underscores are allowed, "
            "starting with a letter or underscore"
        )
    return name


def quote_identifier(name: str, what: str = "identifier") -> str:
    """Validate and back-quote one identifier."""
    return f"`{validate_identifier(name, what)}`"


@dataclass(frozen=True, order=True)
class TableName:
    """A validated ``database.table`` name."""

    database: str
    table: str

    def __post_init__(self) -> None:
        validate_identifier(self.database, "database name")
        validate_identifier(self.table, "table name")

    @classmethod
    def parse(cls, qualified: str) -> TableName:
        """Parse ``db.table``; anything else (quotes, spaces, semicolons) is rejected."""
        parts = qualified.split(".") if isinstance(qualified, str) else []
        if len(parts) != 2:
            raise InvalidIdentifierError(
                f"invalid table name {qualified!r}: expected 'database.table'"
            )
        try:
            return cls(parts[0], parts[1])
        except InvalidIdentifierError as err:
            raise InvalidIdentifierError(f"invalid table name {qualified!r}: {err}") from None

    @property
    def quoted(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    def __str__(self) -> str:
        return f"{self.database}.{self.table}"


def validate_ds(value: str, what: str = "partition value ds") -> str:
    """Return ``value`` if it is a real ``YYYY-MM-DD`` date, else raise."""
    if not isinstance(value, str) or not _DS.match(value):
        raise InvalidIdentifierError(f"invalid {what} {value!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidIdentifierError(f"invalid {what} {value!r}: not a calendar date") from None
    return value


def string_literal(value: str) -> str:
    """A single-quoted literal for a validated partition value."""
    return "'" + validate_ds(value) + "'"


def partition_spec(column: str, value: str) -> str:
    """``ds='2026-03-01'`` as Hive prints it in SHOW PARTITIONS."""
    return f"{validate_identifier(column, 'partition column')}={validate_ds(value)}"


def show_partitions(table: TableName) -> str:
    return f"SHOW PARTITIONS {table.quoted}"


def describe(table: TableName) -> str:
    return f"DESCRIBE {table.quoted}"


def select_columns(
    table: TableName,
    columns: Iterable[str],
    partition_column: str | None = None,
    first: str | None = None,
    last: str | None = None,
    values: Iterable[str] | None = None,
) -> str:
    """``SELECT cols FROM table [WHERE first <= part <= last [AND part IN (values)]]``: with
    ``values``, only those partitions of the range (the range still bounds the scan for
    servers that prune partitions by range only)."""
    cols = ", ".join(quote_identifier(c, "column name") for c in columns)
    where = _partition_range(partition_column, first, last, values)
    return f"SELECT {cols} FROM {table.quoted}{where}"


def count_by_partition(
    table: TableName,
    partition_column: str,
    first: str,
    last: str,
    values: Iterable[str] | None = None,
) -> str:
    """``SELECT part, COUNT(*)`` per partition of the range (and of ``values``, if given)."""
    col = quote_identifier(partition_column, "partition column")
    where = _partition_range(partition_column, first, last, values)
    return f"SELECT {col}, COUNT(*) FROM {table.quoted}{where} GROUP BY {col}"


def count_rows(
    table: TableName,
    partition_column: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> str:
    return f"SELECT COUNT(*) FROM {table.quoted}{_partition_range(partition_column, first, last)}"


def export_parquet(directory_uri: str, query: str) -> str:
    """Server-side export of ``query`` into ``directory_uri`` as Parquet (Hive and Spark syntax)."""
    if "'" in directory_uri or "\\" in directory_uri:
        raise InvalidIdentifierError(f"invalid export directory {directory_uri!r}")
    return f"INSERT OVERWRITE DIRECTORY '{directory_uri}' STORED AS PARQUET {query}"


def _partition_range(
    column: str | None,
    first: str | None,
    last: str | None,
    values: Iterable[str] | None = None,
) -> str:
    if column is None:
        if values is not None:
            raise ValueError("partition values need a partition range")
        return ""
    col = quote_identifier(column, "partition column")
    if first is None or last is None:
        raise ValueError("a partition range needs both ends")
    if first == last:
        where = f" WHERE {col} = {string_literal(first)}"
    else:
        where = f" WHERE {col} >= {string_literal(first)} AND {col} <= {string_literal(last)}"
    if values is not None:
        listed = sorted(set(values))
        if not listed:
            raise ValueError("an empty list of partition values selects nothing")
        where += f" AND {col} IN ({', '.join(string_literal(v) for v in listed)})"
    return where
