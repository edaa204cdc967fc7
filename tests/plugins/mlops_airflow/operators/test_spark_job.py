"""SparkJobOperator on both backends: local spark-submit, and Databricks through the emulator.

The Databricks tests run the provider's real ``DatabricksHook`` (and, deferred, its real
``DatabricksExecutionTrigger``) against an HTTP emulator of the Jobs and DBFS APIs that executes
the uploaded wheel for real.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from airflow.sdk.exceptions import TaskDeferred

from mlops_airflow.exceptions import InvalidParameterError, SparkJobError
from mlops_airflow.operators.spark_job import SparkJobOperator, idempotency_token
from mlops_jobs import lake
from mlops_jobs.distribution import source_hash
from mlops_jobs.localstack.databricks_emulator import DatabricksEmulator, HttpFault
from tests.support import FakeTI

CLUSTER = {"new_cluster": {"spark_version": "16.4.x-scala2.12", "num_workers": 1}}


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksEmulator]:
    emulator = DatabricksEmulator(tmp_path / "databricks", pending_seconds=0.2).start()
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", emulator.connection())
    yield emulator
    emulator.stop()


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


def context(ti: FakeTI | None = None) -> Any:
    return {"ti": ti or FakeTI()}


def features_args(snapshot: Path, output: Path) -> list[str]:
    return ["--snapshot", lake.path_uri(snapshot), "--output", lake.path_uri(output)]


# -- local backend ----------------------------------------------------------------------------


def test_local_feature_job_and_databricks_run_publish_identical_output(
    demo_snapshot: Path, tmp_path: Path, emulator: DatabricksEmulator
) -> None:
    local_out = tmp_path / "local" / "churn" / "features" / "ds=2026-03-01"
    result = operator(
        "churn-features", *features_args(demo_snapshot, local_out), backend="local"
    ).execute(context())
    local_manifest = lake.read_manifest(local_out)
    assert result["content_hash"] == local_manifest["content_hash"]
    assert sum(s["rows"] for s in local_manifest["splits"].values()) == 150
    assert (
        local_manifest["snapshot"]["content_hash"]
        == lake.read_manifest(demo_snapshot)["content_hash"]
    )

    remote_out = tmp_path / "remote" / "churn" / "features" / "ds=2026-03-01"
    ti = FakeTI()
    result = operator(
        "churn-features", *features_args(demo_snapshot, remote_out), backend="databricks"
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
    assert task["python_wheel_task"]["parameters"][0] == "churn-features"
    assert task["libraries"][0]["whl"].endswith(f"+src.{source_hash()}-py3-none-any.whl")
    assert run.request["idempotency_token"] == idempotency_token(context(ti))


def test_local_failure_reports_the_jobs_error(tmp_path: Path) -> None:
    missing = tmp_path / "lake" / "churn" / "snapshots" / "ds=2026-03-01"
    out = tmp_path / "lake" / "churn" / "features" / "ds=2026-03-01"
    with pytest.raises(SparkJobError) as raised:
        operator("churn-features", *features_args(missing, out), backend="local").execute(context())
    message = str(raised.value)
    assert "exit code 2" in message
    assert f"snapshot {lake.path_uri(missing)}" in message and "manifest.json is missing" in message
    assert not out.exists()


def test_on_kill_terminates_the_local_process_group(demo_snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "lake" / "churn" / "features" / "ds=2026-03-01"
    op = operator("churn-features", *features_args(demo_snapshot, out), backend="local")
    thread, errors = execute_in_thread(op)
    deadline = time.monotonic() + 120
    while op._process is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    op.on_kill()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert op._process is not None and op._process.poll() is not None
    assert errors and isinstance(errors[0], SparkJobError)
    assert not out.exists()


# -- databricks backend -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
def test_transient_http_errors_are_retried_by_the_hook(
    emulator: DatabricksEmulator, status: int
) -> None:
    emulator.faults.http = [
        HttpFault("dbfs/get-status", status, 1),
        HttpFault("runs/submit", status, 2),
        HttpFault("runs/get", status, 1),
    ]
    result = operator(backend="databricks").execute(context())
    assert result == {"package": "mlops_jobs", "source_hash": source_hash()}
    submits = [p for m, p in emulator.requests if p.endswith("runs/submit")]
    assert len(submits) == 3  # two injected failures, then the real submit
    assert len(emulator.runs) == 1


def test_wheel_is_uploaded_once_per_version(emulator: DatabricksEmulator) -> None:
    operator(backend="databricks").execute(context())
    operator(backend="databricks").execute(context(FakeTI(try_number=2)))
    creates = [p for _, p in emulator.requests if p.endswith("dbfs/create")]
    assert len(creates) == 1 and len(emulator.runs) == 2


def test_same_try_resubmitted_gets_the_same_run(emulator: DatabricksEmulator) -> None:
    ti = FakeTI()
    operator(backend="databricks").execute(context(ti))
    first = ti.xcom["run_id"]
    operator(backend="databricks").execute(context(ti))
    assert ti.xcom["run_id"] == first and len(emulator.runs) == 1
    assert idempotency_token(context(FakeTI(try_number=2))) != idempotency_token(context(ti))
    assert len(idempotency_token(context(ti))) <= 64


@pytest.mark.parametrize("deferrable", [False, True])
def test_failed_run_raises_with_page_url_and_error_output(
    emulator: DatabricksEmulator, tmp_path: Path, deferrable: bool
) -> None:
    missing = tmp_path / "no-snapshot"
    op = operator(
        "churn-features",
        *features_args(missing, tmp_path / "out"),
        backend="databricks",
        deferrable=deferrable,
    )
    ti = FakeTI()
    with pytest.raises(SparkJobError) as raised:
        run_to_completion(op, ti)
    message = str(raised.value)
    run_id = ti.xcom["run_id"]
    assert f"Databricks run {run_id}" in message and "TERMINATED/FAILED" in message
    assert ti.xcom["run_page_url"] in message
    assert "manifest.json is missing" in message  # the job's own error output


@pytest.mark.parametrize("deferrable", [False, True])
def test_internal_error_fails_the_task(emulator: DatabricksEmulator, deferrable: bool) -> None:
    emulator.faults.run_result = "INTERNAL_ERROR"
    ti = FakeTI()
    with pytest.raises(SparkJobError, match="INTERNAL_ERROR/FAILED: Cluster terminated"):
        run_to_completion(operator(backend="databricks", deferrable=deferrable), ti)


def test_injected_job_failure_shows_the_trace(emulator: DatabricksEmulator) -> None:
    emulator.faults.run_result = "FAILED"
    with pytest.raises(SparkJobError, match="RuntimeError: injected job failure"):
        operator(backend="databricks").execute(context())


@pytest.mark.parametrize("deferrable", [False, True])
def test_successful_run_returns_the_job_result(
    emulator: DatabricksEmulator, deferrable: bool
) -> None:
    result = run_to_completion(operator(backend="databricks", deferrable=deferrable), FakeTI())
    assert result == {"package": "mlops_jobs", "source_hash": source_hash()}


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
    assert errors and "TERMINATED/CANCELED" in str(errors[0])


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
    with pytest.raises(AirflowException, match="failed 3 times"):
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


def test_bad_configuration_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOPS_DATABRICKS_CLUSTER", raising=False)
    with pytest.raises(InvalidParameterError, match="mlops_databricks_cluster"):
        operator(databricks_cluster=None).run_json(context(), "dbfs:/x.whl")
    with pytest.raises(InvalidParameterError, match="unknown compute backend 'emr'"):
        operator(backend="emr").execute(context())


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
