"""Benchmark the extraction stage: the server-side export against the provider's ``get_df``.

Extraction, on one ``raw.events``-shaped Hive table (``bench.events``: the events contract's
columns plus session, device, app version, country and duration; ``ds`` partitions of 120 days;
``--rows`` rows made from ``mlops_localstack.demo.generator``, loaded through Parquet and
``TableContract.load_statements`` as the demo warehouse is):

- ``export``: ``HiveExtractOperator.execute`` for the whole table, the task as it runs in
  ``churn_training`` (contract check, partition counts, the server-side ``INSERT OVERWRITE
  DIRECTORY ... STORED AS PARQUET`` of ``HiveWarehouseHook.export_parquet``, reconciliation,
  content hash, manifest). The export statement's own time and the content hash's are recorded
  by wrapping the real functions, so both come from the same runs;
- ``get_df``: the same ``SELECT`` pulled through the provider's ``HiveServer2Hook.get_df(sql,
  schema="bench", df_type="pandas")`` (its default 1,000 rows per Thrift fetch) and written to one
  Parquet file, the timestamp column cast back from the string HiveServer2 sends, so both outputs
  have the table's types.
Both outputs are checked against Hive (rows, sums of ``event_id`` and ``duration_ms``, days).
The two methods alternate in each repetition so neither always runs on a warmer server; the
figures are medians over ``--repeat`` repetitions, and the ratio is get_df time / export time.

Everything lives under ``<local root>/bench/extract`` (wiped at the start), with a HiveServer2 of
its own on ``--port`` (default 10002) that the bench starts and stops, also on error, or, with
``--running-server``, the HiveServer2 already listening on ``--port`` (the test suite's smoke
size); at the end the bench database is dropped and the data files removed (the server's log and
metastore stay). Exits 1 when an output does not match Hive's own figures.
Prints one JSON line per measurement; the last line is one JSON object with everything.

Usage: ``python bench/extract.py [--rows 1000000] [--repeat 5] [--port 10002] [--running-server]``
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

from common import Emit, json_output  # noqa: E402

from mlops_jobs import hql, lake  # noqa: E402
from mlops_jobs.churn.tables import EVENTS  # noqa: E402
from mlops_jobs.contracts import PartitionWindow, TableContract  # noqa: E402
from mlops_jobs.hql import TableName  # noqa: E402
from mlops_localstack.demo.generator import DemoSpec, generate  # noqa: E402
from mlops_localstack.demo.warehouse import arrow_schema, hive_cursor  # noqa: E402
from mlops_localstack.env import hiveserver2_connection_uri, local_root  # noqa: E402
from mlops_localstack.hiveserver2 import HiveServer2  # noqa: E402

HOST = "127.0.0.1"
DATABASE = "bench"
DAYS = 120
END_DS = "2026-03-01"
SNAPSHOT_DS = "2026-03-02"  # the day after the last partition: its lookback covers all of them
EVENTS_PER_CUSTOMER = 147.0  # measured mean of the demo generator over 120 days
HIVE_START_TIMEOUT = 900.0
EXPORT_TARGET_RATIO = 5.0

BENCH_EVENTS = TableContract(
    alias="events",
    table=TableName(DATABASE, "events"),
    columns=(
        *EVENTS.columns,
        ("session_id", "string"),
        ("device", "string"),
        ("app_version", "string"),
        ("country", "string"),
        ("duration_ms", "bigint"),
    ),
    window=PartitionWindow.LOOKBACK,
)

# -- data ----------------------------------------------------------------------------------


def make_events(rows: int, seed: int = 3) -> Any:
    """Exactly ``rows`` demo events with the bench table's extra columns (a pandas frame)."""
    import numpy as np

    customers = max(10, math.ceil(rows / EVENTS_PER_CUSTOMER * 1.1))
    while True:
        events = generate(DemoSpec(customers=customers, days=DAYS, end_ds=END_DS, seed=seed)).events
        if len(events) >= rows:
            break
        customers *= 2
    rng = np.random.default_rng(seed)
    # A uniform subset keeps every day and customer; event ids stay unique.
    keep = np.sort(rng.choice(len(events), size=rows, replace=False))
    events = events.iloc[keep].reset_index(drop=True)

    customer_index = np.unique(events["customer_id"].to_numpy(), return_inverse=True)[1]
    countries = np.array(["US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "BR", "IN"])
    home = rng.choice(len(countries), size=customer_index.max() + 1)
    channel = events["channel"].to_numpy()
    mobile = rng.random(rows) < 0.55
    events["session_id"] = (
        "s-"
        + events["customer_id"].astype(str)
        + "-"
        + events["event_time"].dt.strftime("%Y%m%d%H")  # one session per customer and hour
    )
    events["device"] = np.where(
        channel == "mobile",
        np.where(mobile, "ios", "android"),
        np.where(channel == "store", "pos", np.where(mobile, "desktop", "tablet")),
    )
    events["app_version"] = rng.choice(
        ["5.0.3", "5.1.0", "5.1.2", "5.2.0", "5.3.1"], size=rows, p=[0.05, 0.1, 0.2, 0.3, 0.35]
    )
    events["country"] = countries[home[customer_index]]
    events["duration_ms"] = rng.lognormal(mean=8.0, sigma=1.2, size=rows).astype(np.int64)
    columns = [*BENCH_EVENTS.column_names, BENCH_EVENTS.partition_column]
    return events[columns]


def load_table(port: int, events: Any, load_dir: Path) -> dict[str, Any]:
    """Create ``bench.events`` and fill it from ``events``, as the demo warehouse loads its tables;
    return Hive's own figures of the table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    load_dir.mkdir(parents=True)
    table = pa.Table.from_pandas(events, schema=arrow_schema(BENCH_EVENTS), preserve_index=False)
    pq.write_table(table, load_dir / "part-00000.parquet")
    staging = TableName(DATABASE, "events_load")
    with hive_cursor(HOST, port) as cursor:
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {hql.quote_identifier(DATABASE)}")
        cursor.execute("SET hive.exec.dynamic.partition=true")
        cursor.execute("SET hive.exec.dynamic.partition.mode=nonstrict")
        cursor.execute(BENCH_EVENTS.create_statement())
        for statement in BENCH_EVENTS.load_statements(staging, lake.path_uri(load_dir)):
            cursor.execute(statement)
        cursor.execute(
            f"SELECT COUNT(*), SUM(event_id), SUM(duration_ms), COUNT(DISTINCT ds) "
            f"FROM {BENCH_EVENTS.table.quoted}"
        )
        rows, event_ids, durations, days = cursor.fetchone()
    shutil.rmtree(load_dir)
    return {
        "rows": int(rows),
        "sum_event_id": int(event_ids),
        "sum_duration_ms": int(durations),
        "days": int(days),
    }


def parquet_checksums(paths: list[str]) -> dict[str, int]:
    """The figures ``load_table`` returns, computed from Parquet files."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = event_ids = durations = 0
    days: set[str] = set()
    for path in paths:
        table = pq.read_table(path, columns=["event_id", "duration_ms", "ds"])
        rows += table.num_rows
        event_ids += int(pc.sum(table["event_id"]).as_py() or 0)
        durations += int(pc.sum(table["duration_ms"]).as_py() or 0)
        days.update(str(d) for d in pc.unique(table["ds"]).to_pylist())
    return {
        "rows": rows,
        "sum_event_id": event_ids,
        "sum_duration_ms": durations,
        "days": len(days),
    }


# -- extraction ----------------------------------------------------------------------------


@contextlib.contextmanager
def timed_calls(owner: Any, name: str, seconds: list[float]) -> Iterator[None]:
    """Record the duration of every call of ``owner.name`` in ``seconds`` (the real function
    still runs); restore it afterwards."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def run_export(lake_root: Path) -> dict[str, Any]:
    """One ``HiveExtractOperator.execute`` of the whole bench table."""
    from mlops_airflow.hooks.hive import HiveWarehouseHook
    from mlops_airflow.operators.hive_extract import HiveExtractOperator

    operator = HiveExtractOperator(
        task_id="bench_extract",
        sources=[BENCH_EVENTS],
        dataset="bench/snapshots",
        ds=SNAPSHOT_DS,
        lookback_days=DAYS,
        lake_root=str(lake_root),
    )
    statement: list[float] = []
    hashing: list[float] = []
    with (
        timed_calls(HiveWarehouseHook, "export_parquet", statement),
        timed_calls(lake, "file_digests", hashing),
    ):
        started = time.perf_counter()
        uri = operator.execute({})
        seconds = time.perf_counter() - started
    box = lake.open_box(uri)
    files = lake.data_files(box.path(BENCH_EVENTS.alias))
    return {
        "seconds": seconds,
        "statement_s": sum(statement),
        "content_hash_s": sum(hashing),
        "files": len(files),
        "checksums": parquet_checksums(files),
    }


def run_get_df(out_dir: Path) -> dict[str, Any]:
    """The same rows through ``HiveServer2Hook.get_df``, written to one Parquet file."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from airflow.providers.apache.hive.hooks.hive import HiveServer2Hook

    bounds = BENCH_EVENTS.partition_range(SNAPSHOT_DS, DAYS)
    assert bounds is not None
    column = BENCH_EVENTS.partition_column
    # The statement HiveExtractOperator.export_table selects, so both read the same rows.
    query = hql.select_columns(
        BENCH_EVENTS.table, [*BENCH_EVENTS.column_names, column], column, *bounds
    )
    hook = HiveServer2Hook(hiveserver2_conn_id="hiveserver2_default")
    started = time.perf_counter()
    frame = hook.get_df(query, schema=DATABASE, df_type="pandas")
    fetched = time.perf_counter()
    # HiveServer2 sends timestamps as strings; cast to the table's types like the export has.
    for name, kind in BENCH_EVENTS.columns:
        if kind == "timestamp" and frame[name].dtype == object:
            frame[name] = pd.to_datetime(frame[name], format="ISO8601")
    table = pa.Table.from_pandas(frame, schema=arrow_schema(BENCH_EVENTS), preserve_index=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "events.parquet"
    pq.write_table(table, target)
    finished = time.perf_counter()
    del frame, table
    return {
        "seconds": finished - started,
        "fetch_s": fetched - started,
        "write_s": finished - fetched,
        "checksums": parquet_checksums([str(target)]),
    }


def measure_extraction(work: Path, repeat: int, hive: dict[str, Any], emit: Emit) -> dict[str, Any]:
    exports, pulls = [], []
    for attempt in range(repeat):
        order = ("export", "get_df") if attempt % 2 == 0 else ("get_df", "export")
        for method in order:
            if method == "export":
                exports.append(run_export(work / "lake"))
            else:
                pulls.append(run_get_df(work / "pulled"))
        export, pull = exports[-1], pulls[-1]
        emit(
            {
                "extract_repetition": attempt + 1,
                "order": list(order),
                "export_s": round(export["seconds"], 2),
                "export_statement_s": round(export["statement_s"], 2),
                "export_content_hash_s": round(export["content_hash_s"], 2),
                "get_df_s": round(pull["seconds"], 2),
                "get_df_fetch_s": round(pull["fetch_s"], 2),
                "get_df_write_s": round(pull["write_s"], 2),
            }
        )

    def median(samples: list[dict[str, Any]], key: str) -> float:
        return statistics.median(s[key] for s in samples)

    export_s = median(exports, "seconds")
    statement_s = median(exports, "statement_s")
    get_df_s = median(pulls, "seconds")
    matches = all(e["checksums"] == hive for e in exports) and all(
        p["checksums"] == hive for p in pulls
    )
    result: dict[str, Any] = {
        "rows": hive["rows"],
        "columns": len(BENCH_EVENTS.columns) + 1,
        "partitions": hive["days"],
        "repeat": repeat,
        "export_s": round(export_s, 2),
        "export_statement_s": round(statement_s, 2),
        "export_content_hash_s": round(median(exports, "content_hash_s"), 2),
        "export_checks_and_commit_s": round(
            statistics.median(
                e["seconds"] - e["statement_s"] - e["content_hash_s"] for e in exports
            ),
            2,
        ),
        "export_files": exports[-1]["files"],
        "get_df_s": round(get_df_s, 2),
        "get_df_fetch_s": round(median(pulls, "fetch_s"), 2),
        "get_df_write_s": round(median(pulls, "write_s"), 2),
        "export_samples_s": [round(e["seconds"], 2) for e in exports],
        "get_df_samples_s": [round(p["seconds"], 2) for p in pulls],
        "get_df_rows_per_s": round(hive["rows"] / get_df_s),
        "export_rows_per_s": round(hive["rows"] / export_s),
        "ratio_get_df_to_export": round(get_df_s / export_s, 2),
        "ratio_get_df_to_export_statement": round(get_df_s / statement_s, 2),
        "target_ratio_at_least": EXPORT_TARGET_RATIO,
        "target_met": get_df_s / export_s >= EXPORT_TARGET_RATIO,
        "results_match": matches,
        "hive_checksums": hive,
    }
    if not matches:
        result["checksums"] = {
            "export": [e["checksums"] for e in exports],
            "get_df": [p["checksums"] for p in pulls],
        }
    return result


# -- the run -------------------------------------------------------------------------------


def cleanup(server: HiveServer2 | None, port: int, work: Path) -> None:
    """Drop the bench database, stop the bench's own server (``None``: one it did not start),
    remove the data files (log and metastore stay)."""
    try:
        if server is None or (server.pid() is not None and server.port_open()):
            with hive_cursor(HOST, port) as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {hql.quote_identifier(DATABASE)} CASCADE")
    finally:
        if server is not None:
            server.stop()
        for name in ("load", "lake", "pulled", "hive/warehouse"):
            shutil.rmtree(work / name, ignore_errors=True)


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``, so the server is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-extract", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of bench.events")
    parser.add_argument(
        "--repeat", type=int, default=5, help="repetitions of each extraction (median)"
    )
    parser.add_argument("--port", type=int, default=10002, help="the bench's own HiveServer2")
    parser.add_argument(
        "--running-server",
        action="store_true",
        help="use the HiveServer2 already listening on --port instead of starting one",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")

    emit = json_output()
    work = local_root() / "bench" / "extract"
    server = None if args.running_server else HiveServer2(home=work / "hive", port=args.port)
    # The hooks and operators of this process reach the bench's server.
    os.environ["HIVESERVER2_PORT"] = str(args.port)
    os.environ["AIRFLOW_CONN_HIVESERVER2_DEFAULT"] = hiveserver2_connection_uri(args.port)
    signal.signal(signal.SIGTERM, on_sigterm)

    started = time.perf_counter()
    if server is not None:
        server.stop()  # one left by a killed run (its pid file is in the directory wiped next)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        begin = time.perf_counter()
        events = make_events(args.rows)
        generate_s = time.perf_counter() - begin
        begin = time.perf_counter()
        if server is not None:
            server.start(timeout=HIVE_START_TIMEOUT)
        start_s = time.perf_counter() - begin
        begin = time.perf_counter()
        hive = load_table(args.port, events, work / "load")
        load_s = time.perf_counter() - begin
        del events
        setup = {
            "generate_s": round(generate_s, 1),
            "hiveserver2_start_s": round(start_s, 1) if server is not None else None,
            "load_s": round(load_s, 1),
            "table": str(BENCH_EVENTS.table),
            **hive,
        }
        emit({"setup": setup})
        extraction = measure_extraction(work, args.repeat, hive, emit)
        emit({"extraction": extraction})
    finally:
        cleanup(server, args.port, work)
    emit(
        {
            "benchmark": "extract",
            "cores": os.cpu_count(),
            "setup": setup,
            "extraction": extraction,
            "wall_s": round(time.perf_counter() - started, 1),
        }
    )
    if not extraction["results_match"]:
        print("extract: an output does not match Hive's own figures", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
