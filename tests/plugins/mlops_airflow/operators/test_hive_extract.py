from __future__ import annotations

from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest

from mlops_airflow.exceptions import (
    InvalidParameterError,
    MissingPartitionError,
    ReconciliationError,
    SchemaContractError,
)
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_SOURCES, CUSTOMERS, EVENTS
from mlops_jobs.contracts import PartitionWindow, TableContract
from mlops_jobs.hql import InvalidIdentifierError, TableName
from tests.conftest import DEMO, LOOKBACK_DAYS

END = str(DEMO["end_ds"])


def extract(lake_root: Path, **kwargs: object) -> str:
    arguments = {
        "task_id": "extract",
        "sources": CHURN_SOURCES,
        "dataset": "churn/snapshots",
        "ds": END,
        "lookback_days": LOOKBACK_DAYS,
        "lake_root": str(lake_root),
        **kwargs,
    }
    return HiveExtractOperator(**arguments).execute({})  # type: ignore[arg-type]


def published(lake_root: Path) -> list[str]:
    """The committed snapshot boxes; no draft version may be left behind in any of them."""
    root = lake_root / "churn" / "snapshots"
    boxes = sorted(root.iterdir()) if root.exists() else []
    for box in boxes:
        for version, _ in lake.versions(lake.locate(str(box))):
            assert (box / version / lake.MANIFEST).exists(), f"draft {version} left in {box}"
    return [box.name for box in boxes if (box / lake.POINTER).exists()]


@pytest.mark.hive
def test_snapshot_is_published_with_reconciled_manifest(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    uri = extract(lake_root)
    assert uri.startswith(lake.normalize(lake_root / "churn" / "snapshots" / f"ds={END}") + "/v=")
    box = Path(lake.locate(uri).path)
    manifest = lake.read_manifest(uri)
    assert manifest["ds"] == END and manifest["lookback_days"] == LOOKBACK_DAYS
    assert manifest["span_days"] == 0

    events = pq.read_table(box / "events").to_pandas()
    assert len(events) == manifest["tables"]["events"]["rows"]
    # the lookback window ends strictly before ds
    assert events["ds"].min() == "2026-02-15" and events["ds"].max() == "2026-02-28"
    hive_counts = hive_hook.count_by_partition(
        TableName("raw", "events"), "ds", "2026-02-15", "2026-02-28"
    )
    assert manifest["tables"]["events"]["partitions"]["rows"] == hive_counts
    assert sum(hive_counts.values()) == len(events)

    labels = pq.read_table(box / "churn_labels").to_pandas()
    assert set(labels["ds"]) == {END}
    customers = pq.read_table(box / "customers").to_pandas()
    assert set(customers["ds"]) == {"2026-02-28"}  # the daily snapshot as of the cutoff
    assert customers["customer_id"].is_unique and 0 < len(customers) <= DEMO["customers"]
    assert [c["name"] for c in manifest["tables"]["customers"]["schema"]] == [
        *(n for n, _ in CUSTOMERS.columns),
        "ds",
    ]
    assert published(lake_root) == [f"ds={END}"]
    # the tables' digests, combined, are the hash of the whole version
    committed = lake.open_box(lake.box_uri(str(lake_root), "churn/snapshots", END))
    assert manifest["content_hash"] == lake.content_hash(committed.location)


@pytest.mark.hive
def test_a_span_exports_its_first_and_last_day_not_the_days_between(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    """Training on ds - 3 and testing on ds reads the labels and attribute snapshots of those
    two days only, and every day of the events both lookbacks cover."""
    uri = extract(lake_root, span_days=3)
    box = Path(lake.locate(uri).path)
    manifest = lake.read_manifest(uri)
    assert manifest["span_days"] == 3
    labels = pq.read_table(box / "churn_labels").to_pandas()
    assert sorted(set(labels["ds"])) == ["2026-02-26", END]
    assert sorted(manifest["tables"]["churn_labels"]["partitions"]["rows"]) == ["2026-02-26", END]
    customers = pq.read_table(box / "customers").to_pandas()
    assert sorted(set(customers["ds"])) == ["2026-02-25", "2026-02-28"]
    events = pq.read_table(box / "events").to_pandas()
    assert events["ds"].min() == "2026-02-12" and events["ds"].max() == "2026-02-28"
    assert events["ds"].nunique() == LOOKBACK_DAYS + 3
    hive_labels = hive_hook.count_by_partition(
        TableName("raw", "churn_labels"), "ds", "2026-02-26", END
    )
    assert len(labels) == hive_labels["2026-02-26"] + hive_labels[END] < sum(hive_labels.values())


@pytest.mark.hive
def test_rerun_replaces_only_its_own_snapshot(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    other = lake.box_uri(str(lake_root), "churn/snapshots", "2026-02-28")
    with lake.publishing(other, root=str(lake_root)) as draft:
        draft.location.child("customers", "part-0").write_text("another day")
        draft.commit({"ds": "2026-02-28"})
    extract(lake_root)
    first = lake.read_manifest(lake_root / "churn" / "snapshots" / f"ds={END}")
    extract(lake_root)
    second = lake.read_manifest(lake_root / "churn" / "snapshots" / f"ds={END}")
    assert first["content_hash"] == second["content_hash"]
    assert first["version"] != second["version"]
    assert published(lake_root) == ["ds=2026-02-28", f"ds={END}"]
    assert lake.read_manifest(other)["ds"] == "2026-02-28"


@pytest.mark.hive
def test_schema_drift_lists_every_missing_extra_and_retyped_column(
    hive_hook: HiveWarehouseHook, scratch_database: str, lake_root: Path
) -> None:
    hive_hook.execute(
        f"CREATE TABLE {scratch_database}.customers (customer_id STRING, signup_date DATE, "
        "plan STRING, region STRING, age INT, monthly_fee DOUBLE, loyalty_tier STRING) "
        "STORED AS PARQUET"
    )
    drifted = TableContract(
        alias="customers", table=TableName(scratch_database, "customers"), columns=CUSTOMERS.columns
    )
    missing_table = TableContract(
        alias="gone", table=TableName(scratch_database, "gone"), columns=CUSTOMERS.columns
    )
    with pytest.raises(SchemaContractError) as raised:
        extract(lake_root, sources=[drifted, missing_table])
    message = str(raised.value)
    assert "scratch.customers: missing columns: is_autopay boolean" in message
    assert "scratch.customers: extra columns: loyalty_tier string" in message
    assert "customer_id (expected bigint, found string)" in message
    assert "scratch.gone: table does not exist" in message
    assert published(lake_root) == []


@pytest.mark.hive
def test_missing_partition_fails_and_keeps_the_previous_snapshot(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    extract(lake_root, ds="2026-03-01")
    before = lake.read_manifest(lake_root / "churn" / "snapshots" / "ds=2026-03-01")
    with pytest.raises(MissingPartitionError) as raised:
        extract(lake_root, ds="2026-03-03")
    message = str(raised.value)
    assert "raw.events/ds=2026-03-02" in message
    assert "raw.churn_labels/ds=2026-03-03" in message
    assert "raw.customers/ds=2026-03-02" in message
    assert published(lake_root) == ["ds=2026-03-01"]
    after = lake.read_manifest(lake_root / "churn" / "snapshots" / "ds=2026-03-01")
    assert after == before


@pytest.mark.hive
def test_empty_partition_fails_unless_allowed(
    hive_hook: HiveWarehouseHook, scratch_database: str, lake_root: Path
) -> None:
    hive_hook.execute(
        f"CREATE TABLE {scratch_database}.labels (customer_id BIGINT, churned INT) "
        "PARTITIONED BY (ds STRING) STORED AS PARQUET"
    )
    hive_hook.execute(f"ALTER TABLE {scratch_database}.labels ADD PARTITION (ds='{END}')")
    empty_labels = TableContract(
        alias="churn_labels",
        table=TableName(scratch_database, "labels"),
        columns=(("customer_id", "bigint"), ("churned", "int")),
        window=PartitionWindow.CURRENT,
    )
    with pytest.raises(MissingPartitionError, match=rf"empty: scratch.labels/ds={END}"):
        extract(lake_root, sources=[empty_labels])
    assert published(lake_root) == []

    box = extract(lake_root, sources=[empty_labels], allow_empty_partitions="True")
    assert lake.read_manifest(box)["tables"]["churn_labels"]["rows"] == 0


@pytest.mark.hive
def test_lost_export_file_fails_reconciliation_and_publishes_nothing(
    hive_hook: HiveWarehouseHook, lake_root: Path
) -> None:
    real_export = HiveWarehouseHook.export_parquet

    def export_then_lose_a_file(self: HiveWarehouseHook, query: str, directory_uri: str) -> None:
        real_export(self, query, directory_uri)
        if "`raw`.`events`" in query:
            Path(lake.data_files(lake.locate(directory_uri))[0]).unlink()

    with (
        mock.patch.object(HiveWarehouseHook, "export_parquet", export_then_lose_a_file),
        pytest.raises(ReconciliationError, match=r"raw.events: exported \d+ rows but Hive counts"),
    ):
        extract(lake_root)
    assert published(lake_root) == []


def test_hostile_names_never_reach_hive() -> None:
    with pytest.raises(InvalidIdentifierError, match="invalid table name"):
        TableName.parse("raw.events; DROP TABLE x")
    with pytest.raises(InvalidIdentifierError, match=r"column of raw\.events"):
        TableContract(alias="events", table=EVENTS.table, columns=(("id; DROP TABLE x", "int"),))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ds": "2026-02-30"}, "ds '2026-02-30'"),
        ({"ds": "2026-03-01; DROP TABLE x"}, "invalid ds"),
        ({"lookback_days": "ninety"}, "lookback_days must be a whole number"),
        ({"lookback_days": 0}, "lookback_days must be at least 1"),
        ({"allow_empty_partitions": "maybe"}, "allow_empty_partitions must be true or false"),
    ],
)
def test_invalid_parameters_are_named_before_any_statement(
    kwargs: dict[str, object], message: str, lake_root: Path
) -> None:
    with (
        mock.patch.object(HiveWarehouseHook, "get_conn") as get_conn,
        pytest.raises(InvalidParameterError, match=message),
    ):
        extract(lake_root, **kwargs)
    get_conn.assert_not_called()


def test_templated_fields_render_from_params(lake_root: Path) -> None:
    operator = HiveExtractOperator(
        task_id="extract",
        sources=CHURN_SOURCES,
        dataset="churn/snapshots",
        lookback_days="{{ params.lookback_days }}",
        allow_empty_partitions="{{ params.allow_empty_partitions }}",
    )
    operator.render_template_fields(
        {"ds": END, "params": {"lookback_days": 30, "allow_empty_partitions": True}}  # type: ignore[arg-type]
    )
    assert (operator.ds, operator.lookback_days, operator.allow_empty_partitions) == (
        END,
        "30",
        "True",
    )
