"""Train the churn model with N synchronous TensorFlow workers and register it in MLflow.

The driver (this module) opens the MLflow run, launches the workers as one Spark barrier stage,
checks that every worker ended with the same weights, and registers the chief's logged model as
a new version of ``churn`` tagged as a candidate. A version is registered at most once per Airflow
task instance (dag, run, task, map index), whatever the try: a retry after registration returns
that version and marks its run FINISHED (the registry may have created the version and lost only
its answer, and the try failed). When the registry creates the version twice (MLflow's client
resends a request whose response was lost), the second is deleted and the first kept. The run
stays RUNNING until the model is registered; any other failure marks it FAILED and registers
nothing, and a retry marks runs that an earlier try left RUNNING as FAILED.

Training is idempotent by its inputs: the run is tagged with ``training.input_key``, a digest of
the feature set's content hash, the code version, the effective training configuration, the
number of workers and the registered model. When a finished run with the same key already
registered a version, that version is returned (``reused``) and nothing is trained or
registered, unless the request asks to ``retrain``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from mlops_jobs.churn import MODEL_NAME
from mlops_jobs.churn.model import FeatureSet, TrainConfig
from mlops_jobs.training import tracking
from mlops_jobs.training.launcher import LaunchError, WorkerSpec, launch

EXPERIMENT = "churn"
INPUT_KEY_TAG = "training.input_key"


class RegistrationError(RuntimeError):
    """Registering the trained model failed (the registry may be unreachable): a retry of the
    task finds a version the registry did create, or registers it then."""


@dataclass(frozen=True)
class TrainRequest:
    features: str
    workers: int = 2
    overrides: dict[str, Any] | None = None
    dag_id: str = "adhoc"
    dag_run_id: str = "adhoc"
    task_id: str = "train_model"
    map_index: int = -1
    try_number: int = 1
    timeout_seconds: float = 1800.0
    registered_model: str = MODEL_NAME
    retrain: bool = False


def input_key(
    features: FeatureSet, config: TrainConfig, workers: int, registered_model: str, code: str
) -> str:
    """The digest of everything a training result depends on (see the module docstring)."""
    inputs = {
        "features.content_hash": features.manifest.get("content_hash"),
        "code.version": code,
        "config": config.as_params(),
        "workers": workers,
        "registered_model": registered_model.casefold(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def run(request: TrainRequest) -> dict[str, Any]:
    """Train, register and return ``{mlflow_run_id, model_name, model_version, metrics}``."""
    import mlflow

    from mlops_jobs.distribution import version as code_version
    from mlops_jobs.spark.session import get_spark

    config = TrainConfig.load(overrides=request.overrides)  # bad input fails before any work
    features = FeatureSet.open(request.features)
    client = mlflow.MlflowClient()
    instance = tracking.instance_tags(
        request.dag_id, request.dag_run_id, request.task_id, request.map_index
    )
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        # Artifacts go where configured, not into the working directory of whichever process
        # happens to create the experiment.
        artifact_root = os.environ.get("MLOPS_MLFLOW_ARTIFACT_ROOT")
        location = f"{artifact_root.rstrip('/')}/{EXPERIMENT}" if artifact_root else None
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    earlier = tracking.find_runs(client, experiment_id, {**instance, "role": "training"})
    existing = tracking.find_registered_version(
        client, request.registered_model, [r.info.run_id for r in earlier]
    )
    if existing is not None:
        existing = (
            tracking.keep_first_version(client, request.registered_model, existing.run_id)
            or existing
        )
        print(
            f"version {existing.version} of {request.registered_model} was registered by this "
            "task instance already (an earlier try); nothing new is registered"
        )
        if client.get_run(existing.run_id).info.status != "FINISHED":
            client.set_terminated(existing.run_id, "FINISHED")
        return {**_result(client, existing), "reused": False}
    for stale in earlier:
        if stale.info.status == "RUNNING":
            print(f"marking run {stale.info.run_id} of an earlier try FAILED (it never finished)")
            client.set_terminated(stale.info.run_id, "FAILED")
    key = input_key(features, config, request.workers, request.registered_model, code_version())
    if not request.retrain:
        same_inputs = [
            r
            for r in tracking.find_runs(
                client, experiment_id, {INPUT_KEY_TAG: key, "role": "training"}
            )
            if r.info.status == "FINISHED"
        ]
        reused = tracking.find_registered_version(
            client, request.registered_model, [r.info.run_id for r in same_inputs]
        )
        if reused is not None:
            print(
                f"version {reused.version} of {request.registered_model} was trained on the same "
                f"inputs (feature set {features.manifest.get('content_hash')}, code, configuration "
                "and workers): it is reused and nothing is trained or registered "
                "(retrain to train anyway)"
            )
            return {**_result(client, reused), "reused": True}
    mlflow.set_experiment(experiment_id=experiment_id)
    tags = {
        **instance,
        tracking.TRY_TAG: str(request.try_number),
        "role": "training",
        "mlflow.runName": f"{request.dag_id}.{request.task_id}",
        "features.uri": request.features,
        "features.content_hash": str(features.manifest.get("content_hash")),
        "snapshot.content_hash": str(features.manifest.get("snapshot", {}).get("content_hash")),
        "code.version": code_version(),
        INPUT_KEY_TAG: key,
        **{f"library.{k}": v for k, v in tracking.library_versions().items()},
    }
    # A run created through the client stays RUNNING until set_terminated: it must not look
    # FINISHED while the workers are still training.
    mlflow_run_id = client.create_run(experiment_id, tags=tags).info.run_id
    params = {
        **config.as_params(),
        "workers": request.workers,
        "ds": features.manifest.get("ds"),
        "label_ds": features.manifest.get("label_ds", features.manifest.get("ds")),
    }
    client.log_batch(
        mlflow_run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()]
    )
    # The inputs' drift against the day before goes with the candidate: a reviewer comparing
    # versions sees whether the data moved under them.
    drift = features.manifest.get("validation", {}).get("snapshot", {}).get("drift", {})
    now = int(time.time() * 1000)
    drift_metrics = [
        mlflow.entities.Metric(f"drift_psi.{table}.{column}", float(score), now, 0)
        for table, scores in drift.items()
        for column, score in scores.items()
    ]
    if drift_metrics:
        client.log_batch(mlflow_run_id, metrics=drift_metrics)
    spec = WorkerSpec(
        module="mlops_jobs.churn.train_worker",
        arguments=(
            "--features",
            request.features,
            "--config",
            json.dumps({**(request.overrides or {})}),
            "--mlflow-run-id",
            mlflow_run_id,
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
            client.set_tag(mlflow_run_id, f"worker.{worker}.weights_digest", digest)
        if len(set(digests.values())) != 1:
            raise LaunchError(f"workers ended with different weights: {digests}")
        chief = results[0]
        client.log_metric(mlflow_run_id, "launch_seconds", chief["launch_seconds"])
        model_version = register(client, request, mlflow_run_id, instance)
    except BaseException:
        # The store may be what failed: a later try settles a run left RUNNING.
        with contextlib.suppress(Exception):
            client.set_terminated(mlflow_run_id, "FAILED")
        raise
    client.set_terminated(mlflow_run_id, "FINISHED")
    return {**_result(client, model_version), "reused": False}


def register(
    client: Any, request: TrainRequest, mlflow_run_id: str, instance: dict[str, str]
) -> Any:
    """Register the run's model as a candidate version; a duplicate is deleted (see
    ``tracking.keep_first_version``) and a registry error raised as ``RegistrationError``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        created = mlflow.register_model(
            f"runs:/{mlflow_run_id}/model",
            request.registered_model,
            tags={**instance, tracking.TRY_TAG: str(request.try_number), "role": "candidate"},
        )
        return (
            tracking.keep_first_version(client, request.registered_model, mlflow_run_id) or created
        )
    except MlflowException as err:
        raise RegistrationError(
            f"registering the model of MLflow run {mlflow_run_id} as a version of "
            f"{request.registered_model} failed: {err}"
        ) from err


def _result(client: Any, model_version: Any) -> dict[str, Any]:
    run = client.get_run(model_version.run_id)
    return {
        "mlflow_run_id": model_version.run_id,
        "experiment_id": run.info.experiment_id,
        "model_name": model_version.name,
        "model_version": str(model_version.version),
        "metrics": {k: v for k, v in run.data.metrics.items() if k in ("valid_auc", "test_auc")},
    }
