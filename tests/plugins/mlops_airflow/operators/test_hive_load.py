"""Loading a published box into a Hive partition, against the test HiveServer2."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_airflow.exceptions import InvalidParameterError, SchemaContractError
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.operators.hive_load import HivePartitionLoadOperator
from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_PREDICTIONS
from mlops_jobs.contracts import PartitionWindow, TableContract
from mlops_jobs.hql import TableName
from mlops_localstack.demo.warehouse import arrow_schema


def predictions_box(lake_root: Path, ds: str, customers: range, version: str = "1") -> str:
    """A predictions box as the scoring job publishes it."""
    box = lake.box_uri(str(lake_root), "churn/predictions", ds)
    with lake.publishing(box, root=str(lake_root)) as draft:
        data = Path(draft.location.child("data").path)
        data.mkdir(parents=True)
        n = len(customers)
        table = pa.table(
            {
                "customer_id": pa.array(list(customers), pa.int64()),
                "churn_probability": pa.array([i / n for i in range(n)], pa.float64()),
                "churn_predicted": pa.array([i / n >= 0.3 for i in range(n)]),
                "model_version": pa.array([version] * n),
                "scored_at": pa.array([dt.datetime(2026, 3, 1, 6)] * n, pa.timestamp("us")),
            },
            schema=arrow_schema(
                TableContract("p", CHURN_PREDICTIONS.table, CHURN_PREDICTIONS.columns)
            ),
        )
        pq.write_table(table, data / "part-00000.parquet")
        return draft.commit({"ds": ds, "path": "data", "rows": n}).uri


def load(source: str, ds: str, target: TableContract = CHURN_PREDICTIONS) -> dict[str, object]:
    op = HivePartitionLoadOperator(task_id="load", target=target, source=source, ds=ds)
    return op.execute({})  # type: ignore[arg-type]


@pytest.mark.hive
def test_partition_is_replaced_never_appended(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    first = predictions_box(lake_root, "2026-03-01", range(1, 41))
    assert load(first, "2026-03-01") == {
        "table": "ml.churn_predictions",
        "ds": "2026-03-01",
        "rows": 40,
    }
    assert load(first, "2026-03-01")["rows"] == 40  # a re-run replaces, nothing doubles
    other_day = predictions_box(lake_root, "2026-03-02", range(1, 11), version="2")
    load(other_day, "2026-03-02")
    table = TableName("ml", "churn_predictions")
    assert hive_hook.count_by_partition(table, "ds", "2026-03-01", "2026-03-02") == {
        "2026-03-01": 40,
        "2026-03-02": 10,
    }
    # re-scoring a day with a new model replaces that day only
    rescored = predictions_box(lake_root, "2026-03-01", range(1, 31), version="3")
    assert load(rescored, "2026-03-01")["rows"] == 30
    rows = hive_hook.fetch_all(
        "SELECT model_version, COUNT(*) FROM ml.churn_predictions"
        " WHERE ds IN ('2026-03-01', '2026-03-02') GROUP BY model_version"
    )
    assert dict(rows) == {"3": 30, "2": 10}
    assert dict(hive_hook.describe_columns(table))["churn_probability"] == "double"


@pytest.mark.hive
def test_a_drifted_target_table_is_refused_by_column(
    hive_hook: HiveWarehouseHook, scratch_database: str, lake_root: Path
) -> None:
    contract = TableContract(
        alias="predictions",
        table=TableName(scratch_database, "predictions"),
        columns=CHURN_PREDICTIONS.columns,
        window=PartitionWindow.CURRENT,
    )
    hive_hook.execute(
        f"CREATE TABLE {contract.table.quoted} (customer_id BIGINT, churn_probability STRING) "
        "PARTITIONED BY (ds STRING) STORED AS PARQUET"
    )
    source = predictions_box(lake_root, "2026-03-01", range(1, 5))
    with pytest.raises(SchemaContractError) as err:
        load(source, "2026-03-01", contract)
    message = str(err.value)
    assert "churn_probability (expected double, found string)" in message
    assert "missing columns: churn_predicted boolean" in message
    assert hive_hook.count_by_partition(contract.table, "ds", "2026-03-01", "2026-03-01") == {}


@pytest.mark.hive
def test_source_of_another_day_is_refused(hive_hook: HiveWarehouseHook, lake_root: Path) -> None:
    source = predictions_box(lake_root, "2026-03-01", range(1, 5))
    with pytest.raises(
        InvalidParameterError, match="holds ds 2026-03-01, not the partition 2026-03-05"
    ):
        load(source, "2026-03-05")
    with pytest.raises(InvalidParameterError, match="is not a published box"):
        load(lake.normalize(lake_root / "nothing"), "2026-03-01")
