"""Benchmark the extraction stage and the import time of the training DAG, side by side in one run.

Extraction, on one ``raw.events``-shaped Hive table (``bench.events``: the events contract's
columns plus session, device, app version, country and duration; ``ds`` partitions of 120 days;
``--rows`` rows made from ``mlops_jobs.demo.generator``, loaded through Parquet and
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

DAG import time, each DAG file in fresh interpreters with the local stack's environment: (1)
``import airflow`` (timed apart); (2) the ``airflow.*`` modules the DAG file names
(``iter_airflow_imports``, as the processor pre-imports them before forking its parsing child
when ``parsing_pre_import_modules`` is on); (3) the file executed as the DagBag's importer does
(``SourceFileLoader`` under ``get_unique_dag_module_name``). Compared between
``dags/churn_training.py`` and a one-task DAG (``EmptyOperator``), three ways:
``ratio_churn_training_to_trivial_with_airflow_import`` is (1) + (2) + (3), what a fresh
interpreter pays for each file (the target's measure); ``ratio_churn_training_to_trivial`` is
(2) + (3) alone, what the file adds beyond ``import airflow``; ``..._in_processor`` is (2) + (3)
in an interpreter that first imports ``airflow.dag_processing.processor``, what the processor's
parsing child (forked from a parent that holds those modules) pays per parse. Both files are
copied into the bench's directory, so their bytecode caches are written there, and each is
imported once before the timed repetitions so both run from compiled bytecode.

Everything lives under ``<local root>/bench/extract`` (wiped at the start), with a HiveServer2 of
its own on ``--port`` (default 10002) that the bench starts and stops, also on error; at the end
the bench database is dropped and the data files removed (the server's log and metastore stay).
Prints one JSON line per measurement; the last line is one JSON object with everything.

Usage: ``python bench/extract.py [--rows 1000000] [--repeat 5] [--import-repeat 7]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT / "plugins")]

from mlops_jobs import hql, lake  # noqa: E402
from mlops_jobs.churn.tables import EVENTS  # noqa: E402
from mlops_jobs.contracts import PartitionWindow, TableContract  # noqa: E402
from mlops_jobs.demo.generator import DemoSpec, generate  # noqa: E402
from mlops_jobs.demo.warehouse import arrow_schema, hive_cursor  # noqa: E402
from mlops_jobs.hql import TableName  # noqa: E402
from mlops_jobs.localstack.env import hiveserver2_connection_uri, local_root  # noqa: E402
from mlops_jobs.localstack.hiveserver2 import HiveServer2  # noqa: E402

Emit = Callable[[dict[str, Any]], None]

HOST = "127.0.0.1"
DATABASE = "bench"
DAYS = 120
END_DS = "2026-03-01"
SNAPSHOT_DS = "2026-03-02"  # the day after the last partition: its lookback covers all of them
EVENTS_PER_CUSTOMER = 147.0  # measured mean of the demo generator over 120 days
HIVE_START_TIMEOUT = 900.0
EXPORT_TARGET_RATIO = 5.0
IMPORT_TARGET_RATIO = 1.5

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

TRIVIAL_DAG = '''"""One task, nothing else: the baseline of the import-time benchmark."""

import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(
    dag_id="bench_trivial",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
) as dag:
    EmptyOperator(task_id="noop")
'''

IMPORT_PROBE = """
import importlib, importlib.machinery, importlib.util, json, sys, time

path, mode = sys.argv[1], sys.argv[2]
started = time.perf_counter()
import airflow
if mode == "processor":
    # What the DAG processor's parsing child inherits from the parent it forks from.
    import airflow.dag_processing.processor
airflow_s = time.perf_counter() - started

from airflow.utils.file import get_unique_dag_module_name, iter_airflow_imports

modules = list(iter_airflow_imports(path))
started = time.perf_counter()
for module in modules:
    importlib.import_module(module)
preimport_s = time.perf_counter() - started

name = get_unique_dag_module_name(path)
started = time.perf_counter()
loader = importlib.machinery.SourceFileLoader(name, path)
spec = importlib.util.spec_from_loader(name, loader)
dag_module = importlib.util.module_from_spec(spec)
sys.modules[name] = dag_module
loader.exec_module(dag_module)
parse_s = time.perf_counter() - started

from airflow.sdk import DAG

dags = sorted(v.dag_id for v in vars(dag_module).values() if isinstance(v, DAG))
print(json.dumps({"airflow_import_s": airflow_s, "preimport_s": preimport_s,
                  "parse_s": parse_s, "dags": dags}))
"""


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


# -- DAG import time -----------------------------------------------------------------------


def import_once(path: Path, mode: str = "fresh") -> dict[str, Any]:
    """One fresh interpreter importing the DAG file (``IMPORT_PROBE``); its timings. ``mode``
    ``processor`` first imports what the DAG processor's parsing child already holds."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(path), mode],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=path.parent,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {path.name} failed:\n{result.stderr[-3000:]}")
    timings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if not timings["dags"]:
        raise RuntimeError(f"{path.name} defined no DAG")
    timings["import_s"] = timings["preimport_s"] + timings["parse_s"]
    return timings


def measure_imports(dag_dir: Path, repeat: int, emit: Emit) -> dict[str, Any]:
    dag_dir.mkdir(parents=True)
    files = {
        "churn_training": dag_dir / "churn_training.py",
        "trivial": dag_dir / "bench_trivial.py",
    }
    shutil.copyfile(ROOT / "dags" / "churn_training.py", files["churn_training"])
    files["trivial"].write_text(TRIVIAL_DAG)
    for path in files.values():
        import_once(path)  # writes the bytecode cache; not timed
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in files}
    in_processor: dict[str, list[dict[str, Any]]] = {name: [] for name in files}
    for attempt in range(repeat):
        names = list(files) if attempt % 2 == 0 else list(reversed(files))
        for name in names:
            samples[name].append(import_once(files[name]))
            in_processor[name].append(import_once(files[name], "processor"))
        emit(
            {
                "import_repetition": attempt + 1,
                **{
                    f"{name}_{key}": round(samples[name][-1][key], 3)
                    for name in files
                    for key in ("import_s", "parse_s", "airflow_import_s")
                },
            }
        )

    def median(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    churn, trivial = median("churn_training", "import_s"), median("trivial", "import_s")
    # Both files pay the same ``import airflow``: one median over all interpreters.
    airflow_s = statistics.median(s["airflow_import_s"] for v in samples.values() for s in v)
    fresh = (churn + airflow_s) / (trivial + airflow_s)
    processor = {
        name: statistics.median(s["import_s"] for s in runs) for name, runs in in_processor.items()
    }
    return {
        "repeat": repeat,
        "airflow_import_s": round(airflow_s, 3),
        "churn_training_import_s": round(churn, 3),
        "trivial_import_s": round(trivial, 3),
        "churn_training_parse_s": round(median("churn_training", "parse_s"), 3),
        "trivial_parse_s": round(median("trivial", "parse_s"), 3),
        "churn_training_import_samples_s": [
            round(s["import_s"], 3) for s in samples["churn_training"]
        ],
        "trivial_import_samples_s": [round(s["import_s"], 3) for s in samples["trivial"]],
        "churn_training_in_processor_s": round(processor["churn_training"], 3),
        "trivial_in_processor_s": round(processor["trivial"], 3),
        # The target's measure: each file imported by a fresh interpreter, as a whole.
        "ratio_churn_training_to_trivial_with_airflow_import": round(fresh, 2),
        # Stricter: only what the file adds beyond ``import airflow``, or beyond what the DAG
        # processor's parsing child already holds.
        "ratio_churn_training_to_trivial": round(churn / trivial, 2),
        "ratio_churn_training_to_trivial_in_processor": round(
            processor["churn_training"] / processor["trivial"], 2
        ),
        "target_ratio_below": IMPORT_TARGET_RATIO,
        "target_met": fresh < IMPORT_TARGET_RATIO,
    }


# -- the run -------------------------------------------------------------------------------


def cleanup(server: HiveServer2, work: Path) -> None:
    """Drop the bench database, stop the server, remove the data files (log and metastore stay)."""
    try:
        if server.pid() is not None and server.port_open():
            with hive_cursor(HOST, server.port) as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {hql.quote_identifier(DATABASE)} CASCADE")
    finally:
        server.stop()
        for name in ("load", "lake", "pulled", "dags", "hive/warehouse"):
            shutil.rmtree(work / name, ignore_errors=True)


def json_output() -> Emit:
    """Keep the process's stdout for the JSON lines alone and return the function that writes
    them; everything else written to stdout (the Airflow and pyhive loggers, the server's start
    message) goes to stderr from now on."""
    sys.stdout.flush()
    # The loggers hold on to the stdout they were configured with, so the file descriptor itself
    # is moved rather than ``sys.stdout``.
    output = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def emit(record: dict[str, Any]) -> None:
        output.write(json.dumps(record) + "\n")
        output.flush()

    return emit


def on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``, so the server is stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-extract", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of bench.events")
    parser.add_argument(
        "--repeat", type=int, default=5, help="repetitions of each extraction (median)"
    )
    parser.add_argument(
        "--import-repeat", type=int, default=7, help="fresh interpreters per DAG file"
    )
    parser.add_argument("--port", type=int, default=10002, help="the bench's own HiveServer2")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1 or args.import_repeat < 1:
        parser.error("--rows, --repeat and --import-repeat must be at least 1")

    emit = json_output()
    work = local_root() / "bench" / "extract"
    server = HiveServer2(home=work / "hive", port=args.port)
    # The hooks and operators of this process (and the import probes) reach the bench server.
    os.environ["HIVESERVER2_PORT"] = str(args.port)
    os.environ["AIRFLOW_CONN_HIVESERVER2_DEFAULT"] = hiveserver2_connection_uri(args.port)
    signal.signal(signal.SIGTERM, on_sigterm)

    started = time.perf_counter()
    server.stop()  # one left by a killed run (its pid file is in the directory wiped next)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        begin = time.perf_counter()
        events = make_events(args.rows)
        generate_s = time.perf_counter() - begin
        begin = time.perf_counter()
        server.start(timeout=HIVE_START_TIMEOUT)
        start_s = time.perf_counter() - begin
        begin = time.perf_counter()
        hive = load_table(args.port, events, work / "load")
        load_s = time.perf_counter() - begin
        del events
        setup = {
            "generate_s": round(generate_s, 1),
            "hiveserver2_start_s": round(start_s, 1),
            "load_s": round(load_s, 1),
            "table": str(BENCH_EVENTS.table),
            **hive,
        }
        emit({"setup": setup})
        extraction = measure_extraction(work, args.repeat, hive, emit)
        emit({"extraction": extraction})
        imports = measure_imports(work / "dags", args.import_repeat, emit)
        emit({"dag_import": imports})
    finally:
        cleanup(server, work)
    emit(
        {
            "benchmark": "extract",
            "cores": os.cpu_count(),
            "setup": setup,
            "extraction": extraction,
            "dag_import": imports,
            "wall_s": round(time.perf_counter() - started, 1),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
