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
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_airflow.operators.promotion import REGISTRY_POOL
from mlops_jobs.process import ProcessGroup, is_running
from mlops_jobs.training.tracking import alias_version
from tests.conftest import DEMO

pytestmark = [pytest.mark.hive, pytest.mark.integration]

START_TIMEOUT = 300.0
RUN_TIMEOUT = 600.0


@dataclass
class Stack:
    airflow_url: str
    mlflow_url: str
    user: str
    password: str
    logs: Path
    supervisor: ProcessGroup
    output: list[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ui_command(action: str) -> list[str]:
    return [sys.executable, "-m", "mlops_localstack.ui", action]


@pytest.fixture(scope="module")
def stack(airflow_db: None, demo_warehouse: object) -> Iterator[Stack]:
    env = {
        **os.environ,
        "AIRFLOW_UI_PORT": str(free_port()),
        "MLFLOW_UI_PORT": str(free_port()),
        # Only the runs a test triggers: no scheduled run of a DAG unpaused here.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }
    # what make airflow-init adds to a migrated database: the registry's pool
    subprocess.run(
        ["airflow", "pools", "set", REGISTRY_POOL, "1", "Serialises moves of registry aliases"],
        env=env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    supervisor = ProcessGroup(ui_command("start"), env=env)
    output: list[str] = []
    ready: dict[str, str] = {}

    def on_line(line: str) -> None:
        output.append(line)
        if match := re.match(r"Airflow UI\s+(\S+)\s+\(login (\S+) / (\S+)\)", line):
            ready.update(airflow=match[1], user=match[2], password=match[3])
        elif match := re.match(r"MLflow UI\s+(\S+)", line):
            ready["mlflow"] = match[1]
        elif match := re.match(r"Logs\s+(\S+)", line):
            ready["logs"] = match[1]

    reader = threading.Thread(target=supervisor.stream, args=(on_line,), daemon=True)
    reader.start()
    deadline = time.monotonic() + START_TIMEOUT
    while "logs" not in ready:
        if supervisor.poll() is not None or time.monotonic() > deadline:
            supervisor.terminate(10)
            pytest.fail("the UI stack did not start:\n" + "\n".join(output[-40:]))
        time.sleep(0.5)
    yield Stack(
        airflow_url=ready["airflow"],
        mlflow_url=ready["mlflow"],
        user=ready["user"],
        password=ready["password"],
        logs=Path(ready["logs"]),
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


@pytest.fixture(scope="module")
def unpaused(client: Any) -> None:
    """churn_training unpaused, so that triggered runs start (no scheduled run: see stack)."""
    from airflow_client.client.api import dag_api
    from airflow_client.client.models import DAGPatchBody

    dag_api.DAGApi(client).patch_dag("churn_training", DAGPatchBody(is_paused=False))


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(2)


def wait_until_parked(stack: Stack, run_id: str, task_id: str) -> None:
    """Wait until the scheduler has seen the worker that parked ``task_id`` for input exit.

    Airflow 3.3.2 mistakes an answer that comes before the scheduler has processed that exit
    for a state changed externally: it marks the resumed task for retry, and the retry asks again.
    A person is never that fast; a script answering at once is.
    """
    seen = f"TaskInstance Finished: dag_id=churn_training, task_id={task_id}, run_id={run_id}, "
    log = stack.logs / "scheduler.log"

    def finished() -> bool:
        with open(log, errors="replace") as lines:
            return any(seen in line and "state=awaiting_input" in line for line in lines)

    wait_for(f"the scheduler sees {task_id} of {run_id} park for input", finished, 120)


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
    assert params["label_ds"]["schema"]["format"] == "date"
    assert all(p["schema"].get("title") for p in params.values())


def test_an_invalid_conf_is_refused_and_no_run_starts(client: Any) -> None:
    from airflow_client.client.api import dag_run_api
    from airflow_client.client.exceptions import ApiException
    from airflow_client.client.models import TriggerDAGRunPostBody

    runs = dag_run_api.DagRunApi(client)
    before = runs.get_dag_runs("churn_training").total_entries
    for conf, named in (({"epochs": 0}, "epochs"), ({"label_ds": "2026-13-45"}, "label_ds")):
        with pytest.raises(ApiException) as refused:
            runs.trigger_dag_run(
                "churn_training", TriggerDAGRunPostBody(logical_date=None, conf=conf)
            )
        assert refused.value.status == 400
        assert named in str(refused.value.body)
    assert runs.get_dag_runs("churn_training").total_entries == before


def test_a_manual_run_without_data_fails_at_once_naming_the_partitions(
    client: Any, unpaused: None
) -> None:
    """The trigger form's defaults on a day the warehouse has no data for: the sensor checks
    once and fails naming what is missing, instead of waiting for six hours."""
    from airflow_client.client.api import dag_run_api, task_instance_api
    from airflow_client.client.models import TriggerDAGRunPostBody

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


CHROMIUM = Path("/usr/bin/chromium")
# Chromium's own background traffic is refused on machines without internet; nothing to fetch.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(os.environ["MLOPS_LOCAL_ROOT"]) / "screenshots"


@pytest.fixture(scope="module")
def page(stack: Stack) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed (make browser installs it)")
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_a_person_trains_from_the_trigger_form_and_approves_the_promotion(
    stack: Stack, client: Any, page: Any, unpaused: None
) -> None:
    """Log in, trigger churn_training from its form with non-default Params (an invalid value
    refused first), approve the promotion under Required Actions, follow the MLflow link."""
    from airflow_client.client.api import dag_run_api, task_instance_api

    page.goto(stack.airflow_url)
    page.get_by_label(re.compile("username", re.I)).fill(stack.user)
    page.get_by_label(re.compile("password", re.I)).fill(stack.password)
    shot(page, "01-login")
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"))

    page.goto(f"{stack.airflow_url}/dags/churn_training")
    page.get_by_role("button", name=re.compile("^trigger", re.I)).first.click()
    form = page.get_by_role("dialog")
    try:
        form.get_by_role("button", name="Data").wait_for()
    except Exception:
        shot(page, "02-trigger-form-failed")
        raise AssertionError(page.locator("body").inner_text()[-2000:]) from None
    trigger = form.get_by_role("button", name="Trigger")
    form.get_by_role("button", name="Data").click()
    form.locator("input[name=element_label_ds]").fill(str(DEMO["end_ds"]))
    form.get_by_role("button", name="Training").click()
    workers = form.locator("input[name=element_workers]")
    workers.fill("")  # a required field left empty: refused in the form
    form.locator("input[name=element_epochs]").click()
    assert form.get_by_text("This field is required").is_visible()
    assert not trigger.is_enabled()
    shot(page, "02-trigger-form-refuses-an-empty-required-field")
    workers.fill("1")
    form.locator("input[name=element_epochs]").fill("2")
    form.get_by_role("button", name="Promotion").click()
    form.locator("input[name=element_require_approval]").locator("xpath=..").click()
    # the tiny test demo cannot pass the gate: force it, so the approval is asked for
    form.locator("input[name=element_force_promote]").locator("xpath=..").click()
    form.locator("[name=element_force_reason]").fill("browser test on the tiny demo")
    shot(page, "03-trigger-form-filled")
    assert trigger.is_enabled()
    trigger.click()
    try:
        page.wait_for_url(re.compile(r"/dags/churn_training/runs/"))
    except Exception:
        shot(page, "03-trigger-failed")
        raise AssertionError(page.locator("body").inner_text()[-2000:]) from None
    run_id = urllib.parse.unquote(page.url.rstrip("/").rsplit("/runs/", 1)[1].split("/")[0])

    runs = dag_run_api.DagRunApi(client)
    assert runs.get_dag_run("churn_training", run_id).conf["epochs"] == 2
    tasks = task_instance_api.TaskInstanceApi(client)

    def state(task_id: str) -> str | None:
        instance = tasks.get_task_instance("churn_training", run_id, task_id)
        return None if instance.state is None else str(instance.state.value)

    wait_for(
        "the promotion asks for approval",
        lambda: (
            state("approve_promotion") == "awaiting_input"
            or runs.get_dag_run("churn_training", run_id).state == "failed"
        ),
        RUN_TIMEOUT,
    )
    assert state("approve_promotion") == "awaiting_input", [
        (t, state(t)) for t in ("extract_snapshot", "build_features", "train_model")
    ]
    wait_until_parked(stack, run_id, "approve_promotion")
    page.goto(f"{stack.airflow_url}/required_actions")
    page.get_by_text(re.compile(r"Promote churn version \d+\?")).first.click()
    approve = page.get_by_role("button", name="Promote")
    approve.wait_for()
    shot(page, "04-required-action")
    approve.click()
    run = wait_for(
        "the run ends",
        lambda: (
            (r := runs.get_dag_run("churn_training", run_id)).state in ("success", "failed") and r
        ),
        RUN_TIMEOUT,
    )
    assert run.state == "success"
    assert state("promote_model") == "success" and state("reject_in_review") == "skipped"

    page.goto(f"{stack.airflow_url}/dags/churn_training/runs/{run_id}/tasks/train_model/details")
    link = page.get_by_role("link", name="MLflow run")
    href = link.get_attribute("href")
    assert href and href.startswith(stack.mlflow_url), href
    version = page.get_by_role("link", name="Model version").get_attribute("href")
    assert version and re.search(r"/#/models/churn/versions/\d+$", version), version
    # a job run on local Spark has no Databricks run page: no link rather than one to "None"
    assert page.get_by_role("link", name="Databricks run").count() == 0
    shot(page, "05-task-links")
    # the MLflow UI keeps polling: wait for the page's load, not for a quiet network
    response = page.goto(href, wait_until="load")
    assert response is not None and response.ok, href
    page.wait_for_timeout(3000)  # let the run's page render for the screenshot
    shot(page, "06-mlflow-run")


#: A small model for the REST and backfill runs: the same inputs, so the same training key.
SMALL_TRAINING = {"workers": 1, "epochs": 1, "learning_rate": 0.0042}


def run_state(client: Any, run_id: str) -> Callable[[], str | None]:
    from airflow_client.client.api import dag_run_api

    def ended() -> str | None:
        state = dag_run_api.DagRunApi(client).get_dag_run("churn_training", run_id).state
        value = str(getattr(state, "value", state))
        return value if value in ("success", "failed") else None

    return ended


def task_states(client: Any, run_id: str) -> dict[str, str | None]:
    from airflow_client.client.api import task_instance_api

    instances = task_instance_api.TaskInstanceApi(client).get_task_instances(
        "churn_training", run_id
    )
    return {
        t.task_id: None if t.state is None else str(t.state.value) for t in instances.task_instances
    }


def lineage(client: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The extras of the Asset events a run emitted, by asset name."""
    from airflow_client.client.api import asset_api

    events = asset_api.AssetApi(client).get_asset_events(
        source_dag_id="churn_training", source_run_id=run_id, limit=100
    )
    return {str(e.name): dict(e.extra or {}) for e in events.asset_events}


def test_a_run_answered_through_the_rest_api_is_reproduced_by_a_backfill(
    stack: Stack, client: Any, unpaused: None
) -> None:
    """Trigger with conf, read task states and XComs, reject the promotion through the API:
    the candidate is recorded as rejected in review and the champion stays. Then a
    scheduler-run backfill of the day after the demo's last day trains on that last day: the
    same snapshot and features (content hashes) and the same model version, reused."""
    from airflow_client.client.api import (
        backfill_api,
        dag_run_api,
        task_instance_api,
        x_com_api,
    )
    from airflow_client.client.models import (
        BackfillPostBody,
        TriggerDAGRunPostBody,
        UpdateHITLDetailPayload,
    )
    from mlflow import MlflowClient

    conf = {
        "label_ds": str(DEMO["end_ds"]),
        **SMALL_TRAINING,
        "require_approval": True,
        "force_promote": True,
        "force_reason": "REST test on the tiny demo",
    }
    runs = dag_run_api.DagRunApi(client)
    run = runs.trigger_dag_run(
        "churn_training", TriggerDAGRunPostBody(logical_date=None, conf=conf)
    )
    wait_for(
        "the promotion asks for approval",
        lambda: (
            task_states(client, run.dag_run_id).get("approve_promotion") == "awaiting_input"
            or run_state(client, run.dag_run_id)()
        ),
        RUN_TIMEOUT,
    )
    states = task_states(client, run.dag_run_id)
    assert states["approve_promotion"] == "awaiting_input", states
    wait_until_parked(stack, run.dag_run_id, "approve_promotion")
    assert states["train_model"] == states["promotion_gate"] == "success"

    def xcom(task_id: str, key: str) -> Any:
        entry = x_com_api.XComApi(client).get_xcom_entry(
            "churn_training", task_id, run.dag_run_id, key
        )
        return entry.actual_instance.value

    candidate, gate = xcom("train_model", "return_value"), xcom("promotion_gate", "decision")
    assert gate["candidate_version"] == str(candidate["model_version"])
    assert gate["force_reason"] == conf["force_reason"]

    registry = MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)

    def champion() -> str | None:
        version = alias_version(registry, gate["model_name"], "champion")
        return None if version is None else str(version.version)

    before = champion()
    tasks = task_instance_api.TaskInstanceApi(client)
    request = tasks.get_hitl_detail("churn_training", run.dag_run_id, "approve_promotion", -1)
    assert request.options == ["Promote", "Reject"]
    assert f"version {candidate['model_version']}" in request.subject
    tasks.update_hitl_detail(
        "churn_training",
        run.dag_run_id,
        "approve_promotion",
        -1,
        UpdateHITLDetailPayload(chosen_options=["Reject"]),
    )
    assert wait_for("the run ends", run_state(client, run.dag_run_id), RUN_TIMEOUT) == "success"
    states = task_states(client, run.dag_run_id)
    assert states["reject_in_review"] == "success" and states["promote_model"] == "skipped"
    assert champion() == before
    rejected = registry.get_model_version(gate["model_name"], str(candidate["model_version"]))
    assert rejected.tags["validation_status"] == "rejected", rejected.tags

    due = dt.datetime.combine(
        dt.date.fromisoformat(str(DEMO["end_ds"])) + dt.timedelta(days=1), dt.time(), dt.UTC
    )
    backfill = backfill_api.BackfillApi(client).create_backfill(
        BackfillPostBody(
            dag_id="churn_training",
            from_date=due,
            to_date=due,
            dag_run_conf=SMALL_TRAINING,
            max_active_runs=1,
        )
    )

    def backfill_run() -> str | None:
        for found in runs.get_dag_runs("churn_training", run_type=["backfill"]).dag_runs:
            if found.logical_date == due:
                return str(found.dag_run_id)
        return None

    run_id = wait_for(f"backfill {backfill.id} creates its run", backfill_run, START_TIMEOUT)
    assert wait_for("the backfill run ends", run_state(client, run_id), RUN_TIMEOUT) == "success"
    replayed, first = lineage(client, run_id), lineage(client, run.dag_run_id)
    assert replayed["churn_snapshot"]["ds"] == str(DEMO["end_ds"])
    for asset in ("churn_snapshot", "churn_features"):
        assert replayed[asset]["content_hash"] == first[asset]["content_hash"], asset
    reused = replayed["churn_model_candidate"]
    assert reused["model_version"] == first["churn_model_candidate"]["model_version"]
    assert reused["reused"] is True


def test_ui_stop_stops_every_process_it_started(stack: Stack) -> None:
    groups = json.loads((stack.logs / "ui.json").read_text())["groups"]
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
