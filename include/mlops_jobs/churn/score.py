"""Batch scoring: ``churn@champion`` scores the inference features of one ``ds`` with Spark.

The alias is resolved once, to a version, so the whole job uses one model even if the champion
moves meanwhile. The model's files are shipped to the executors (``SparkContext.addFile``), each
Python worker loads it once, and partitions are scored with ``mapInPandas`` through the same
input conversion as training and evaluation (``model_inputs``). Predictions are published
atomically at the output with a manifest naming the model version.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_jobs import lake
from mlops_jobs.churn import MODEL_NAME, PROMOTION_CONFIG
from mlops_jobs.churn.tables import CHURN_PREDICTIONS
from mlops_jobs.training import tracking

PREDICTION_COLUMNS = CHURN_PREDICTIONS.columns
_MODELS: dict[str, Any] = {}


class ScoringError(ValueError):
    """Nothing to score with, or nothing to score; the message names the model or the input."""


@dataclass(frozen=True)
class ScoreRequest:
    features: str
    output: str
    registered_model: str = MODEL_NAME
    alias: str = "champion"
    threshold: float | None = None


def _load_shipped_model(name: str) -> Any:
    """The pyfunc model shipped as ``name``, loaded once per Python worker."""
    if name not in _MODELS:
        import mlflow
        from pyspark import SparkFiles

        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        _MODELS[name] = mlflow.pyfunc.load_model(SparkFiles.get(name))
    return _MODELS[name]


def score_batches(
    batches: Iterator[Any],
    shipped: str,
    numeric: list[str],
    categorical: list[str],
    threshold: float,
    version: str,
    scored_at: dt.datetime,
) -> Iterator[Any]:
    """``mapInPandas`` body: the model's churn probability for every row of every batch."""
    import pandas as pd

    from mlops_jobs.churn.model import model_inputs, predict_probabilities

    model = _load_shipped_model(shipped)
    for frame in batches:
        if frame.empty:
            continue
        probability = predict_probabilities(model, model_inputs(frame, numeric, categorical))
        yield pd.DataFrame(
            {
                "customer_id": frame["customer_id"].astype("int64").to_numpy(),
                "churn_probability": probability,
                "churn_predicted": probability >= threshold,
                "model_version": version,
                "scored_at": pd.Timestamp(scored_at).tz_convert(None),
            }
        )


def run(request: ScoreRequest) -> dict[str, Any]:
    """Score and publish; returns the predictions' manifest."""
    import mlflow

    from mlops_jobs.evaluation.gate import GateConfig

    threshold = (
        GateConfig.load(PROMOTION_CONFIG).operating_threshold
        if request.threshold is None
        else request.threshold
    )
    if not 0.0 < threshold < 1.0:
        raise ScoringError(f"threshold must lie in (0, 1), got {threshold}")
    try:
        features = lake.open_box(request.features)
    except lake.LakeError as err:
        raise ScoringError(f"inference features {request.features}: {err}") from None
    client = mlflow.MlflowClient()
    name = request.registered_model
    version = tracking.alias_version(client, name, request.alias)
    if version is None:
        raise ScoringError(
            f"{name} has no @{request.alias}: no model to score with (promote one first)"
        )
    model_uri = f"models:/{name}/{version.version}"
    # A directory named for this version and call: executors cache loaded models by the
    # shipped name, and SparkContext.addFile refuses a second path under a name it has seen.
    shipped = f"{name.replace('.', '_')}-v{version.version}-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="mlops-score-"))
    try:
        return _score(request, version, model_uri, workdir / shipped, threshold, features)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _score(
    request: ScoreRequest,
    version: Any,
    model_uri: str,
    model_dir: Path,
    threshold: float,
    features_box: lake.Box,
) -> dict[str, Any]:
    import mlflow

    from mlops_jobs.spark.session import get_spark, write_sorted_parquet

    features = features_box.manifest
    model_dir.mkdir(parents=True)
    local_model = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(model_dir))
    if Path(local_model).resolve() != model_dir.resolve():
        shutil.copytree(local_model, model_dir, dirs_exist_ok=True)
    local_model, shipped = str(model_dir), model_dir.name
    name = request.registered_model
    signature = mlflow.models.get_model_info(model_uri).signature
    expected = [spec.name for spec in signature.inputs.inputs] if signature else []
    missing = [c for c in expected if c not in features["features"]]
    if missing:
        raise ScoringError(
            f"{model_uri} needs features that {features_box.uri} lacks: {', '.join(missing)}"
        )
    numeric = [f for f in features["features"] if f not in features["categorical"]]
    numeric = [f for f in numeric if not expected or f in expected]
    categorical = [f for f in features["categorical"] if not expected or f in expected]

    spark = get_spark("churn-score")
    spark.sparkContext.addFile(local_model, recursive=True)
    frame = spark.read.parquet(features_box.path(features.get("path", "data")).spark)
    scored_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    schema = ", ".join(f"{n} {t}" for n, t in PREDICTION_COLUMNS)
    version_text = str(version.version)

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        return score_batches(
            batches, shipped, numeric, categorical, threshold, version_text, scored_at
        )

    predictions = (
        frame.select("customer_id", *numeric, *categorical).mapInPandas(score, schema).cache()
    )
    try:
        with lake.publishing(request.output) as draft:
            write_sorted_parquet(predictions, draft.location.child("data").spark, ("customer_id",))
            summary = predictions.selectExpr(
                "count(*) AS rows",
                "sum(CAST(churn_predicted AS INT)) AS positives",
                "avg(churn_probability) AS mean_probability",
            ).first()
            rows = int(summary["rows"]) if summary else 0
            if rows != int(features.get("rows", rows)):
                raise ScoringError(
                    f"scored {rows} rows but {features_box.uri} holds {features.get('rows')}"
                )
            box = draft.commit(
                {
                    "format_version": 1,
                    "dataset": "churn/predictions",
                    "ds": features.get("ds"),
                    "path": "data",
                    "columns": [{"name": n, "type": t} for n, t in PREDICTION_COLUMNS],
                    "model": {
                        "name": name,
                        "alias": request.alias,
                        "version": version_text,
                        "mlflow_run_id": version.run_id,
                    },
                    "threshold": threshold,
                    "rows": rows,
                    "predicted_churners": int(summary["positives"] or 0) if summary else 0,
                    "mean_probability": float(summary["mean_probability"] or 0.0)
                    if summary
                    else 0.0,
                    "features": {
                        "uri": features_box.uri,
                        "content_hash": features.get("content_hash"),
                    },
                    "scored_at": scored_at.isoformat(),
                }
            )
    finally:
        predictions.unpersist()
    return {**box.manifest, "uri": box.uri}
