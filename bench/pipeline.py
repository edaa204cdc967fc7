"""Benchmark the lifecycle as a user runs it: ``airflow dags test`` of churn_training and then
churn_batch_scoring on the loaded demo warehouse, with the time of every task and the fixed
start-up inside them, measured side by side in the same run:

- ``spark_submit_s``: a ``spark-submit`` of a job that only starts its Spark session and runs
  one trivial query (JVM, SparkContext, Python workers), paid once by every Spark task;
- ``tensorflow_import_s``: importing TensorFlow with tf-keras, paid by every process that trains,
  evaluates or scores (each training worker, the evaluation driver, each scoring worker);
- ``dags_test_overhead_s``: the ``airflow dags test`` wall time not spent inside any task
  (interpreter and Airflow start, DAG parsing and sync, the scheduling loop).

Needs the local stack (``make bench-pipeline`` starts HiveServer2 and loads the demo first).
Prints one JSON line per measurement; the last line is one JSON object with everything.

Usage: ``python bench/pipeline.py [--ds YYYY-MM-DD] [--conf JSON]`` (default day: yesterday, UTC,
as ``make run``; ``--conf``: churn_training Params over the benchmark's)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPARK_TASKS = {"build_features", "train_model", "evaluate_model", "score"}
TENSORFLOW_PROCESSES = {"train_model": 3, "evaluate_model": 1, "score": 1}  # driver + 2 workers


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - started, result


def dags_test(dag_id: str, ds: str, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the DAG with ``airflow dags test``; wall time and per-task durations."""
    command = [sys.executable, "-m", "airflow", "dags", "test", dag_id, ds]
    if conf:
        command += ["-c", json.dumps(conf)]
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    wall, result = timed(command)
    if result.returncode != 0:
        raise SystemExit(f"{dag_id} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    run_id = started_run_id(dag_id, ds, started)
    tasks = task_durations(dag_id, run_id)
    if sum(tasks.values()) > wall:
        raise SystemExit(f"{dag_id} run {run_id}: its tasks took longer than the whole run")
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "wall_s": round(wall, 1),
        "tasks_s": tasks,
        "tasks_total_s": round(sum(tasks.values()), 1),
        "dags_test_overhead_s": round(wall - sum(tasks.values()), 1),
    }


def started_run_id(dag_id: str, ds: str, not_before: dt.datetime) -> str:
    """The id of the run that ``airflow dags test <dag> <ds>`` started: it replaces any earlier
    run of that logical date, and its id carries its own start, so a run found here that was
    created before ``not_before`` is someone else's and fails the benchmark."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    logical_date = dt.datetime.fromisoformat(ds).replace(tzinfo=dt.UTC)
    with create_session() as session:
        run = (
            session.query(DagRun)
            .filter(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
            .one_or_none()
        )
        if run is None or run.run_after < not_before:
            raise SystemExit(f"the run of {dag_id} for {ds} that the benchmark started is missing")
        return str(run.run_id)


def task_durations(dag_id: str, run_id: str) -> dict[str, float]:
    """Durations of the tasks of the run ``run_id``, from Airflow's metadata database; fails
    when a task did not run (a stale run read by mistake shows as tasks without durations)."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        instances = (
            session.query(TaskInstance)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .all()
        )
        if not instances:
            raise SystemExit(f"no task instances of {dag_id} run {run_id} found")
        ran = [ti for ti in instances if ti.state != "skipped"]
        missing = sorted(ti.task_id for ti in ran if ti.duration is None)
        if missing:
            raise SystemExit(f"{dag_id} run {run_id}: no duration for {', '.join(missing)}")
        return {
            ti.task_id: round(float(ti.duration), 1)
            for ti in sorted(ran, key=lambda t: t.start_date)
        }


def spark_submit_startup() -> float:
    """Wall time of a job that starts its Spark session and runs one trivial query."""
    from pyspark.find_spark_home import _find_spark_home

    spark_submit = str(Path(_find_spark_home()) / "bin" / "spark-submit")
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text(
            "from mlops_jobs.spark.session import get_spark\n"
            "get_spark('startup-probe').range(1).count()\n"
        )
        wall, result = timed(
            [spark_submit, "--master", "local[2]", "--conf", "spark.ui.enabled=false", str(probe)]
        )
    if result.returncode != 0:
        raise SystemExit(f"spark-submit failed: {result.stderr[-2000:]}")
    return wall


def tensorflow_import() -> float:
    code = (
        "import time; t = time.perf_counter(); import tensorflow, tf_keras;"
        "print(time.perf_counter() - t)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return float(result.stdout.strip().splitlines()[-1])


def startup_share(run: dict[str, Any], spark_s: float, tf_s: float) -> dict[str, Any]:
    """Fixed start-up inside each task (Spark and TensorFlow start), and the run's total share."""
    per_task = {}
    for task, seconds in run["tasks_s"].items():
        fixed = (spark_s if task in SPARK_TASKS else 0.0) + tf_s * TENSORFLOW_PROCESSES.get(task, 0)
        if task == "train_model":
            fixed = spark_s + tf_s  # workers import in parallel: one import on the critical path
        per_task[task] = {"seconds": seconds, "fixed_startup_s": round(min(fixed, seconds), 1)}
    fixed_total = sum(t["fixed_startup_s"] for t in per_task.values()) + run["dags_test_overhead_s"]
    return {
        **run,
        "tasks": per_task,
        "fixed_startup_s": round(fixed_total, 1),
        "fixed_startup_share": round(fixed_total / run["wall_s"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-pipeline", description=__doc__)
    # the demo's last day, as in `make run` (yesterday, UTC)
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    parser.add_argument("--ds", default=yesterday.isoformat())
    parser.add_argument(
        "--conf",
        type=json.loads,
        default={},
        help="churn_training Params over the benchmark's (JSON), e.g. a smaller model",
    )
    args = parser.parse_args(argv)

    spark_s = spark_submit_startup()
    print(json.dumps({"spark_submit_s": round(spark_s, 1)}), flush=True)
    tf_s = tensorflow_import()
    print(json.dumps({"tensorflow_import_s": round(tf_s, 1)}), flush=True)
    # Promotion is forced so that scoring always has a champion to run with; the gate's
    # figures are still computed and recorded.
    training = startup_share(
        dags_test(
            "churn_training",
            args.ds,
            # retrain: a version trained on the same inputs would otherwise be reused
            {
                "label_ds": args.ds,
                "force_promote": True,
                "force_reason": "benchmark",
                "retrain": True,
                **args.conf,
            },
        ),
        spark_s,
        tf_s,
    )
    print(json.dumps(training), flush=True)
    scoring = startup_share(dags_test("churn_batch_scoring", args.ds), spark_s, tf_s)
    print(json.dumps(scoring), flush=True)
    print(
        json.dumps(
            {
                "ds": args.ds,
                "startup_probes": {
                    "spark_submit_s": round(spark_s, 1),
                    "tensorflow_import_s": round(tf_s, 1),
                },
                "churn_training": training,
                "churn_batch_scoring": scoring,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
