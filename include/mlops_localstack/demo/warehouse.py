"""Create and fill the demo Hive tables through HiveServer2.

The data is written as Parquet into a load directory, exposed to Hive as a temporary external
table and copied into the real tables with one ``INSERT OVERWRITE ... PARTITION (ds)`` per table,
so partitions are replaced whole and re-running with the same arguments changes nothing. The true
churn probabilities go to ``<local root>/demo/truth/`` and never into Hive.

Usage: ``python -m mlops_localstack.demo.warehouse --customers 2000 --days 120 --end-ds 2026-03-01``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_jobs.churn.tables import CHURN_SOURCES
from mlops_jobs.contracts import TableContract
from mlops_jobs.hql import TableName, quote_identifier
from mlops_jobs.lake import path_uri
from mlops_localstack.demo.generator import DemoData, DemoSpec, bayes_auc, generate
from mlops_localstack.env import hiveserver2_port, local_root

STAGING_DATABASE = "demo_staging"
_ARROW_TYPES = {
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}


def arrow_schema(contract: TableContract) -> pa.Schema:
    fields = [pa.field(name, _ARROW_TYPES[kind]) for name, kind in contract.columns]
    if contract.partitioned:
        fields.append(pa.field(contract.partition_column, pa.string()))
    return pa.schema(fields)


@contextlib.contextmanager
def hive_cursor(host: str, port: int) -> Iterator[Any]:
    from pyhive import hive

    with (
        contextlib.closing(
            hive.connect(host=host, port=port, auth="NONE", username="mlops")
        ) as conn,
        contextlib.closing(conn.cursor()) as cursor,
    ):
        yield cursor


def write_load_files(data: DemoData, load_root: Path) -> dict[str, Path]:
    frames = {"customers": data.customers, "events": data.events, "churn_labels": data.labels}
    shutil.rmtree(load_root, ignore_errors=True)
    paths = {}
    for contract in CHURN_SOURCES:
        directory = load_root / contract.alias
        directory.mkdir(parents=True)
        table = pa.Table.from_pandas(
            frames[contract.alias], schema=arrow_schema(contract), preserve_index=False
        )
        pq.write_table(table, directory / "part-00000.parquet")
        paths[contract.alias] = directory
    return paths


def write_truth(data: DemoData, spec: DemoSpec, truth_dir: Path) -> dict[str, Any]:
    truth_dir.mkdir(parents=True, exist_ok=True)
    data.truth.to_parquet(truth_dir / "churn_probability.parquet", index=False)
    summary = {
        "spec": spec.__dict__,
        "rows": {
            "customers": int(data.customers["customer_id"].nunique()),
            "customer_snapshots": len(data.customers),
            "events": len(data.events),
        },
        "label_rows": len(data.labels),
        "churn_rate": float(data.labels["churned"].mean()),
        "bayes_auc": bayes_auc(data.truth),
    }
    (truth_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def load_warehouse(spec: DemoSpec, host: str, port: int, root: Path) -> dict[str, Any]:
    """Generate the demo data for ``spec`` and load it into Hive. Return a summary."""
    data = generate(spec)
    load_dirs = write_load_files(data, root / "demo" / "load")
    with hive_cursor(host, port) as cursor:
        for database in ("raw", STAGING_DATABASE):
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
        cursor.execute("SET hive.exec.dynamic.partition=true")
        cursor.execute("SET hive.exec.dynamic.partition.mode=nonstrict")
        for contract in CHURN_SOURCES:
            # The demo tables are regenerated whole: dropping them also replaces a table of an
            # earlier layout (raw.customers was once unpartitioned) and days of a longer demo.
            cursor.execute(f"DROP TABLE IF EXISTS {contract.table.quoted}")
            cursor.execute(contract.create_statement())
            staging = TableName(STAGING_DATABASE, contract.alias)
            for statement in contract.load_statements(staging, path_uri(load_dirs[contract.alias])):
                cursor.execute(statement)
    shutil.rmtree(root / "demo" / "load", ignore_errors=True)
    return write_truth(data, spec, root / "demo" / "truth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo-warehouse", description=__doc__)
    defaults = DemoSpec()
    parser.add_argument("--customers", type=int, default=defaults.customers)
    parser.add_argument("--days", type=int, default=defaults.days)
    parser.add_argument("--end-ds", default=defaults.end_ds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--drift", type=float, default=defaults.drift)
    parser.add_argument("--drift-start-ds", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        spec = DemoSpec(
            customers=args.customers,
            days=args.days,
            end_ds=args.end_ds,
            seed=args.seed,
            drift=args.drift,
            drift_start_ds=args.drift_start_ds,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    started = time.monotonic()
    summary = load_warehouse(spec, args.host, args.port or hiveserver2_port(), local_root())
    print(
        f"demo warehouse loaded in {time.monotonic() - started:.0f} s: "
        f"{summary['rows']['customers']} customers, {summary['rows']['events']} events over "
        f"{spec.days} days to {spec.end_ds}, {summary['label_rows']} labels "
        f"(churn rate {summary['churn_rate']:.3f}, Bayes-optimal AUC {summary['bayes_auc']:.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
