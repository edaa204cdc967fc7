"""Extract a consistent, reconciled Parquet snapshot of Hive tables into the lake."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from mlops_airflow.assets import emit_asset_events
from mlops_airflow.exceptions import (
    InvalidParameterError,
    MissingPartitionError,
    ReconciliationError,
    SchemaContractError,
)
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.utils import as_bool, positive_int, resolve_lake_root
from mlops_jobs import hql, lake
from mlops_jobs.contracts import DEFAULT_LOOKBACK_DAYS, TableContract

if TYPE_CHECKING:
    from airflow.sdk import Context

SNAPSHOT_FORMAT_VERSION = 1


class HiveExtractOperator(BaseOperator):
    """
    Export the partitions one run needs from Hive tables into an atomically published snapshot.

    For each source table the operator checks the live schema against the declared contract
    (every missing, extra or retyped column is reported at once), checks that every required
    partition exists and is non-empty, exports server-side with ``INSERT OVERWRITE DIRECTORY ...
    STORED AS PARQUET`` into a new version of the box ``{lake_root}/{dataset}/ds={ds}``,
    reconciles the exported row counts with Hive's ``COUNT(*)``, and commits the version with its
    ``manifest.json`` (see ``mlops_jobs.lake``). A failed run leaves the previous snapshot as it
    was. The lake root must be storage HiveServer2 can write to (a local path for the embedded
    stack; ``s3://``, ``abfss://``, ``gs://`` or ``hdfs://`` in production).

    Returns the committed version's URI (XCom).

    :param sources: Table contracts to extract (``mlops_jobs.contracts``).
    :param ds: The run's partition date, ``YYYY-MM-DD``. (templated)
    :param lookback_days: Days of history for tables read with a lookback window. (templated)
    :param span_days: The run covers the days ``ds - span_days`` and ``ds`` (a day to train on
        and a later day to test on, for example): each table's partitions for both days are
        exported, and none of the days in between that neither reads. (templated)
    :param allow_empty_partitions: Accept required partitions without rows. (templated)
    :param lake_root: Lake root; default from the Variable ``mlops_lake_root`` or
        ``MLOPS_LAKE_ROOT``. (templated)
    :param dataset: Path of the snapshot dataset under the lake root.
    :param hiveserver2_conn_id: Airflow connection to HiveServer2.
    """

    template_fields: Sequence[str] = (
        "ds",
        "lookback_days",
        "span_days",
        "allow_empty_partitions",
        "lake_root",
    )
    ui_color = "#e4f0e8"

    def __init__(
        self,
        *,
        sources: Sequence[TableContract],
        ds: str = "{{ ds }}",
        lookback_days: int | str = DEFAULT_LOOKBACK_DAYS,
        span_days: int | str = 0,
        allow_empty_partitions: bool | str = False,
        lake_root: str | None = None,
        dataset: str,
        hiveserver2_conn_id: str = HiveWarehouseHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not sources:
            raise InvalidParameterError("sources must name at least one table contract")
        self.sources = list(sources)
        self.ds = ds
        self.lookback_days = lookback_days
        self.span_days = span_days
        self.allow_empty_partitions = allow_empty_partitions
        self.lake_root = lake_root
        self.dataset = dataset
        self.hiveserver2_conn_id = hiveserver2_conn_id

    @cached_property
    def hook(self) -> HiveWarehouseHook:
        return HiveWarehouseHook(hiveserver2_conn_id=self.hiveserver2_conn_id)

    def execute(self, context: Context) -> str:
        try:
            ds = hql.validate_ds(str(self.ds), "ds")
        except hql.InvalidIdentifierError as err:
            raise InvalidParameterError(str(err)) from None
        lookback_days = positive_int(self.lookback_days, "lookback_days")
        span_days = positive_int(self.span_days, "span_days", minimum=0)
        allow_empty = as_bool(self.allow_empty_partitions, "allow_empty_partitions")
        try:
            root = lake.lake_root(resolve_lake_root(self.lake_root))
            target = lake.box_uri(root, self.dataset, ds)
        except lake.LakeError as err:
            raise InvalidParameterError(f"snapshot location: {err}") from None

        # one HiveServer2 session for every statement of the extraction
        with self.hook.session():
            self.check_contracts()
            counts = self.check_partitions(ds, lookback_days, span_days, allow_empty)
            with lake.publishing(target, root=root) as draft:
                tables, digests = {}, []
                for contract in self.sources:
                    tables[contract.alias], table_digests = self.export_table(
                        contract,
                        ds,
                        lookback_days,
                        span_days,
                        draft.location,
                        counts[contract.alias],
                    )
                    digests += table_digests
                box = draft.commit(
                    {
                        # every file was hashed with its table: combined, not read a second time
                        "content_hash": lake.combine_digests(digests),
                        "format_version": SNAPSHOT_FORMAT_VERSION,
                        "dataset": self.dataset,
                        "ds": ds,
                        "lookback_days": lookback_days,
                        "span_days": span_days,
                        "tables": tables,
                        "producer": _producer(context),
                        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    }
                )
        self.log.info(
            "Published snapshot %s (%s)",
            box.uri,
            ", ".join(f"{a}: {t['rows']} rows" for a, t in tables.items()),
        )
        emit_asset_events(
            context,
            self.outlets,
            {
                "uri": box.uri,
                "ds": ds,
                "content_hash": box.manifest.get("content_hash"),
                "rows": {alias: table["rows"] for alias, table in tables.items()},
            },
        )
        return box.uri

    def check_contracts(self) -> None:
        """Compare every source's live columns with its contract; report all drift at once."""
        problems = [p for contract in self.sources for p in self.hook.contract_problems(contract)]
        if problems:
            raise SchemaContractError(
                "source tables do not match the pipeline's contract:\n  " + "\n  ".join(problems)
            )

    def check_partitions(
        self, ds: str, lookback_days: int, span_days: int, allow_empty: bool
    ) -> dict[str, dict[str, int] | int]:
        """Row counts per required partition (or per table); fail on missing or empty ones."""
        counts: dict[str, dict[str, int] | int] = {}
        missing, empty = [], []
        for contract in self.sources:
            bounds = contract.partition_range(ds, lookback_days, span_days)
            if bounds is None:
                total = self.hook.count_rows(contract.table)
                counts[contract.alias] = total
                if total == 0 and not allow_empty:
                    empty.append(f"{contract.table} (no rows)")
                continue
            required = contract.required_partitions(ds, lookback_days, span_days)
            in_range = self.hook.count_by_partition(
                contract.table, contract.partition_column, *bounds, values=_listed(required, bounds)
            )
            per_partition = {v: in_range[v] for v in required if v in in_range}
            counts[contract.alias] = per_partition
            without_rows = [v for v in required if v not in per_partition]
            if not without_rows:
                continue
            # only now is it worth telling a missing partition from an empty one
            present = {
                p.get(contract.partition_column) for p in self.hook.list_partitions(contract.table)
            }
            for value in without_rows:
                spec = f"{contract.table}/{contract.partition_column}={value}"
                if value not in present:
                    missing.append(spec)
                elif not allow_empty:
                    empty.append(spec)
        if missing:
            raise MissingPartitionError(f"required partitions are missing: {', '.join(missing)}")
        if empty:
            raise MissingPartitionError(
                f"required partitions are empty: {', '.join(empty)} "
                "(set allow_empty_partitions to accept them)"
            )
        return counts

    def export_table(
        self,
        contract: TableContract,
        ds: str,
        lookback_days: int,
        span_days: int,
        version: lake.Location,
        expected: dict[str, int] | int,
    ) -> tuple[dict[str, Any], list[str]]:
        """Export one table into ``<version>/<alias>`` and reconcile its row count; returns its
        manifest entry and the digests of its files."""
        bounds = contract.partition_range(ds, lookback_days, span_days)
        columns = contract.column_names
        if bounds is not None:
            columns.append(contract.partition_column)
        required = contract.required_partitions(ds, lookback_days, span_days)
        listed = _listed(required, bounds) if bounds else None
        first, last = bounds or (None, None)
        query = hql.select_columns(
            contract.table,
            columns,
            contract.partition_column if bounds else None,
            first,
            last,
            values=listed,
        )
        target = version.child(contract.alias)
        self.hook.export_parquet(query, target.spark)
        files = lake.data_files(target)
        exported = lake.parquet_rows(target, files)
        hive_rows = sum(expected.values()) if isinstance(expected, dict) else expected
        if exported != hive_rows:
            where = ""
            if bounds:
                where = f" for {contract.partition_column} {bounds[0]}..{bounds[1]}"
                where += "" if listed is None else f" ({len(listed)} partitions)"
            raise ReconciliationError(
                f"{contract.table}: exported {exported} rows but Hive counts {hive_rows}{where}"
            )
        digests = lake.file_digests(target, files)
        return {
            "table": str(contract.table),
            "path": contract.alias,
            "partition_column": contract.partition_column if bounds else None,
            "partitions": (
                {"first": bounds[0], "last": bounds[1], "rows": expected} if bounds else None
            ),
            "rows": exported,
            "schema": [{"name": n, "type": t} for n, t in contract.columns]
            + ([{"name": contract.partition_column, "type": "string"}] if bounds else []),
            "files": [f.removeprefix(target.path.rstrip("/") + "/") for f in files],
            "content_hash": lake.combine_digests(digests),
        }, digests


def _listed(required: list[str], bounds: tuple[str, str]) -> list[str] | None:
    """The partitions a query must list besides its range ``bounds``: ``required``, unless they
    are every day of the range."""
    first, last = (dt.date.fromisoformat(b) for b in bounds)
    return None if len(required) == (last - first).days + 1 else required


def _producer(context: Context) -> dict[str, Any]:
    ti = context.get("ti")
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "dag_run_id": getattr(ti, "run_id", None),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
    }
