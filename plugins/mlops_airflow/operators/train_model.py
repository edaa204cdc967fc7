"""Distributed training of the churn model through the job operator."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import XCom
from airflow.sdk import BaseOperatorLink

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.operators.spark_job import SparkJobOperator, instance_arguments
from mlops_airflow.utils import (
    as_bool,
    json_mapping,
    mlflow_model_version_url,
    mlflow_run_url,
    optional_number,
    positive_int,
    resolve_model_name,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

XCOM_MLFLOW_RUN_URL = "mlflow_run_url"
XCOM_MODEL_VERSION_URL = "mlflow_model_version_url"


class MlflowRunLink(BaseOperatorLink):
    """Link to the MLflow run that trained the model."""

    name = "MLflow run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=XCOM_MLFLOW_RUN_URL, ti_key=ti_key) or ""


class MlflowModelVersionLink(BaseOperatorLink):
    """Link to the registered model version the task registered, promoted or restored."""

    name = "Model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=XCOM_MODEL_VERSION_URL, ti_key=ti_key) or ""


def push_model_version_url(
    context: Context, name: str, version: str | int, base: str | None = None
) -> None:
    """Push the version's MLflow UI page for ``MlflowModelVersionLink`` (when the UI's URL is
    configured)."""
    url = mlflow_model_version_url(name, version, base)
    if url:
        context["ti"].xcom_push(key=XCOM_MODEL_VERSION_URL, value=url)


class TrainModelOperator(SparkJobOperator):
    """
    Train the churn model with N synchronous TensorFlow workers (``mlops-job churn-train``) on
    the configured compute backend, and register it in MLflow as a candidate.

    The Airflow ids of the task try are passed to the job, which tags the run and version with
    them and registers nothing twice for the same try. A version already trained on the same
    inputs (feature set, code, configuration, workers) is reused unless ``retrain`` is set.
    Returns ``{mlflow_run_id, experiment_id, model_name, model_version, metrics, reused}``;
    pushes ``mlflow_run_url`` and ``mlflow_model_version_url`` for the "MLflow run" and "Model
    version" links.

    :param features: URI of the feature set. (templated)
    :param workers: Number of TensorFlow workers. (templated)
    :param train_params: Training parameter overrides (see ``train_config.json``). (templated)
    :param epochs: Maximum epochs (``epochs``); None keeps the configured value. (templated)
    :param learning_rate: Adam's learning rate (``learning_rate``). (templated)
    :param batch_size: Batch size per worker (``per_worker_batch_size``). (templated)
    :param model_name: Registered model; default the Variable ``mlops_model_name``, else
        ``MLOPS_MODEL_NAME``, else ``churn`` (``catalog.schema.model`` in Unity Catalog).
        (templated)
    :param worker_timeout_seconds: Bound on each worker; a hung or dead worker fails the stage.
        (templated)
    :param retrain: Train even if a version was trained on the same inputs. (templated)
    :param mlflow_ui_url: Base URL of the MLflow UI for the link; default Variable
        ``mlops_mlflow_ui_url`` or ``MLOPS_MLFLOW_UI_URL``.
    """

    template_fields: Sequence[str] = (
        *SparkJobOperator.template_fields,
        "features",
        "workers",
        "train_params",
        "epochs",
        "learning_rate",
        "batch_size",
        "model_name",
        "worker_timeout_seconds",
        "retrain",
    )
    operator_extra_links: tuple[BaseOperatorLink, ...] = (
        *SparkJobOperator.operator_extra_links,
        MlflowRunLink(),
        MlflowModelVersionLink(),
    )

    def __init__(
        self,
        *,
        features: str,
        workers: int | str = 2,
        train_params: Mapping[str, Any] | str | None = None,
        epochs: int | str | None = None,
        learning_rate: float | str | None = None,
        batch_size: int | str | None = None,
        model_name: str | None = None,
        worker_timeout_seconds: int | str = 1800,
        retrain: bool | str = False,
        mlflow_ui_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("job", "churn-train")
        kwargs.setdefault("spark_conf", {"spark.python.worker.reuse": "false"})
        super().__init__(**kwargs)
        self.features = features
        self.workers = workers
        self.train_params = train_params
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.model_name = model_name
        self.worker_timeout_seconds = worker_timeout_seconds
        self.retrain = retrain
        self.mlflow_ui_url = mlflow_ui_url

    def job_arguments(self, context: Context) -> list[str]:
        overrides = self.training_overrides()
        return [
            *super().job_arguments(context),
            "--features", str(self.features),
            "--workers", str(positive_int(self.workers, "workers")),
            "--params", json.dumps(overrides),
            "--model-name", resolve_model_name(self.model_name),
            "--timeout-seconds",
            str(positive_int(self.worker_timeout_seconds, "worker_timeout_seconds")),
            *(["--retrain"] if as_bool(self.retrain, "retrain") else []),
            *instance_arguments(context),
        ]  # fmt: skip

    def training_overrides(self) -> dict[str, Any]:
        """``train_params`` with the typed settings merged in; a setting given both ways with
        different values is an error naming it."""
        overrides = json_mapping(self.train_params, "train_params")
        typed = {
            "epochs": optional_number(self.epochs, "epochs", int, minimum=1),
            "learning_rate": optional_number(self.learning_rate, "learning_rate", float),
            "per_worker_batch_size": optional_number(self.batch_size, "batch_size", int, 1),
        }
        for key, value in typed.items():
            if value is None:
                continue
            if key in overrides and overrides[key] != value:
                raise InvalidParameterError(
                    f"{key} is {value!r} but train_params sets it to {overrides[key]!r}; "
                    "give it once"
                )
            overrides[key] = value
        return overrides

    def execute(self, context: Context) -> Any:
        # Every worker needs a task slot of its own on the local backend.
        self.local_master = f"local[{positive_int(self.workers, 'workers')}]"
        return super().execute(context)

    def asset_extra(self, result: Any) -> dict[str, Any] | None:
        keys = ("model_name", "model_version", "mlflow_run_id", "reused")
        return {k: result.get(k) for k in keys}

    def process_result(self, context: Context, result: Any) -> Any:
        if not isinstance(result, dict) or "model_version" not in result:
            raise InvalidParameterError(f"training job returned no model version: {result!r}")
        url = mlflow_run_url(result["experiment_id"], result["mlflow_run_id"], self.mlflow_ui_url)
        if url:
            context["ti"].xcom_push(key=XCOM_MLFLOW_RUN_URL, value=url)
        push_model_version_url(
            context, result["model_name"], result["model_version"], self.mlflow_ui_url
        )
        self.log.info(
            "Registered %s version %s (run %s): %s",
            result["model_name"],
            result["model_version"],
            result["mlflow_run_id"],
            result.get("metrics"),
        )
        return result
