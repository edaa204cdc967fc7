from __future__ import annotations

import pytest

from mlops_jobs import hql
from mlops_jobs.hql import InvalidIdentifierError, TableName


@pytest.mark.parametrize(
    "name",
    [
        "raw.events; DROP TABLE x",
        "raw.`events`",
        "raw.events--",
        "raw.ev ents",
        "events",
        "raw.events.extra",
        "raw.1events",
        "",
    ],
)
def test_hostile_or_malformed_table_names_are_rejected(name: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="invalid table name"):
        TableName.parse(name)


def test_table_name_is_quoted() -> None:
    assert TableName.parse("raw.events").quoted == "`raw`.`events`"


@pytest.mark.parametrize("value", ["2026-02-30", "2026-3-01", "2026-03-01' OR '1'='1", "today"])
def test_invalid_partition_values_are_rejected(value: str) -> None:
    with pytest.raises(InvalidIdentifierError, match="ds"):
        hql.validate_ds(value)


def test_select_with_partition_range() -> None:
    sql = hql.select_columns(
        TableName("raw", "events"), ["customer_id", "ds"], "ds", "2026-01-01", "2026-01-31"
    )
    assert sql == (
        "SELECT `customer_id`, `ds` FROM `raw`.`events` "
        "WHERE `ds` >= '2026-01-01' AND `ds` <= '2026-01-31'"
    )


def test_select_only_some_partitions_of_a_range() -> None:
    sql = hql.select_columns(
        TableName("raw", "churn_labels"),
        ["customer_id"],
        "ds",
        "2026-02-22",
        "2026-03-01",
        values=["2026-03-01", "2026-02-22"],
    )
    assert sql.endswith(
        "WHERE `ds` >= '2026-02-22' AND `ds` <= '2026-03-01' "
        "AND `ds` IN ('2026-02-22', '2026-03-01')"
    )
    with pytest.raises(ValueError, match="partition range"):
        hql.select_columns(TableName("raw", "events"), ["id"], values=["2026-03-01"])
    with pytest.raises(ValueError, match="empty list of partition values"):
        hql.select_columns(TableName("raw", "events"), ["id"], "ds", "2026-02-22", "2026-03-01", [])


def test_count_only_some_partitions_of_a_range() -> None:
    table = TableName("raw", "customers")
    assert hql.count_by_partition(table, "ds", "2026-02-21", "2026-02-28", ["2026-02-21"]) == (
        "SELECT `ds`, COUNT(*) FROM `raw`.`customers` WHERE `ds` >= '2026-02-21' "
        "AND `ds` <= '2026-02-28' AND `ds` IN ('2026-02-21') GROUP BY `ds`"
    )
    with pytest.raises(InvalidIdentifierError, match="ds"):
        hql.count_by_partition(table, "ds", "2026-02-21", "2026-02-28", ["2026-02-21' OR 1=1"])


def test_select_rejects_hostile_column() -> None:
    with pytest.raises(InvalidIdentifierError, match="column name"):
        hql.select_columns(TableName("raw", "events"), ["id FROM x; --"])


def test_export_directory_cannot_break_out_of_its_literal() -> None:
    with pytest.raises(InvalidIdentifierError, match="export directory"):
        hql.export_parquet("file:///tmp/x' SELECT 1 --", "SELECT 1")
    assert hql.export_parquet("file:///lake/ds=2026-01-01", "SELECT 1") == (
        "INSERT OVERWRITE DIRECTORY 'file:///lake/ds=2026-01-01' STORED AS PARQUET SELECT 1"
    )
