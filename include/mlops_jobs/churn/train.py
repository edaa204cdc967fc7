"""Train the churn model with N synchronous TensorFlow workers and register it in MLflow.

The driver (this module) opens the MLflow run, launches the workers as one Spark barrier stage,
checks that every worker ended with the same weights, and registers the chief's logged model as
a new version of ``churn`` tagged as a candidate. Re-running the same Airflow task try finds the
version it registered before and registers nothing new. Any failure marks the run FAILED and
registers nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mlops_jobs.churn.model import FeatureSet, TrainConfig
from mlops_jobs.training import tracking
from mlops_jobs.training.launcher import LaunchError, WorkerSpec, launch

EXPERIMENT = "churn"


@dataclass(frozen=True)
class TrainRequest:
    features: str
    workers: int = 2
    overrides: dict[str, Any] | None = None
    dag_id: str = "adhoc"
    run_id: str = "adhoc"
    task_id: str = "train_model"
    try_number: int = 1
    timeout_seconds: float = 1800.0
    registered_model: str = tracking.REGISTERED_MODEL


def run(request: TrainRequest) -> dict[str, Any]:
    """Train, register and return ``{run_id, model_name, model_version, metrics}``."""
    import mlflow

    from mlops_jobs.distribution import version as code_version
    from mlops_jobs.spark.session import get_spark

    config = TrainConfig.load(overrides=request.overrides)  # bad input fails before any work
    features = FeatureSet.open(request.features)
    client = mlflow.MlflowClient()
    try_tags = tracking.try_tags(
        request.dag_id, request.run_id, request.task_id, request.try_number
    )
    existing = tracking.find_registered_version(client, request.registered_model, try_tags)
    if existing is not None:
        print(
            f"version {existing.version} of {request.registered_model} was registered by this "
            "task try already; nothing new is registered"
        )
        return _result(client, existing)

    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        # Artifacts go where configured, not into the working directory of whichever process
        # happens to create the experiment.
        artifact_root = os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT")
        location = f"{artifact_root.rstrip('/')}/{EXPERIMENT}" if artifact_root else None
        client.create_experiment(EXPERIMENT, artifact_location=location)
    mlflow.set_experiment(EXPERIMENT)
    tags = {
        **try_tags,
        "features.uri": request.features,
        "features.content_hash": str(features.manifest.get("content_hash")),
        "snapshot.content_hash": str(features.manifest.get("snapshot", {}).get("content_hash")),
        "code.version": code_version(),
        **{f"library.{k}": v for k, v in tracking.library_versions().items()},
    }
    with mlflow.start_run(run_name=f"{request.dag_id}.{request.task_id}", tags=tags) as active:
        run_id = active.info.run_id
        mlflow.log_params(
            {**config.as_params(), "workers": request.workers, "ds": features.manifest.get("ds")}
        )
    spec = WorkerSpec(
        module="mlops_jobs.churn.train_worker",
        arguments=(
            "--features",
            request.features,
            "--config",
            json.dumps({**(request.overrides or {})}),
            "--mlflow-run-id",
            run_id,
            "--collective-timeout",
            str(request.timeout_seconds),
        ),
        timeout_seconds=request.timeout_seconds,
        env=tuple((k, v) for k, v in os.environ.items() if k.startswith("MLFLOW_")),
    )
    try:
        spark = get_spark("churn-train", {"spark.python.worker.reuse": "false"})
        results = launch(spark, request.workers, spec)
        digests = {r["worker"]: r["weights_digest"] for r in results}
        for worker, digest in digests.items():
            client.set_tag(run_id, f"worker.{worker}.weights_digest", digest)
        if len(set(digests.values())) != 1:
            raise LaunchError(f"workers ended with different weights: {digests}")
        chief = results[0]
        client.log_metric(run_id, "launch_seconds", chief["launch_seconds"])
        model_version = mlflow.register_model(
            f"runs:/{run_id}/model",
            request.registered_model,
            tags={**try_tags, "role": "candidate"},
        )
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return _result(client, model_version)


def _result(client: Any, model_version: Any) -> dict[str, Any]:
    run = client.get_run(model_version.run_id)
    return {
        "run_id": model_version.run_id,
        "experiment_id": run.info.experiment_id,
        "model_name": model_version.name,
        "model_version": str(model_version.version),
        "metrics": {k: v for k, v in run.data.metrics.items() if k in ("valid_auc", "test_auc")},
    }
