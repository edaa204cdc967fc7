"""Distributed training end to end: real TensorFlow workers in a Spark barrier stage, a real
MLflow store (SQLite under the test root), on the local backend and through the Databricks
emulator."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_airflow.exceptions import InvalidParameterError, SparkJobError
from mlops_airflow.operators.train_model import TrainModelOperator
from mlops_jobs import lake
from tests.support import FakeTI, databricks_emulator, experiment_id

# Small and quick, but with enough labelled customers for a clear signal.
TRAIN_PARAMS = {"epochs": 15, "per_worker_batch_size": 128, "early_stopping_patience": 4}


@pytest.fixture
def mlflow_client() -> Any:
    import mlflow

    return mlflow.MlflowClient()


def train(features: str, ti: FakeTI, **kwargs: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "task_id": ti.task_id,
        "features": features,
        "workers": 2,
        "train_params": TRAIN_PARAMS,
        "backend": "local",
        "worker_timeout_seconds": 600,
    }
    context = {"ti": ti, "ds": "2026-03-01"}
    return TrainModelOperator(**{**defaults, **kwargs}).execute(context)  # type: ignore[arg-type]


def test_two_workers_train_in_sync_and_register_a_candidate(
    training_features: str, mlflow_client: Any
) -> None:
    import mlflow

    from mlops_jobs.training import tracking

    # An earlier try of this task instance died mid-training and left its run RUNNING.
    instance = tracking.instance_tags("churn_training", "manual__sync", "train_model")
    stale = mlflow_client.create_run(
        experiment_id(mlflow_client, "churn"), tags={**instance, "role": "training"}
    )

    ti = FakeTI(task_id="train_model", run_id="manual__sync", try_number=2)
    result = train(training_features, ti)
    assert mlflow_client.get_run(stale.info.run_id).info.status == "FAILED"
    version = mlflow_client.get_model_version("churn", result["model_version"])
    assert version.tags["role"] == "candidate"
    assert version.tags["airflow.dag_run_id"] == "manual__sync"
    assert version.tags["airflow.try_number"] == "2"
    assert version.tags["airflow.map_index"] == "-1"
    run = mlflow_client.get_run(result["mlflow_run_id"])
    digests = {v for k, v in run.data.tags.items() if k.endswith(".weights_digest")}
    assert len([k for k in run.data.tags if k.endswith(".weights_digest")]) == 2
    assert len(digests) == 1  # both workers ended with identical weights
    manifest = lake.read_manifest(training_features)
    assert run.data.tags["features.content_hash"] == manifest["content_hash"]
    assert run.data.tags["snapshot.content_hash"] == manifest["snapshot"]["content_hash"]
    assert run.data.tags["code.version"].startswith("0.1.0+src.")
    assert run.data.params["workers"] == "2" and run.info.status == "FINISHED"
    assert len(mlflow_client.get_metric_history(run.info.run_id, "val_auc")) >= 2
    assert result["metrics"]["valid_auc"] > 0.6

    info = mlflow.models.get_model_info(f"models:/churn/{result['model_version']}")
    assert info.signature is not None
    assert {spec.name for spec in info.signature.inputs.inputs} == set(manifest["features"])
    assert info.saved_input_example_info is not None
    local = mlflow.artifacts.download_artifacts(f"models:/churn/{result['model_version']}")
    example = mlflow.models.Model.load(local).load_input_example(local)
    model = mlflow.pyfunc.load_model(local)
    predictions = np.asarray(model.predict(example)).ravel()
    assert len(predictions) == 5 and ((predictions > 0) & (predictions < 1)).all()

    # A later try of the same task instance registers nothing new: it returns that version.
    again = train(
        training_features, FakeTI(task_id="train_model", run_id="manual__sync", try_number=3)
    )
    assert again["model_version"] == result["model_version"]
    tagged = [
        v
        for v in mlflow_client.search_model_versions("name = 'churn'")
        if v.tags.get("airflow.dag_run_id") == "manual__sync"
    ]
    assert len(tagged) == 1

    # Another run on the same inputs (the DAG re-run for the same ds) trains and registers
    # nothing: it returns the version trained on them.
    assert run.data.tags["training.input_key"]
    rerun = train(training_features, FakeTI(task_id="train_model", run_id="manual__rerun"))
    assert rerun["reused"] and rerun["model_version"] == result["model_version"]
    assert not result["reused"]
    assert not mlflow_client.search_runs(
        [run.info.experiment_id], "tags.`airflow.dag_run_id` = 'manual__rerun'"
    )


def test_one_and_two_workers_reach_comparable_auc(
    training_features: str, mlflow_client: Any
) -> None:
    one = train(training_features, FakeTI(task_id="train_model", run_id="manual__one"), workers=1)
    two_runs = [
        v
        for v in mlflow_client.search_model_versions("name = 'churn'")
        if v.tags.get("airflow.dag_run_id") == "manual__sync"
    ]
    if two_runs:
        two = mlflow_client.get_run(two_runs[0].run_id).data.metrics["valid_auc"]
    else:
        two = train(training_features, FakeTI(task_id="train_model", run_id="manual__two"))[
            "metrics"
        ]["valid_auc"]
    assert one["metrics"]["valid_auc"] > 0.6
    assert abs(one["metrics"]["valid_auc"] - two) < 0.06


def test_the_seed_fixes_the_initial_weights(training_features: str) -> None:
    from mlops_jobs.churn.model import FeatureSet, TrainConfig, build_model, weights_digest

    features = FeatureSet.open(training_features)

    def initial(seed: int) -> str:
        return weights_digest(build_model(features, TrainConfig.load(overrides={"seed": seed})))

    assert initial(7) == initial(7) != initial(8)


def _worker_pids(index: int) -> list[int]:
    import psutil

    pids = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if "mlops_jobs.churn.train_worker" in cmdline:
            try:
                tf_config = json.loads(process.environ().get("TF_CONFIG", "{}"))
            except (psutil.Error, json.JSONDecodeError):
                continue
            if tf_config.get("task", {}).get("index") == index:
                pids.append(process.pid)
    return pids


@pytest.mark.faults
def test_killed_worker_fails_the_stage_in_bounded_time_and_registers_nothing(
    training_features: str, mlflow_client: Any
) -> None:
    ti = FakeTI(task_id="train_model", run_id="manual__kill")
    errors: list[BaseException] = []
    # a short bound: the surviving worker, stuck in a collective, must not hold the stage
    timeout = 90

    def run() -> None:
        try:
            train(
                training_features,
                ti,
                train_params={**TRAIN_PARAMS, "epochs": 500, "early_stopping_patience": 500},
                worker_timeout_seconds=timeout,
            )
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 300
    victims: list[int] = []
    while not victims and time.monotonic() < deadline and thread.is_alive():
        victims = _worker_pids(1)
        time.sleep(0.5)
    assert victims, "worker 1 never started"

    def epochs_logged() -> int:
        """Epochs the chief has logged: both workers are past their first collective."""
        experiment = mlflow_client.get_experiment_by_name("churn")
        if experiment is None:
            return 0
        runs = mlflow_client.search_runs(
            [experiment.experiment_id], "tags.`airflow.dag_run_id` = 'manual__kill'"
        )
        return max((len(mlflow_client.get_metric_history(r.info.run_id, "loss")) for r in runs),
                   default=0)  # fmt: skip

    while not epochs_logged() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.2)
    assert epochs_logged(), f"training never logged an epoch: {errors}"
    killed_at = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    thread.join(timeout + 120)
    assert not thread.is_alive()
    assert time.monotonic() - killed_at < timeout + 30
    assert errors and isinstance(errors[0], SparkJobError)
    assert "worker 1" in str(errors[0])
    assert not [
        v
        for v in mlflow_client.search_model_versions("name = 'churn'")
        if v.tags.get("airflow.dag_run_id") == "manual__kill"
    ]
    runs = mlflow_client.search_runs(
        [mlflow_client.get_experiment_by_name("churn").experiment_id],
        "tags.`airflow.dag_run_id` = 'manual__kill'",
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    # The surviving worker dies with its Spark task (PR_SET_PDEATHSIG); allow for teardown.
    deadline = time.monotonic() + 60
    while (_worker_pids(0) or _worker_pids(1)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not _worker_pids(0) and not _worker_pids(1)


def test_databricks_backend_trains_through_the_emulator(
    training_features: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_client: Any
) -> None:
    with databricks_emulator(tmp_path / "databricks", monkeypatch, pending_seconds=0.2) as emulator:
        ti = FakeTI(task_id="train_model", run_id="manual__databricks")
        result = train(
            training_features,
            ti,
            backend="databricks",
            databricks_cluster={"new_cluster": {"num_workers": 2}},
            polling_period_seconds=1,
            mlflow_ui_url="http://mlflow.example",
            retrain=True,  # the same inputs as another test's version: train anyway
        )
    assert not result["reused"]
    version = mlflow_client.get_model_version("churn", result["model_version"])
    assert version.tags["airflow.dag_run_id"] == "manual__databricks"
    run = emulator.runs[ti.xcom["run_id"]]
    assert run.request["tasks"][0]["python_wheel_task"]["parameters"][2] == "churn-train"
    assert ti.xcom["mlflow_run_url"] == (
        f"http://mlflow.example/#/experiments/{result['experiment_id']}/runs/{result['mlflow_run_id']}"
    )
    assert ti.xcom["mlflow_model_version_url"] == (
        f"http://mlflow.example/#/models/churn/versions/{result['model_version']}"
    )


def test_bad_training_parameters_are_named(training_features: str) -> None:
    with pytest.raises(SparkJobError, match="unknown training parameters: epochz"):
        train(training_features, FakeTI(run_id="manual__bad"), train_params={"epochz": 3})
    with pytest.raises(InvalidParameterError, match="workers must be at least 1"):
        train(training_features, FakeTI(run_id="manual__bad"), workers=0)
    with pytest.raises(InvalidParameterError, match=r"invalid registered model name 'main\.churn'"):
        train(training_features, FakeTI(run_id="manual__bad"), model_name="main.churn")


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    yield
    for index in (0, 1):
        for pid in _worker_pids(index):
            os.kill(pid, signal.SIGKILL)
