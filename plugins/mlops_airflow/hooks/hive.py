"""Metadata and export helpers on top of the Hive provider's ``HiveServer2Hook``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

from mlops_airflow.exceptions import HiveServerUnavailableError
from mlops_jobs import hql
from mlops_jobs.hql import TableName

if TYPE_CHECKING:
    from mlops_jobs.contracts import TableContract


class HiveWarehouseHook(HiveServer2Hook):
    """
    ``HiveServer2Hook`` with the catalog queries the extraction stage needs.

    Every statement is built from validated identifiers (``mlops_jobs.hql``); nothing here
    re-implements the Thrift client.

    :param hiveserver2_conn_id: Airflow connection to HiveServer2.
    """

    #: The connection ``session`` shares, while it is open.
    _shared: Any = None

    def fetch_all(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows (``get_records`` drops DESCRIBE's)."""
        self.log.info("Running: %s", sql)
        with self._cursor(sql) as cursor:
            cursor.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []

    def execute(self, sql: str) -> None:
        """Run one statement that returns no rows (DDL, INSERT)."""
        self.log.info("Running: %s", sql)
        with self._cursor(sql) as cursor:
            cursor.execute(sql)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Run the statements issued inside on one HiveServer2 session, closed at the end.

        Outside it every statement opens a session of its own, which a Spark Thrift server
        pays for with a new ``SparkSession`` (a fifth of a second on the local stack); a task
        that runs several statements opens one. Nested uses share the outer session.
        """
        if self._shared is not None:
            yield
            return
        conn = self._connect()
        self._shared = conn
        try:
            yield
        finally:
            self._shared = None
            self._close_session(conn)

    def _connect(self) -> Any:
        """A new connection (session); a refused one becomes ``HiveServerUnavailableError``."""
        from thrift.transport.TTransport import TTransportException

        try:
            return self.get_conn()
        except (TTransportException, OSError) as err:
            raise HiveServerUnavailableError(
                f"HiveServer2 {self._address()} is unreachable: {err}"
            ) from err

    @contextlib.contextmanager
    def _cursor(self, sql: str) -> Iterator[Any]:
        """A cursor on the shared session (``session``) or a new connection; a refused or
        broken connection (not an error of the statement) becomes
        ``HiveServerUnavailableError`` naming the server and the statement."""
        from thrift.transport.TTransport import TTransportException

        shared = self._shared
        conn = shared if shared is not None else self._connect()
        try:
            with contextlib.closing(conn.cursor()) as cursor:
                yield cursor
        except (TTransportException, OSError) as err:
            statement = " ".join(sql.split())
            raise HiveServerUnavailableError(
                f"lost the connection to HiveServer2 {self._address()} while running "
                f"{statement[:120]}{'…' if len(statement) > 120 else ''}: {err}"
            ) from err
        finally:
            if shared is None:
                self._close_session(conn)

    def _close_session(self, conn: Any) -> None:
        """Close the session; a failure to close is logged, not raised: the statement's work is
        done by then (HiveServer2 can fail to close sessions closed concurrently, e.g. with
        ``NoClassDefFoundError`` from its session cleanup)."""
        try:
            conn.close()
        except Exception as err:
            self.log.warning(
                "Closing the HiveServer2 session at %s failed (the statement's outcome stands): %s",
                self._address(),
                err,
            )

    def _address(self) -> str:
        conn = self.get_connection(self.hiveserver2_conn_id)
        return f"{conn.host}:{conn.port} (connection {self.hiveserver2_conn_id})"

    def database_exists(self, database: str) -> bool:
        """True when ``database`` exists (SHOW DATABASES LIKE 'name')."""
        rows = self.fetch_all(f"SHOW DATABASES LIKE '{database}'")
        return database.lower() in {str(row[0]).lower() for row in rows}

    def table_exists(self, table: TableName) -> bool:
        """True when ``table`` exists (SHOW TABLES IN db LIKE 'name'); False when its database
        does not exist either."""
        if not self.database_exists(table.database):
            return False
        rows = self.fetch_all(f"SHOW TABLES IN `{table.database}` LIKE '{table.table}'")
        # Hive returns (tab_name,); Spark returns (namespace, tableName, isTemporary).
        names = {str(row[1] if len(row) > 1 else row[0]).lower() for row in rows}
        return table.table.lower() in names

    def contract_problems(self, contract: TableContract) -> list[str]:
        """Every way the live table differs from its contract: absent, or missing, extra and
        retyped columns (empty when it matches)."""
        if not self.table_exists(contract.table):
            return [f"{contract.table}: table does not exist"]
        live = dict(self.describe_columns(contract.table))
        expected = dict(contract.columns)
        if contract.partitioned:
            expected[contract.partition_column] = "string"
        missing = [f"{c} {t}" for c, t in expected.items() if c not in live]
        extra = [f"{c} {t}" for c, t in live.items() if c not in expected]
        retyped = [
            f"{c} (expected {t}, found {live[c]})"
            for c, t in expected.items()
            if c in live and live[c] != t
        ]
        return [
            f"{contract.table}: {label} columns: {', '.join(items)}"
            for label, items in (("missing", missing), ("extra", extra), ("retyped", retyped))
            if items
        ]

    def list_partitions(self, table: TableName) -> list[dict[str, str]]:
        """Partitions of ``table`` as ``{column: value}`` dicts (SHOW PARTITIONS)."""
        partitions = []
        for (spec,) in self.fetch_all(hql.show_partitions(table)):
            partitions.append(dict(part.split("=", 1) for part in str(spec).split("/")))
        return partitions

    def describe_columns(self, table: TableName) -> list[tuple[str, str]]:
        """``(column, type)`` pairs of ``table``, partition columns included, lower-cased."""
        columns: list[tuple[str, str]] = []
        for row in self.fetch_all(hql.describe(table)):
            name = (row[0] or "").strip()
            if not name or name.startswith("#"):
                break  # the partition section repeats the partition columns
            columns.append((name.lower(), (row[1] or "").strip().lower()))
        return columns

    def count_by_partition(
        self,
        table: TableName,
        partition_column: str,
        first: str,
        last: str,
        values: list[str] | None = None,
    ) -> dict[str, int]:
        """Row count per partition value between ``first`` and ``last`` (inclusive), of the
        partitions in ``values`` only when given (partitions without rows are absent)."""
        sql = hql.count_by_partition(table, partition_column, first, last, values)
        return {str(value): int(count) for value, count in self.fetch_all(sql)}

    def count_rows(self, table: TableName) -> int:
        """``COUNT(*)`` of a whole table."""
        ((count,),) = self.fetch_all(hql.count_rows(table))
        return int(count)

    def export_parquet(self, query: str, directory_uri: str) -> None:
        """Export ``query`` server-side into ``directory_uri`` as Parquet (no rows pass here)."""
        self.execute(hql.export_parquet(directory_uri, query))
