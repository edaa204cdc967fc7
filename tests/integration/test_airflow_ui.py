"""Airflow as its users drive it: the stack ``make ui`` starts (API server and UI, scheduler, DAG
processor, triggerer, MLflow UI), used through the REST API with the official
``apache-airflow-client``, then stopped as ``make ui-stop`` stops it.

One stack serves every test of the module; it runs on free ports against the test session's
Airflow database, HiveServer2 and lake.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_jobs.process import ProcessGroup, is_running

pytestmark = [pytest.mark.hive, pytest.mark.integration]

START_TIMEOUT = 300.0
RUN_TIMEOUT = 300.0


@dataclass
class Stack:
    airflow_url: str
    mlflow_url: str
    user: str
    password: str
    supervisor: ProcessGroup
    output: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ui_command(action: str) -> list[str]:
    return [sys.executable, "-m", "mlops_jobs.localstack.ui", action]


@pytest.fixture(scope="module")
def stack(airflow_db: None, demo_warehouse: object) -> Iterator[Stack]:
    env = {
        **os.environ,
        "AIRFLOW_UI_PORT": str(free_port()),
        "MLFLOW_UI_PORT": str(free_port()),
        # Only the runs a test triggers: no scheduled run of a DAG unpaused here.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    supervisor = ProcessGroup(ui_command("start"), env=env)
    output: list[str] = []
    ready: dict[str, str] = {}

    def on_line(line: str) -> None:
        output.append(line)
        if match := re.match(r"Airflow UI\s+(\S+)\s+\(login (\S+) / (\S+)\)", line):
            ready.update(airflow=match[1], user=match[2], password=match[3])
        elif match := re.match(r"MLflow UI\s+(\S+)", line):
            ready["mlflow"] = match[1]

    reader = threading.Thread(target=supervisor.stream, args=(on_line,), daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT
    while "mlflow" not in ready:
        if supervisor.poll() is not None or time.monotonic() > deadline:
            supervisor.terminate(10)
            pytest.fail("the UI stack did not start:\n" + "\n".join(output[-40:]))
        time.sleep(0.5)
    yield Stack(
        airflow_url=ready["airflow"],
        mlflow_url=ready["mlflow"],
        user=ready["user"],
        password=ready["password"],
        supervisor=supervisor,
        output=output,
    )
    if supervisor.poll() is None:  # a test failed before stopping it
        subprocess.run(ui_command("stop"), env=env, timeout=120, check=False)
        supervisor.terminate(10)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Any]:
    import airflow_client.client as airflow_client

    request = urllib.request.Request(
        f"{stack.airflow_url}/auth/token",
        data=json.dumps({"username": stack.user, "password": stack.password}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token = json.loads(response.read())["access_token"]
    configuration = airflow_client.Configuration(host=stack.airflow_url, access_token=token)
    with airflow_client.ApiClient(configuration) as api:
        yield api


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(2)


def test_every_component_is_healthy_and_the_printed_login_works(stack: Stack, client: Any) -> None:
    from airflow_client.client.api import dag_api, import_error_api, monitor_api

    health = monitor_api.MonitorApi(client).get_health()
    for component in ("metadatabase", "scheduler", "triggerer", "dag_processor"):
        assert getattr(health, component).status == "healthy", component
    with urllib.request.urlopen(f"{stack.mlflow_url}/health", timeout=10) as response:
        assert response.status == 200

    def parsed() -> set[str]:
        dags = dag_api.DAGApi(client).get_dags(limit=100).dags
        return {d.dag_id for d in dags}

    dag_ids = wait_for("the DAG processor parses the DAGs", parsed, START_TIMEOUT)
    assert {"churn_training", "churn_batch_scoring", "churn_model_rollback"} <= dag_ids
    errors = import_error_api.ImportErrorApi(client).get_import_errors()
    assert errors.total_entries == 0, errors


def test_the_trigger_form_offers_typed_params_in_sections(client: Any) -> None:
    from airflow_client.client.api import dag_api

    details = dag_api.DAGApi(client).get_dag_details("churn_training")
    params = details.params
    assert params["epochs"]["schema"]["section"] == "Training"
    assert params["epochs"]["schema"]["type"] == ["null", "integer"]
    assert params["compute_backend"]["schema"]["enum"] == [None, "local", "databricks"]
    assert params["require_approval"]["schema"]["section"] == "Promotion"
    assert params["ds"]["schema"]["format"] == "date"
    assert all(p["schema"].get("title") for p in params.values())


def test_an_invalid_conf_is_refused_and_no_run_starts(client: Any) -> None:
    from airflow_client.client.api import dag_run_api
    from airflow_client.client.exceptions import ApiException
    from airflow_client.client.models import TriggerDAGRunPostBody

    runs = dag_run_api.DagRunApi(client)
    before = runs.get_dag_runs("churn_training").total_entries
    for conf, named in (({"epochs": 0}, "epochs"), ({"ds": "2026-13-45"}, "ds")):
        with pytest.raises(ApiException) as refused:
            runs.trigger_dag_run(
                "churn_training", TriggerDAGRunPostBody(logical_date=None, conf=conf)
            )
        assert refused.value.status == 400
        assert named in str(refused.value.body)
    assert runs.get_dag_runs("churn_training").total_entries == before


def test_a_manual_run_without_data_fails_at_once_naming_the_partitions(client: Any) -> None:
    """The trigger form's defaults on a day the warehouse has no data for: the sensor checks
    once and fails naming what is missing, instead of waiting for six hours."""
    from airflow_client.client.api import dag_api, dag_run_api, task_instance_api
    from airflow_client.client.models import DAGPatchBody, TriggerDAGRunPostBody

    dag_api.DAGApi(client).patch_dag("churn_training", DAGPatchBody(is_paused=False))
    runs = dag_run_api.DagRunApi(client)
    run = runs.trigger_dag_run(
        "churn_training",
        TriggerDAGRunPostBody(logical_date=None, conf={"lookback_days": 7, "out_of_time_days": 0}),
    )
    state = wait_for(
        "the run ends",
        lambda: (
            (s := runs.get_dag_run("churn_training", run.dag_run_id).state) in ("failed",) and s
        ),
        RUN_TIMEOUT,
    )
    assert state == "failed"
    tasks = task_instance_api.TaskInstanceApi(client)
    instances = {
        t.task_id: t
        for t in tasks.get_task_instances("churn_training", run.dag_run_id).task_instances
    }
    sensor = instances["wait_for_partitions"]
    assert sensor.state == "failed" and sensor.try_number == 1  # not retried
    assert instances["extract_snapshot"].state == "upstream_failed"
    label_day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    log = tasks.get_log("churn_training", run.dag_run_id, "wait_for_partitions", 1)
    text = json.dumps(log.to_dict(), default=str)
    assert f"raw.churn_labels (ds={label_day})" in text


def test_ui_stop_stops_every_process_it_started(stack: Stack) -> None:
    (logs,) = [line.split(maxsplit=1)[1] for line in stack.output if line.startswith("Logs")]
    groups = json.loads((Path(logs.strip()) / "ui.json").read_text())["groups"]
    assert set(groups) == {"api-server", "scheduler", "dag-processor", "triggerer", "mlflow"}
    stopped = subprocess.run(
        ui_command("stop"), env=dict(os.environ), capture_output=True, text=True, timeout=120
    )
    assert stopped.returncode == 0, stopped.stderr
    stack.supervisor.wait()
    assert not any(is_running(pid) for pid in groups.values())
    for url in (stack.airflow_url, stack.mlflow_url):
        host, port = url.removeprefix("http://").split(":")
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(port))) != 0, f"{url} still answers"
