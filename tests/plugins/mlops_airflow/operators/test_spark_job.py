"""SparkJobOperator on both backends: local spark-submit, and Databricks through the emulator.

The Databricks tests run the provider's real ``DatabricksHook`` (and, deferred, its real
``DatabricksExecutionTrigger``) against an HTTP emulator of the Jobs and DBFS APIs that executes
the uploaded wheel for real.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from mlops_airflow.compute.databricks import idempotency_token
from mlops_airflow.exceptions import InvalidParameterError, JobInputError, SparkJobError
from mlops_airflow.operators.spark_job import SparkJobOperator
from mlops_jobs import lake
from mlops_jobs.distribution import source_hash
from mlops_localstack.databricks_emulator import DatabricksEmulator, HttpFault
from tests.support import FakeTI, databricks_emulator

CLUSTER = {"new_cluster": {"spark_version": "16.4.x-scala2.12", "num_workers": 1}}


@pytest.fixture(autouse=True)
def lake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lake"
    monkeypatch.setenv("MLOPS_LAKE_ROOT", str(root))
    return root


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksEmulator]:
    with databricks_emulator(tmp_path / "databricks", monkeypatch, pending_seconds=0.2) as emulator:
        yield emulator


class StateStore(dict[str, Any]):
    """The task state store's interface (``get``/``set``), kept across a task's tries."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key, default)

    def set(self, key: str, value: Any) -> None:
        self[key] = value


def operator(job: str = "version", *arguments: str, **kwargs: Any) -> SparkJobOperator:
    defaults: dict[str, Any] = {
        "task_id": "build_features",
        "job": job,
        "arguments": list(arguments),
        "databricks_cluster": CLUSTER,
        "polling_period_seconds": 0.2,
        "databricks_retry_limit": 3,
        "databricks_retry_delay": 0.1,
    }
    return SparkJobOperator(**{**defaults, **kwargs})


def context(ti: FakeTI | None = None, store: StateStore | None = None) -> Any:
    values: dict[str, Any] = {"ti": ti or FakeTI(), "ds": "2026-03-01"}
    if store is not None:
        values["task_state_store"] = store
    return values


def features_args(snapshot: str | Path, output: str | Path) -> list[str]:
    return ["--snapshot", lake.normalize(snapshot), "--output", lake.normalize(output)]


def run_specification(op: SparkJobOperator, wheel: str = "x.whl") -> dict[str, Any]:
    """The ``runs/submit`` request the operator's Databricks backend makes with ``wheel``."""
    return op.databricks_job().run_specification(context(), op.job_arguments(context()), wheel)


def submits(emulator: DatabricksEmulator) -> int:
    return len([p for m, p in emulator.requests if p.endswith("runs/submit")])


VERSION = {"package": "mlops_jobs", "source_hash": source_hash()}


# -- local backend ----------------------------------------------------------------------------


def test_local_feature_job_and_databricks_run_publish_identical_output(
    demo_snapshot: str, lake_root: Path, emulator: DatabricksEmulator
) -> None:
    local_out = lake_root / "local" / "churn" / "features" / "ds=2026-03-01"
    result = operator(
        "churn-features", *features_args(demo_snapshot, local_out), backend="local"
    ).execute(context())
    local_manifest = lake.read_manifest(local_out)
    assert result["content_hash"] == local_manifest["content_hash"]
    assert result["output"] == lake.open_box(local_out).uri
    assert sum(s["rows"] for s in local_manifest["splits"].values()) == 150
    assert (
        local_manifest["snapshot"]["content_hash"]
        == lake.read_manifest(demo_snapshot)["content_hash"]
    )

    remote_out = lake_root / "remote" / "churn" / "features" / "ds=2026-03-01"
    ti = FakeTI()
    result = operator(
        "churn-features",
        *features_args(demo_snapshot, remote_out),
        backend="databricks",
        # DAG params are not the job's: they must not reach the run as named parameters
        params={"promotion_thresholds": {"floor": 0.7}},
    ).execute(context(ti))
    remote_manifest = lake.read_manifest(remote_out)
    assert result["content_hash"] == remote_manifest["content_hash"]
    assert remote_manifest["content_hash"] == local_manifest["content_hash"]
    assert remote_manifest["splits"] == local_manifest["splits"]
    run = emulator.runs[ti.xcom["run_id"]]
    assert ti.xcom["run_page_url"] == f"{emulator.url}/?o=0#job/{run.run_id}/run/1"
    assert run.life_cycle_state == "TERMINATED" and run.result_state == "SUCCESS"
    task = run.request["tasks"][0]
    assert task["python_wheel_task"]["entry_point"] == "mlops-job"
    parameters = task["python_wheel_task"]["parameters"]
    assert "named_parameters" not in task["python_wheel_task"]
    assert parameters[0] == "--result-uri" and parameters[2] == "churn-features"
    assert task["libraries"][0]["whl"].startswith("/Volumes/")
    assert task["libraries"][0]["whl"].endswith(f"+src.{source_hash()}-py3-none-any.whl")
    env = task["new_cluster"]["spark_env_vars"]
    assert env["MLOPS_LAKE_ROOT"] == lake.normalize(lake_root)
    assert env["MLFLOW_TRACKING_URI"] and "MLOPS_LAKE_MOUNTS" not in env
    assert int(run.request["timeout_seconds"]) == 4 * 3600
    assert run.request["idempotency_token"] == idempotency_token(context(ti))


@pytest.mark.faults
def test_local_failure_reports_the_jobs_error(lake_root: Path) -> None:
    missing = lake_root / "churn" / "snapshots" / "ds=2026-03-01"
    out = lake_root / "churn" / "features" / "ds=2026-03-01"
    with pytest.raises(JobInputError) as raised:
        operator("churn-features", *features_args(missing, out), backend="local").execute(context())
    assert isinstance(raised.value, AirflowFailException)  # bad input: no retry
    message = str(raised.value)
    assert "job 'churn-features' refused its input" in message
    assert f"snapshot {lake.normalize(missing)}" in message
    assert "_committed.json is missing" in message
    assert not out.exists()


def test_exit_code_2_without_a_refusal_stays_retryable(lake_root: Path) -> None:
    """spark-submit and argparse exit 2 too: only a refusal the job wrote is final."""
    with pytest.raises(SparkJobError) as raised:
        operator("churn-features", "--no-such-option", backend="local").execute(context())
    assert not isinstance(raised.value, AirflowFailException)
    assert "exit code 2" in str(raised.value)


def test_local_job_gets_only_the_job_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgresql://user:secret@db/warehouse")
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:pw@db/airflow")
    monkeypatch.setenv("MLOPS_LAKE_KEEP_VERSIONS", "5")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    env = operator(backend="local").local_environment()
    assert not [k for k in env if k.startswith("AIRFLOW")]
    assert env["MLOPS_LAKE_KEEP_VERSIONS"] == "5" and env["MLOPS_LAKE_ROOT"]
    assert env["MLFLOW_TRACKING_URI"] and env["PYTHONPATH"].endswith("include")
    # the job's MLflow client retries as the worker's does
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"


def test_an_output_outside_the_lake_root_is_refused(demo_snapshot: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "ds=2026-03-01"
    with pytest.raises(SparkJobError, match="outside the lake root"):
        operator("churn-features", *features_args(demo_snapshot, outside), backend="local").execute(
            context()
        )
    assert not outside.exists()


@pytest.mark.faults
def test_on_kill_terminates_the_local_process_group(demo_snapshot: str, lake_root: Path) -> None:
    out = lake_root / "churn" / "features" / "ds=2026-03-01"
    op = operator("churn-features", *features_args(demo_snapshot, out), backend="local")
    thread, errors = execute_in_thread(op)
    deadline = time.monotonic() + 120
    while op._local is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    op.on_kill()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert op._local is not None and not op._local.running()
    assert errors and isinstance(errors[0], SparkJobError)
    assert not (out / lake.POINTER).exists()


# -- databricks backend -------------------------------------------------------------------------


@pytest.mark.faults
@pytest.mark.parametrize("status", [429, 503])
def test_transient_http_errors_are_retried_by_the_hook(
    emulator: DatabricksEmulator, status: int
) -> None:
    emulator.faults.http = [
        HttpFault("runs/submit", status, 2),
        HttpFault("runs/get", status, 1),
    ]
    assert operator(backend="databricks").execute(context()) == VERSION
    assert submits(emulator) == 3  # two injected failures, then the real submit
    assert len(emulator.runs) == 1


def test_wheel_is_uploaded_once_per_version(emulator: DatabricksEmulator) -> None:
    operator(backend="databricks").execute(context())
    operator(backend="databricks").execute(context(FakeTI(try_number=2)))
    uploads = [p for m, p in emulator.requests if m == "PUT" and "/fs/files/" in p]
    assert len(uploads) == 1 and len(emulator.runs) == 2


@pytest.mark.faults
def test_retry_reattaches_to_the_run_its_first_try_started(emulator: DatabricksEmulator) -> None:
    """Try 1 submits, then loses the Databricks API while the run goes on (an outage, or a
    worker that dies); try 2 finds the run id in the task state store and waits for that run."""
    emulator.faults.start_delay_seconds = 3
    emulator.faults.http = [HttpFault("runs/get", 503, 50)]
    store = StateStore()
    with pytest.raises(AirflowException):
        operator(backend="databricks").execute(context(FakeTI(), store))
    (first,) = store.values()  # the run id, under a key per clearing of the DAG run
    assert emulator.runs[first].life_cycle_state in {"PENDING", "RUNNING"}
    emulator.faults.http = []
    ti = FakeTI(try_number=2)
    files_before = [r for r in emulator.requests if "/fs/" in r[1]]
    assert operator(backend="databricks").execute(context(ti, store)) == VERSION
    assert submits(emulator) == 1 and ti.xcom["run_id"] == first
    # reattaching builds and uploads nothing: the package is the submitting try's
    assert [r for r in emulator.requests if "/fs/" in r[1]] == files_before


def test_retry_after_success_returns_the_result_without_a_new_run(
    emulator: DatabricksEmulator,
) -> None:
    store = StateStore()
    operator(backend="databricks").execute(context(FakeTI(), store))
    ti = FakeTI(try_number=2)
    assert operator(backend="databricks").execute(context(ti, store)) == VERSION
    assert submits(emulator) == 1


@pytest.mark.faults
def test_a_crash_between_submit_and_storing_the_id_gets_the_same_run(
    emulator: DatabricksEmulator,
) -> None:
    class CrashingStore(StateStore):
        def set(self, key: str, value: Any) -> None:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        operator(backend="databricks").execute(context(FakeTI(), CrashingStore()))
    assert operator(backend="databricks").execute(context(FakeTI(try_number=2), StateStore()))
    assert len(emulator.runs) == 1  # runs/submit returned the first run for the same token


@pytest.mark.faults
def test_retry_after_a_failed_run_submits_a_new_one(emulator: DatabricksEmulator) -> None:
    emulator.faults.run_result = "FAILED"
    store = StateStore()
    with pytest.raises(AirflowException, match="injected job failure"):
        operator(backend="databricks").execute(context(FakeTI(), store))
    emulator.faults.run_result = None
    assert operator(backend="databricks").execute(context(FakeTI(try_number=2), store)) == VERSION
    assert len(emulator.runs) == 2


@pytest.mark.faults
@pytest.mark.parametrize("deferrable", [False, True])
def test_failed_run_raises_with_page_url_and_error_output(
    emulator: DatabricksEmulator, lake_root: Path, deferrable: bool
) -> None:
    missing = lake_root / "no-snapshot"
    op = operator(
        "churn-features",
        *features_args(missing, lake_root / "out"),
        backend="databricks",
        deferrable=deferrable,
    )
    ti = FakeTI()
    with pytest.raises(JobInputError) as raised:
        run_to_completion(op, ti)
    assert isinstance(raised.value, AirflowFailException)  # bad input: no retry
    message = str(raised.value)
    assert "job 'churn-features' refused its input" in message
    assert "TERMINATED" in message and "FAILED" in message
    assert "_committed.json is missing" in message  # the job's own error output
    (run_id,) = emulator.runs
    assert f"Run page: {emulator.url}/?o=0#job/{run_id}/run/1" in message


@pytest.mark.faults
@pytest.mark.parametrize("deferrable", [False, True])
def test_internal_error_fails_the_task(emulator: DatabricksEmulator, deferrable: bool) -> None:
    emulator.faults.run_result = "INTERNAL_ERROR"
    with pytest.raises(AirflowException, match="Cluster terminated unexpectedly") as raised:
        run_to_completion(operator(backend="databricks", deferrable=deferrable), FakeTI())
    assert not isinstance(raised.value, AirflowFailException)  # a platform failure may heal
    assert f"Run page: {emulator.url}/?o=0#job/" in str(raised.value)


@pytest.mark.parametrize("deferrable", [False, True])
def test_successful_run_returns_the_job_result(
    emulator: DatabricksEmulator, deferrable: bool
) -> None:
    assert run_to_completion(operator(backend="databricks", deferrable=deferrable), FakeTI()) == (
        VERSION
    )


def test_results_of_long_finished_runs_expire(
    emulator: DatabricksEmulator, lake_root: Path
) -> None:
    old = lake_root / "_results" / "churn_training" / "ds=2026-01-01" / "train_model" / "x.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    op = operator(backend="databricks")
    assert run_to_completion(op, FakeTI()) == VERSION
    assert not old.exists()
    assert Path(lake.locate(op.result_location(context())).path).exists()


@pytest.mark.faults
def test_on_kill_cancels_the_databricks_run(emulator: DatabricksEmulator) -> None:
    emulator.faults.start_delay_seconds = 60
    op = operator(backend="databricks")
    thread, errors = execute_in_thread(op)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        op.run_id and emulator.runs[op.run_id].life_cycle_state == "RUNNING"
    ):
        time.sleep(0.05)
    op.on_kill()
    thread.join(timeout=30)
    run = emulator.runs[op.run_id]  # type: ignore[index]
    assert (run.life_cycle_state, run.result_state) == ("TERMINATED", "CANCELED")
    assert ("POST", "/api/2.2/jobs/runs/cancel") in emulator.requests
    assert errors and "CANCELED" in str(errors[0])


def test_killing_a_deferred_task_cancels_the_run(emulator: DatabricksEmulator) -> None:
    emulator.faults.start_delay_seconds = 60
    with pytest.raises(TaskDeferred) as deferred:
        operator(backend="databricks", deferrable=True).execute(context())
    run_id = deferred.value.trigger.serialize()[1]["run_id"]
    asyncio.run(deferred.value.trigger.on_kill())  # what the triggerer does on a user's kill
    deadline = time.monotonic() + 30
    while emulator.runs[run_id].result_state is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.runs[run_id].result_state == "CANCELED"


@pytest.mark.faults
def test_connection_refused_fails_after_the_hooks_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_DATABRICKS_DEFAULT",
        json.dumps(
            {
                "conn_type": "databricks",
                "host": "127.0.0.1",
                "port": port,
                "schema": "http",
                "password": "x",
            }
        ),
    )
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        operator(backend="databricks").execute(context())


def test_deferral_hands_the_provider_trigger_everything_it_needs(
    emulator: DatabricksEmulator,
) -> None:
    with pytest.raises(TaskDeferred) as deferred:
        operator(backend="databricks", deferrable=True).execute(context())
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith("DatabricksExecutionTrigger")
    assert kwargs["run_id"] in emulator.runs
    assert kwargs["databricks_conn_id"] == "databricks_default"
    assert kwargs["run_page_url"].startswith(emulator.url)
    assert deferred.value.method_name == "execute_complete"


def test_run_specification_carries_settings_and_secret_references(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = operator(
        cluster_environment={"MLFLOW_TRACKING_TOKEN": "{{secrets/mlops/mlflow-token}}"},
        params={"promotion_thresholds": {"floor": 0.7}},
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    spec = run_specification(op, "/Volumes/main/mlops/artifacts/wheels/x.whl")
    env = spec["tasks"][0]["new_cluster"]["spark_env_vars"]
    assert env["MLFLOW_TRACKING_TOKEN"] == "{{secrets/mlops/mlflow-token}}"
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    with pytest.raises(InvalidParameterError, match="MLFLOW_TRACKING_TOKEN must be a Databricks"):
        run_specification(operator(cluster_environment={"MLFLOW_TRACKING_TOKEN": "dapi123"}))


def test_an_existing_cluster_gets_the_settings_as_job_arguments() -> None:
    op = operator(backend="databricks", databricks_cluster={"existing_cluster_id": "0101-abc"})
    parameters = run_specification(op)["tasks"][0]["python_wheel_task"]["parameters"]
    settings = [parameters[i + 1] for i, p in enumerate(parameters) if p == "--setting"]
    assert any(s.startswith("MLOPS_LAKE_ROOT=") for s in settings)
    assert parameters[parameters.index("version") - 1].startswith("MLFLOW_TRACKING_URI=") or any(
        s.startswith("MLFLOW_TRACKING_URI=") for s in settings
    )
    with pytest.raises(InvalidParameterError, match="existing cluster cannot receive"):
        run_specification(
            operator(
                backend="databricks",
                databricks_cluster={"existing_cluster_id": "0101-abc"},
                cluster_environment={"MLFLOW_TRACKING_TOKEN": "{{secrets/mlops/token}}"},
            )
        )


def test_token_and_result_location_are_per_clearing() -> None:
    class DagRun:
        clear_number = 0

    store = StateStore()
    first = context(FakeTI(), store)
    first["dag_run"] = DagRun()
    retry = context(FakeTI(try_number=2), store)
    retry["dag_run"] = DagRun()
    assert idempotency_token(first) == idempotency_token(retry)  # durable: the same submission
    assert idempotency_token(first, durable=False) != idempotency_token(retry, durable=False)
    assert operator().result_location(first) == operator().result_location(retry)
    cleared = DagRun()
    cleared.clear_number = 1
    retry["dag_run"] = cleared
    assert idempotency_token(first) != idempotency_token(retry)
    # nor does a cleared task read the result (or the refusal) of the run before the clearing
    assert operator().result_location(first) != operator().result_location(retry)


def test_bad_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_DATABRICKS_CLUSTER", raising=False)
    with pytest.raises(InvalidParameterError, match="mlops_databricks_cluster"):
        run_specification(operator(databricks_cluster=None), "dbfs:/x.whl")
    with pytest.raises(InvalidParameterError, match="unknown compute backend 'emr'"):
        operator(backend="emr").execute(context())
    with pytest.raises(InvalidParameterError, match=r"result_uri: .* outside the lake root"):
        operator(result_uri="/tmp/elsewhere.json").result_location(context())


def execute_in_thread(op: SparkJobOperator) -> tuple[threading.Thread, list[BaseException]]:
    """Start ``op.execute`` in a thread (so the test can kill it); errors are collected."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute(context())
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def run_to_completion(op: SparkJobOperator, ti: FakeTI) -> Any:
    """Execute; when the operator defers, run the provider's trigger and resume like Airflow."""
    try:
        return op.execute(context(ti))
    except TaskDeferred as deferred:
        event = asyncio.run(_first_event(deferred.trigger))
        return getattr(op, deferred.method_name)(context(ti), event.payload)


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event
    raise AssertionError("trigger ended without an event")
