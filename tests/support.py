"""Helpers shared by tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_SOURCES
from mlops_localstack.databricks_emulator import DatabricksEmulator
from mlops_localstack.demo.generator import DemoSpec, generate
from mlops_localstack.demo.warehouse import arrow_schema


@contextlib.contextmanager
def databricks_emulator(
    root: Path, monkeypatch: Any, **options: Any
) -> Iterator[DatabricksEmulator]:
    """The Databricks emulator, started under ``root``, with the provider's default connection
    pointing at it; stopped (its runs killed) on exit."""
    emulator = DatabricksEmulator(root, **options).start()
    monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_DEFAULT", emulator.connection())
    try:
        yield emulator
    finally:
        emulator.stop()


@dataclass
class FakeTI:
    """The task-instance attributes operators read in ``execute`` (ids and XCom push)."""

    dag_id: str = "churn_training"
    task_id: str = "build_features"
    run_id: str = "manual__2026-03-01T00:00:00+00:00"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)
    stats_tags: dict[str, str] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value") -> Any:
        """What this task instance pushed under ``key`` (the only task a fake knows)."""
        assert task_ids in (None, self.task_id), task_ids
        return self.xcom.get(key)


def write_demo_snapshot(
    lake_root: Path,
    spec: DemoSpec,
    lookback_days: int = 90,
    ds: str | None = None,
    tamper: Callable[[dict[str, Any]], None] | None = None,
    span_days: int = 0,
) -> str:
    """A snapshot box as the extraction stage publishes it for ``ds`` (default: the demo's last
    day), written straight from the generator (for tests of later stages that should not need
    HiveServer2): each table holds the partitions its contract's window reads. ``tamper`` may
    change the pandas frames (by table alias) before they are written. Returns the box's URI."""
    ds = ds or spec.end_ds
    data = generate(spec)
    frames = {"customers": data.customers, "events": data.events, "churn_labels": data.labels}
    for contract in CHURN_SOURCES:
        if contract.partitioned:
            frame = frames[contract.alias]
            days = contract.required_partitions(ds, lookback_days, span_days)
            within = frame[contract.partition_column].isin(days)
            frames[contract.alias] = frame[within].reset_index(drop=True)
    if tamper is not None:
        tamper(frames)
    box = lake.box_uri(str(lake_root), "churn/snapshots", ds)
    with lake.publishing(box, root=str(lake_root)) as draft:
        tables = {}
        for contract in CHURN_SOURCES:
            directory = Path(draft.location.child(contract.alias).path)
            directory.mkdir(parents=True)
            table = pa.Table.from_pandas(
                frames[contract.alias], schema=arrow_schema(contract), preserve_index=False
            )
            pq.write_table(table, directory / "part-00000.parquet")
            bounds = contract.partition_range(ds, lookback_days, span_days)
            tables[contract.alias] = {
                "table": str(contract.table),
                "path": contract.alias,
                "partitions": {"first": bounds[0], "last": bounds[1]} if bounds else None,
                "rows": table.num_rows,
                "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            }
        draft.commit(
            {"ds": ds, "lookback_days": lookback_days, "span_days": span_days, "tables": tables}
        )
    return box


def experiment_id(client: Any, name: str) -> str:
    """The experiment ``name``, created with its artifacts under the test store (never in the
    working directory) when it does not exist yet."""
    import os

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = os.environ["MLOPS_MLFLOW_ARTIFACT_ROOT"].rstrip("/")
    return str(client.create_experiment(name, artifact_location=f"{root}/{name}"))


def register_version(client: Any, name: str, **tags: str) -> str:
    """A new version of ``name`` backed by a run of its own (registry tests need no model)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run = client.create_run(experiment_id(client, "registry-tests"), tags={"role": "training"})
    client.set_terminated(run.info.run_id, "FINISHED")
    version = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    return str(version.version)


def evaluation_result(
    client: Any,
    name: str,
    candidate: str,
    candidate_auc: float,
    baseline_auc: float,
    champion: str | None = None,
    champion_auc: float | None = None,
) -> dict[str, Any]:
    """An evaluation as ``EvaluateModelOperator`` returns it, with the given ROC AUCs."""

    def metrics(auc: float) -> dict[str, float]:
        return {
            "roc_auc": auc,
            "pr_auc": auc / 2,
            "log_loss": 1 - auc / 2,
            "brier_score": 0.2,
            "precision": 0.5,
            "recall": 0.5,
        }

    def model(version: str | None, auc: float) -> dict[str, Any]:
        run_id = client.get_model_version(name, version).run_id if version else "baseline-run"
        return {"version": version, "mlflow_run_id": run_id, "metrics": metrics(auc)}

    return {
        "model_name": name,
        "threshold": 0.3,
        "evaluated_on": {"uri": "file:///lake/churn/features/ds=2026-03-01", "rows": 1000},
        "candidate": model(candidate, candidate_auc),
        "champion": model(champion, champion_auc) if champion and champion_auc else None,
        "baseline": model(None, baseline_auc),
    }


def fit_and_register(features_uri: str, name: str, epochs: int, seed: int = 7) -> str:
    """Fit the churn model in this process (no workers) for ``epochs``, log it as the training
    job does and register it as a new version of ``name``; returns the version."""
    import mlflow

    from mlops_jobs.churn.model import FeatureSet, TrainConfig, build_model, log_churn_model

    features = FeatureSet.open(features_uri)
    config = TrainConfig.load(overrides={"epochs": max(epochs, 1), "seed": seed})
    inputs, labels = features.split("train")
    model = build_model(features, config)
    if epochs:
        model.fit(inputs, labels, epochs=epochs, batch_size=128, verbose=0)
    mlflow.set_experiment(experiment_id=experiment_id(mlflow.MlflowClient(), "churn-job-tests"))
    with mlflow.start_run(run_name=f"{name}.fit", tags={"features.uri": features_uri}) as run:
        log_churn_model(model, features)
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name).version)
