"""Load a published lake box into one partition of a Hive table."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_airflow.assets import emit_asset_events
from mlops_airflow.exceptions import InvalidParameterError, ReconciliationError, SchemaContractError
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_jobs import hql, lake
from mlops_jobs.hql import TableName

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlops_jobs.contracts import TableContract


class HivePartitionLoadOperator(BaseOperator):
    """
    Replace one partition of a Hive table with the Parquet data of a published box.

    Creates the table from its contract when it does not exist (and refuses one whose columns
    drifted from it), exposes the box's data as a temporary external table, replaces the
    partition with ``INSERT OVERWRITE TABLE … PARTITION (ds = …)`` and reconciles the
    partition's ``COUNT(*)`` with the box's manifest. Re-running for the same ``ds`` replaces the
    partition again: nothing is ever appended twice.

    Returns ``{table, ds, rows}``.

    :param target: Contract of the table to load (partitioned by ``ds``).
    :param source: URI of the published box or version (its manifest gives ``path`` and
        ``rows``); HiveServer2 must reach it. (templated)
    :param ds: Partition to replace. (templated)
    :param staging_database: Database for the temporary external table.
    :param hiveserver2_conn_id: Airflow connection to HiveServer2.
    """

    template_fields: Sequence[str] = ("source", "ds")
    ui_color = "#e4f0e8"

    def __init__(
        self,
        *,
        target: TableContract,
        source: str,
        ds: str = "{{ ds }}",
        staging_database: str = "ml_staging",
        hiveserver2_conn_id: str = HiveWarehouseHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not target.partitioned:
            raise InvalidParameterError(f"{target.table} is not partitioned by ds")
        self.target = target
        self.source = source
        self.ds = ds
        self.staging_database = hql.validate_identifier(staging_database, "staging database")
        self.hiveserver2_conn_id = hiveserver2_conn_id

    @cached_property
    def hook(self) -> HiveWarehouseHook:
        return HiveWarehouseHook(hiveserver2_conn_id=self.hiveserver2_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            ds = hql.validate_ds(str(self.ds), "ds")
        except hql.InvalidIdentifierError as err:
            raise InvalidParameterError(str(err)) from None
        try:
            box = lake.open_box(self.source)
        except lake.LakeError as err:
            raise InvalidParameterError(f"source {self.source}: {err}") from None
        manifest = box.manifest
        if manifest.get("ds") not in (None, ds):
            raise InvalidParameterError(
                f"source {self.source} holds ds {manifest['ds']}, not the partition {ds}"
            )
        table = self.target.table
        with self.hook.session():  # one HiveServer2 session for the whole load
            for database in (table.database, self.staging_database):
                self.hook.execute(f"CREATE DATABASE IF NOT EXISTS {hql.quote_identifier(database)}")
            self.hook.execute(self.target.create_statement())
            problems = self.hook.contract_problems(self.target)
            if problems:
                raise SchemaContractError(
                    f"{table} does not match its contract:\n  " + "\n  ".join(problems)
                )
            data = box.path(manifest.get("path", "data"))
            staging = TableName(self.staging_database, f"{table.table}_{ds.replace('-', '_')}")
            for statement in self.target.load_statements(staging, data.spark, ds):
                self.hook.execute(statement)
            counts = self.hook.count_by_partition(table, self.target.partition_column, ds, ds)
        loaded = counts.get(ds, 0)
        if "rows" in manifest and loaded != int(manifest["rows"]):
            raise ReconciliationError(
                f"{table}/{self.target.partition_column}={ds} holds {loaded} rows after the load "
                f"but {self.source} has {manifest['rows']}"
            )
        self.log.info("Loaded %s rows into %s partition ds=%s", loaded, table, ds)
        result = {"table": str(table), "ds": ds, "rows": loaded}
        model = manifest.get("model") or {}
        extra = {**result, "content_hash": manifest.get("content_hash")}
        emit_asset_events(context, self.outlets, {**extra, "model_version": model.get("version")})
        return result
