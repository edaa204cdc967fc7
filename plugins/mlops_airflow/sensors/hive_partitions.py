"""Wait for ``ds`` partitions of Hive tables through HiveServer2."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator
from airflow.sdk.exceptions import AirflowSensorTimeout

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.utils import positive_int
from mlops_jobs.contracts import PartitionWindow, TableContract
from mlops_jobs.hql import InvalidIdentifierError, TableName, validate_ds, validate_identifier

if TYPE_CHECKING:
    from airflow.sdk import Context


class HivePartitionsSensor(BaseSensorOperator):
    """
    Wait until every daily partition in the given ranges exists.

    Unlike the provider's metastore sensors this one needs only HiveServer2 (``SHOW PARTITIONS``),
    so it works against any HiveServer2-protocol server. Each poke logs what is still missing; on
    timeout the error lists the missing partitions.

    A scheduled run waits for data that is still arriving; a run triggered by hand (from the UI,
    the API or ``airflow dags test``) asks for data that should already be there, so it waits
    only ``manual_timeout`` seconds (by default it checks once) and fails naming what is missing.

    :param partitions: ``{"db.table": [first_ds, last_ds]}``, both ends inclusive, or a list
        of such ranges per table (``[[first_ds, last_ds], ...]``). (templated)
    :param partition_column: Name of the daily partition column.
    :param hiveserver2_conn_id: Airflow connection to HiveServer2.
    :param manual_timeout: Seconds a manually triggered run waits (0: one check); None waits
        ``timeout`` like a scheduled run.
    :param wait_minutes: When set, how long any run waits, in minutes, overriding ``timeout``
        and ``manual_timeout`` (a DAG Param, for example). (templated)
    """

    template_fields: Sequence[str] = ("partitions", "wait_minutes")
    ui_color = "#f0e4ec"

    def __init__(
        self,
        *,
        partitions: Mapping[str, Sequence[str] | Sequence[Sequence[str]]],
        partition_column: str = "ds",
        hiveserver2_conn_id: str = HiveWarehouseHook.default_conn_name,
        manual_timeout: float | None = 0,
        wait_minutes: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partitions = partitions
        self.manual_timeout = manual_timeout
        self.wait_minutes = wait_minutes
        self.partition_column = partition_column
        self.hiveserver2_conn_id = hiveserver2_conn_id

    @cached_property
    def hook(self) -> HiveWarehouseHook:
        return HiveWarehouseHook(hiveserver2_conn_id=self.hiveserver2_conn_id)

    def required(self) -> dict[TableName, list[str]]:
        """Every required partition value per table, validated."""
        try:
            validate_identifier(self.partition_column, "partition column")
            required = {}
            for name, ranges in self.partitions.items():
                if not isinstance(ranges, list | tuple):
                    raise InvalidParameterError(
                        f"partitions[{name!r}] must be [first_ds, last_ds] or a list of them, "
                        f"got {ranges!r}"
                    )
                if not any(isinstance(b, list | tuple) for b in ranges):
                    ranges = [ranges]  # one range (str or date ends)
                days: set[str] = set()
                for bounds in ranges:
                    days.update(_days(name, bounds))
                if not days:
                    raise InvalidParameterError(f"partitions[{name!r}] names no range")
                required[TableName.parse(name)] = sorted(days)
            return required
        except InvalidIdentifierError as err:
            raise InvalidParameterError(str(err)) from None

    def missing(self) -> dict[TableName, list[str]]:
        """Required partitions that do not exist yet, per table (a missing table: all of them)."""
        missing = {}
        required = self.required()
        with self.hook.session():
            for table, values in required.items():
                present: set[str] = set()
                if self.hook.table_exists(table):
                    present = {
                        p[self.partition_column]
                        for p in self.hook.list_partitions(table)
                        if self.partition_column in p
                    }
                absent = [v for v in values if v not in present]
                if absent:
                    missing[table] = absent
        return missing

    def poke(self, context: Context) -> bool:
        missing = self.missing()
        if missing:
            self.log.info("Still waiting for %s", describe_missing(missing, self.partition_column))
        return not missing

    def wait_timeout(self, context: Context) -> float:
        """Seconds this run waits: ``wait_minutes`` when set, else ``manual_timeout`` for a
        manually triggered run, else ``timeout``."""
        if self.wait_minutes not in (None, "", "None"):
            return 60.0 * positive_int(self.wait_minutes, "wait_minutes", minimum=0)
        run_type = getattr(context.get("dag_run"), "run_type", None)
        if (
            self.manual_timeout is not None
            and str(getattr(run_type, "value", run_type)) == "manual"
        ):
            return float(self.manual_timeout)
        return float(self.timeout)

    def execute(self, context: Context) -> Any:
        self.timeout = self.wait_timeout(context)
        # a short wait is not slept past
        self.poke_interval = max(1.0, min(float(self.poke_interval), self.timeout or 1.0))
        try:
            return super().execute(context)
        except AirflowSensorTimeout as err:
            missing = describe_missing(self.missing(), self.partition_column)
            raise AirflowSensorTimeout(
                f"missing partitions: {missing} (waited up to {self.timeout:.0f} s; {err})"
            ) from err


def _days(name: str, bounds: Any) -> list[str]:
    """Every day of one ``[first_ds, last_ds]`` range of table ``name``, validated."""
    if isinstance(bounds, str) or len(bounds) != 2:
        raise InvalidParameterError(
            f"partitions[{name!r}] must be [first_ds, last_ds] or a list of them, got {bounds!r}"
        )
    first, last = (
        dt.date.fromisoformat(validate_ds(str(b), f"partition bound of {name}")) for b in bounds
    )
    if last < first:
        raise InvalidParameterError(
            f"partitions[{name!r}]: last ds {last} is before first ds {first}"
        )
    return [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def describe_missing(missing: Mapping[TableName, Sequence[str]], column: str) -> str:
    """``raw.events (ds=2026-02-27, ds=2026-02-28)``; long lists are shortened."""
    parts = []
    for table, values in missing.items():
        shown = [f"{column}={v}" for v in values[:5]]
        if len(values) > 5:
            shown.append(f"... {len(values) - 5} more, up to {column}={values[-1]}")
        parts.append(f"{table} ({', '.join(shown)})")
    return "; ".join(parts)


def partition_templates(
    sources: Sequence[TableContract],
    lookback: str = "params.lookback_days",
    ds: str = "ds",
    span: str = "0",
) -> dict[str, list[list[str]]]:
    """Templated ``partitions`` for the sources' windows, ending before (or at) the run's ``ds``
    (as ``TableContract.windows`` computes them): one range per day the run covers.

    :param sources: Table contracts; unpartitioned tables are skipped.
    :param lookback: Jinja expression giving the lookback in days.
    :param ds: Jinja expression giving the run's ``ds``.
    :param span: Jinja expression giving the run's span in days: the run also covers the day
        that many days before ``ds``.
    """
    days = [""] if span.strip() == "0" else [f"-({span})", ""]

    def day(*offsets: str) -> str:
        offset = " ".join(o for o in offsets if o)
        return f"{{{{ macros.ds_add({ds}, {offset}) }}}}" if offset else f"{{{{ {ds} }}}}"

    ranges: dict[str, list[list[str]]] = {}
    for contract in sources:
        windows = []
        for run_day in days:
            if contract.window is PartitionWindow.CURRENT:
                windows.append([day(run_day), day(run_day)])
            elif contract.window is PartitionWindow.AS_OF:
                windows.append([day(run_day, "-1"), day(run_day, "-1")])
            elif contract.window is PartitionWindow.LOOKBACK:
                windows.append([day(run_day, f"-({lookback})"), day(run_day, "-1")])
        if windows:
            ranges[str(contract.table)] = windows
    return ranges
