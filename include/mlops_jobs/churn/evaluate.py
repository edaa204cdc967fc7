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

from mlops_jobs.churn import MODEL_NAME, PROMOTION_CONFIG
from mlops_jobs.churn.features import OUT_OF_TIME
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
    registered_model: str = MODEL_NAME
    thresholds: dict[str, Any] = field(default_factory=dict)
    dag_id: str = "adhoc"
    dag_run_id: str = "adhoc"
    task_id: str = "evaluate_model"
    map_index: int = -1
    try_number: int = 1


def load_probabilities(
    model_uri: str, inputs: dict[str, dict[str, np.ndarray]], what: str
) -> dict[str, np.ndarray]:
    """Load the model once and score each split's ``inputs`` (by split name)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    split = "the model"
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        scores = {}
        for split, split_inputs in inputs.items():
            scores[split] = predict_probabilities(model, split_inputs)
        return scores
    except (OSError, ConnectionError, TimeoutError):
        raise  # the store or the network failed: a retry may succeed
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise EvaluationError(f"{what} ({model_uri}) cannot be loaded: {err.message}") from err
    except Exception as err:
        raise EvaluationError(f"{what} ({model_uri}) cannot score {split}: {err}") from err


def train_baseline(
    features: FeatureSet, keys_by_split: dict[str, Any], tags: dict[str, str]
) -> tuple[str, dict[str, np.ndarray]]:
    """Fit the MLlib baseline, log it as its own run; returns its run id and the scores of
    each split in ``keys_by_split``, in the order of that split's keys."""
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
    model = fit_baseline(train, features)
    scores = {}
    for split, split_keys in keys_by_split.items():
        frame = spark.read.parquet(features.split_location(split).spark)
        scored = predict_baseline(model, frame, features).toPandas()
        aligned = split_keys.merge(scored, on=list(split_keys.columns), how="left")
        if aligned[PROBABILITY].isna().any():
            raise EvaluationError(f"baseline left {split} rows of {features.uri} unscored")
        scores[split] = aligned[PROBABILITY].to_numpy(np.float64)
    with mlflow.start_run(run_name="churn.baseline", tags={**tags, "role": "baseline"}) as run:
        mlflow.log_params(
            {
                "model": "pyspark.ml LogisticRegression",
                **BASELINE_PARAMS,
                "features": len(features.features),
            }
        )
        mlflow.spark.log_model(model, "model", pip_requirements=[f"pyspark=={pyspark.__version__}"])
    return run.info.run_id, scores


def run(request: EvaluateRequest) -> dict[str, Any]:
    """Evaluate and report; returns metrics of all three models and the champion compared with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    config = GateConfig.load(
        PROMOTION_CONFIG, overrides=request.thresholds
    )  # bad thresholds fail before any work
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
    later = features.frame(OUT_OF_TIME) if features.rows(OUT_OF_TIME) else None
    models = {"candidate": candidate} | ({"champion": champion} if champion is not None else {})
    splits = {"the test split": features.inputs(test)}
    if later is not None:
        splits["the out-of-time split"] = features.inputs(later)
    probabilities, later_probabilities = {}, {}
    for role, version in models.items():
        uri, what = f"models:/{name}/{version.version}", f"{role} version {version.version}"
        scores = load_probabilities(uri, splits, what)
        probabilities[role] = scores["the test split"]
        if later is not None:
            later_probabilities[role] = scores["the out-of-time split"]
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
    to_score = {"test": test[keys]} | ({OUT_OF_TIME: later[keys]} if later is not None else {})
    baseline_run, baseline_scores = train_baseline(features, to_score, lineage)
    probabilities["baseline"] = baseline_scores["test"]
    if later is not None:
        later_probabilities["baseline"] = baseline_scores[OUT_OF_TIME]

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
        if later is not None:
            result["out_of_time"] = out_of_time_metrics(
                features, later, later_probabilities, threshold
            )
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


def out_of_time_metrics(
    features: FeatureSet, later: Any, probabilities: dict[str, np.ndarray], threshold: float
) -> dict[str, Any]:
    """Every model's metrics on the out-of-time split (a later day than the candidate trained
    on), logged with the prefixes ``oot_``, ``champion_oot_`` and ``baseline_oot_``."""
    labels = later[features.manifest["label"]].to_numpy(np.int64)
    prefixes = {"candidate": "oot_", "champion": "champion_oot_", "baseline": "baseline_oot_"}
    return {
        "ds": (features.manifest.get("out_of_time") or {}).get("ds"),
        "label_ds": features.manifest.get("label_ds"),
        "rows": len(later),
        "positives": int(labels.sum()),
        "metrics": {
            role: mlflow_evaluate(labels, scores, threshold, prefix=prefixes[role])
            for role, scores in probabilities.items()
        },
    }


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
