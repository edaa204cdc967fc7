"""Evaluate a candidate ``churn`` version against the current champion and an MLlib baseline.

All three models score the same frozen test split of the candidate's feature set. The baseline
is trained here on the train split and logged as an MLflow run of its own (``role=baseline``).
Metrics go through ``mlflow.models.evaluate`` into the candidate's run (champion and baseline
figures with a prefix), with a report under ``evaluation/``: ROC, precision-recall and
calibration plots with all three models, the candidate's confusion matrix, the per-segment table
and a Markdown summary. The champion is resolved once, at the start, and its version is returned
so that promotion can check that it has not moved since.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlops_jobs.churn.model import FeatureSet, predict_probabilities
from mlops_jobs.evaluation.gate import GateConfig, markdown_table
from mlops_jobs.evaluation.metrics import mlflow_evaluate, segment_metrics, segments_table
from mlops_jobs.training import tracking

CHAMPION = "champion"
REPORT_DIR = "evaluation"


class EvaluationError(ValueError):
    """The candidate, the champion or the feature set cannot be evaluated; names which."""


@dataclass(frozen=True)
class EvaluateRequest:
    features: str
    candidate_version: str
    registered_model: str = tracking.REGISTERED_MODEL
    thresholds: dict[str, Any] = field(default_factory=dict)
    dag_id: str = "adhoc"
    dag_run_id: str = "adhoc"
    task_id: str = "evaluate_model"
    map_index: int = -1
    try_number: int = 1


def load_probabilities(model_uri: str, inputs: dict[str, np.ndarray], what: str) -> np.ndarray:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        model = mlflow.pyfunc.load_model(model_uri)
        return predict_probabilities(model, inputs)
    except (OSError, ConnectionError, TimeoutError):
        raise  # the store or the network failed: a retry may succeed
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise EvaluationError(f"{what} ({model_uri}) cannot be loaded: {err.message}") from err
    except Exception as err:
        raise EvaluationError(f"{what} ({model_uri}) cannot score the test split: {err}") from err


def train_baseline(
    features: FeatureSet, test_keys: Any, tags: dict[str, str]
) -> tuple[str, np.ndarray]:
    """Fit the MLlib baseline, log it as its own run; returns its run id and test scores in the
    order of ``test_keys``."""
    import mlflow
    import pyspark

    from mlops_jobs.churn.baseline import (
        BASELINE_PARAMS,
        PROBABILITY,
        fit_baseline,
        predict_baseline,
    )
    from mlops_jobs.spark.session import get_spark

    spark = get_spark("churn-evaluate")
    train = spark.read.parquet(features.split_location("train").spark)
    test = spark.read.parquet(features.split_location("test").spark)
    model = fit_baseline(train, features)
    keys = list(test_keys.columns)
    scored = predict_baseline(model, test, features).toPandas()
    aligned = test_keys.merge(scored, on=keys, how="left")
    if aligned[PROBABILITY].isna().any():
        raise EvaluationError(f"baseline left test rows of {features.uri} unscored")
    with mlflow.start_run(run_name="churn.baseline", tags={**tags, "role": "baseline"}) as run:
        mlflow.log_params(
            {
                "model": "pyspark.ml LogisticRegression",
                **BASELINE_PARAMS,
                "features": len(features.features),
            }
        )
        mlflow.spark.log_model(model, "model", pip_requirements=[f"pyspark=={pyspark.__version__}"])
    return run.info.run_id, aligned[PROBABILITY].to_numpy(np.float64)


def run(request: EvaluateRequest) -> dict[str, Any]:
    """Evaluate and report; returns metrics of all three models and the champion compared with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    config = GateConfig.load(overrides=request.thresholds)  # bad thresholds fail before any work
    features = FeatureSet.open(request.features)
    client = mlflow.MlflowClient()
    name = request.registered_model
    try:
        candidate = client.get_model_version(name, str(request.candidate_version))
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # the registry failed, the request may be fine: not a bad-input error
        raise EvaluationError(
            f"candidate version {request.candidate_version} of {name} not found: {err.message}"
        ) from None
    champion = tracking.alias_version(client, name, CHAMPION)

    test = features.frame("test")
    if test.empty:
        raise EvaluationError(f"feature set {features.uri} has an empty test split")
    labels = test[features.manifest["label"]].to_numpy(np.int64)
    inputs = features.inputs(test)
    probabilities = {
        "candidate": load_probabilities(
            f"models:/{name}/{candidate.version}", inputs, f"candidate version {candidate.version}"
        )
    }
    if champion is not None:
        probabilities["champion"] = load_probabilities(
            f"models:/{name}/{champion.version}", inputs, f"champion version {champion.version}"
        )
    mlflow.set_experiment(experiment_id=client.get_run(str(candidate.run_id)).info.experiment_id)
    lineage = {
        **tracking.instance_tags(
            request.dag_id, request.dag_run_id, request.task_id, request.map_index
        ),
        tracking.TRY_TAG: str(request.try_number),
        "features.uri": features.uri,
        "features.content_hash": str(features.manifest.get("content_hash")),
        "candidate.version": str(candidate.version),
    }
    keys = list(features.manifest.get("keys", ["customer_id"]))
    baseline_run, probabilities["baseline"] = train_baseline(features, test[keys], lineage)

    threshold = config.operating_threshold
    result: dict[str, Any] = {
        "model_name": name,
        "threshold": threshold,
        "evaluated_on": {
            "uri": features.uri,
            "ds": features.manifest.get("ds"),
            "content_hash": features.manifest.get("content_hash"),
            "split": "test",
            "rows": len(test),
            "positives": int(labels.sum()),
        },
    }
    # The evaluation is logged into the candidate's training run, which is FINISHED: whatever
    # happens here, it stays FINISHED (a failed evaluation fails the task, not the training).
    mlflow.start_run(run_id=candidate.run_id)
    try:
        result["candidate"] = {
            "version": str(candidate.version),
            "mlflow_run_id": candidate.run_id,
            "metrics": mlflow_evaluate(
                labels, probabilities["candidate"], threshold, prefix="test_"
            ),
        }
        if champion is not None:
            result["champion"] = {
                "version": str(champion.version),
                "mlflow_run_id": champion.run_id,
                "metrics": mlflow_evaluate(
                    labels, probabilities["champion"], threshold, prefix="champion_test_"
                ),
            }
        else:
            result["champion"] = None
        result["baseline"] = {
            "version": None,
            "mlflow_run_id": baseline_run,
            "metrics": mlflow_evaluate(
                labels, probabilities["baseline"], threshold, prefix="baseline_test_"
            ),
        }
        segments = segments_table(segment_metrics(test, probabilities, config.segments, threshold))
        result["segments"] = segments[
            ["segment", "value", "model", "rows", "positives", "roc_auc", "pr_auc", "log_loss"]
        ].to_dict(orient="records")
        from mlops_jobs.evaluation.report import segments_markdown, write_report

        summary = "\n\n".join(
            [
                f"# Evaluation of {name} version {candidate.version}",
                markdown_table(result),
                "## ROC AUC by segment",
                segments_markdown(segments),
            ]
        )
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / REPORT_DIR
            write_report(directory, labels, probabilities, threshold, segments, summary)
            (directory / "evaluation.json").write_text(
                json.dumps(finite_or_none(result), indent=2, default=str)
            )
            mlflow.log_artifacts(str(directory), REPORT_DIR)
        mlflow.set_tags(
            {
                "evaluation.champion_version": result["champion"]["version"]
                if result["champion"]
                else "none",
                "evaluation.baseline_mlflow_run_id": baseline_run,
            }
        )
    finally:
        mlflow.end_run(status="FINISHED")
    now = int(time.time() * 1000)
    client.log_batch(
        baseline_run,
        metrics=[
            mlflow.entities.Metric(f"test_{k}", float(v), now, 0)
            for k, v in result["baseline"]["metrics"].items()
            if np.isfinite(v)
        ],
    )
    result["report_uri"] = f"runs:/{candidate.run_id}/{REPORT_DIR}"
    return finite_or_none(result)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN, and a
    metric that does not exist on a slice (ROC AUC of a slice without churners) is absent."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
