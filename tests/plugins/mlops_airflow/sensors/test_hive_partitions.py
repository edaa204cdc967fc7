from __future__ import annotations

from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.sensors.hive_partitions import HivePartitionsSensor, partition_templates
from mlops_jobs.churn.tables import CHURN_SOURCES
from mlops_jobs.hql import TableName
from tests.conftest import DEMO

END = str(DEMO["end_ds"])


@pytest.mark.hive
def test_poke_is_true_when_every_partition_exists(hive_hook: HiveWarehouseHook) -> None:
    sensor = HivePartitionsSensor(
        task_id="wait",
        partitions={"raw.events": ["2026-02-20", "2026-02-28"], "raw.churn_labels": [END, END]},
    )
    assert sensor.poke({}) is True  # type: ignore[arg-type]


@pytest.mark.hive
def test_timeout_names_every_missing_partition(hive_hook: HiveWarehouseHook) -> None:
    sensor = HivePartitionsSensor(
        task_id="wait",
        partitions={
            "raw.events": ["2026-02-27", "2026-03-03"],
            "raw.no_such_table": ["2026-03-01", "2026-03-01"],
            # a warehouse the demo was never loaded into has no database either
            "no_such_db.events": ["2026-03-01", "2026-03-01"],
        },
        timeout=0,
        poke_interval=0,
        mode="poke",
    )
    with pytest.raises(AirflowSensorTimeout) as raised:
        sensor.execute({})  # type: ignore[arg-type]
    message = str(raised.value)
    assert "raw.events (ds=2026-03-02, ds=2026-03-03)" in message
    assert "ds=2026-02-28" not in message
    assert "raw.no_such_table (ds=2026-03-01)" in message
    assert "no_such_db.events (ds=2026-03-01)" in message


def test_hostile_table_name_fails_before_any_statement() -> None:
    sensor = HivePartitionsSensor(
        task_id="wait", partitions={"raw.events; DROP TABLE x": ["2026-03-01", "2026-03-01"]}
    )
    with (
        mock.patch.object(HiveWarehouseHook, "get_conn") as get_conn,
        pytest.raises(InvalidParameterError, match="invalid table name"),
    ):
        sensor.poke({})  # type: ignore[arg-type]
    get_conn.assert_not_called()


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        (["2026-03-02", "2026-03-01"], "before first ds"),
        (["2026-03-01"], r"\[first_ds, last_ds\]"),
        ("2026-03-01", r"\[first_ds, last_ds\]"),
        ([["2026-03-01", "2026-03-02"], "2026-03-03"], r"\[first_ds, last_ds\]"),
        (["2026-03-01", "tomorrow"], "tomorrow"),
    ],
)
def test_bad_ranges_are_named(bounds: list[str], message: str) -> None:
    sensor = HivePartitionsSensor(task_id="wait", partitions={"raw.events": bounds})
    with pytest.raises(InvalidParameterError, match=message):
        sensor.required()


def test_partition_templates_follow_the_contract_windows() -> None:
    assert partition_templates(CHURN_SOURCES) == {
        "raw.customers": [["{{ macros.ds_add(ds, -1) }}", "{{ macros.ds_add(ds, -1) }}"]],
        "raw.events": [
            ["{{ macros.ds_add(ds, -(params.lookback_days)) }}", "{{ macros.ds_add(ds, -1) }}"]
        ],
        "raw.churn_labels": [["{{ ds }}", "{{ ds }}"]],
    }
    # a span: the windows of its first day and of its last
    assert partition_templates(CHURN_SOURCES, span="params.span")["raw.churn_labels"] == [
        ["{{ macros.ds_add(ds, -(params.span)) }}", "{{ macros.ds_add(ds, -(params.span)) }}"],
        ["{{ ds }}", "{{ ds }}"],
    ]


def test_a_range_of_dates_rendered_as_native_objects_is_one_range() -> None:
    import datetime as dt

    sensor = HivePartitionsSensor(
        task_id="wait", partitions={"raw.events": (dt.date(2026, 2, 27), dt.date(2026, 2, 28))}
    )
    assert list(sensor.required().values()) == [["2026-02-27", "2026-02-28"]]


def test_several_ranges_of_one_table_are_required_once() -> None:
    sensor = HivePartitionsSensor(
        task_id="wait",
        partitions={
            "raw.events": [["2026-02-20", "2026-02-22"], ["2026-02-21", "2026-02-23"]],
            "raw.churn_labels": [["2026-02-22", "2026-02-22"], [END, END]],
        },
    )
    required = {str(t): days for t, days in sensor.required().items()}
    assert required == {
        "raw.events": ["2026-02-20", "2026-02-21", "2026-02-22", "2026-02-23"],
        "raw.churn_labels": ["2026-02-22", END],
    }


def run_of(run_type: str) -> dict[str, object]:
    from types import SimpleNamespace

    return {"dag_run": SimpleNamespace(run_type=run_type)}


@pytest.mark.parametrize(
    ("run_type", "wait_minutes", "expected"),
    [
        ("scheduled", None, 6 * 3600.0),
        ("backfill", "None", 6 * 3600.0),
        ("manual", None, 0.0),  # a person asked for data that should be there: check once
        ("manual", "15", 900.0),
        ("scheduled", "0", 0.0),
    ],
)
def test_wait_depends_on_who_triggered_the_run(
    run_type: str, wait_minutes: str | None, expected: float
) -> None:
    sensor = HivePartitionsSensor(
        task_id="wait", partitions={}, timeout=6 * 3600, wait_minutes=wait_minutes
    )
    assert sensor.wait_timeout(run_of(run_type)) == expected  # type: ignore[arg-type]


def test_a_manual_run_fails_at_once_naming_the_missing_partitions() -> None:
    sensor = HivePartitionsSensor(
        task_id="wait",
        partitions={"raw.churn_labels": ["2026-12-03", "2026-12-03"]},
        timeout=6 * 3600,
        poke_interval=300,
        mode="poke",
    )
    missing = {TableName("raw", "churn_labels"): ["2026-12-03"]}
    with (
        mock.patch.object(HivePartitionsSensor, "missing", return_value=missing),
        mock.patch("time.sleep") as sleep,
        pytest.raises(AirflowSensorTimeout, match=r"raw\.churn_labels \(ds=2026-12-03\)"),
    ):
        sensor.execute(run_of("manual"))  # type: ignore[arg-type]
    sleep.assert_not_called()


def test_wait_minutes_must_be_a_whole_number() -> None:
    sensor = HivePartitionsSensor(task_id="wait", partitions={}, wait_minutes="ten")
    with pytest.raises(InvalidParameterError, match="wait_minutes"):
        sensor.wait_timeout(run_of("manual"))  # type: ignore[arg-type]
