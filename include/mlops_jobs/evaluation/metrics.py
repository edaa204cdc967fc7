"""Binary classifier metrics on one frozen evaluation set, overall and by segment.

The overall figures go through MLflow's ``mlflow.models.evaluate`` (classifier evaluator, with
the probability-based metrics declared as extra metrics), so they are logged like any MLflow
evaluation; the per-segment table applies the same metric functions to each slice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

LABEL = "label"
PROBABILITY = "probability"
PREDICTION = "prediction"

#: Metric name -> whether greater is better. Names are what ``evaluate`` reports.
GREATER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "brier_score": False,
    "precision": True,
    "recall": True,
    "f1": True,
    "accuracy": True,
    "positive_rate": True,
}
REPORTED = tuple(GREATER_IS_BETTER)
_EPS = 1e-7


def _probability_metrics() -> dict[str, Callable[[np.ndarray, np.ndarray], float]]:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    def roc(y: np.ndarray, p: np.ndarray) -> float:
        return float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")

    def pr(y: np.ndarray, p: np.ndarray) -> float:
        return float(average_precision_score(y, p)) if y.any() else float("nan")

    def loss(y: np.ndarray, p: np.ndarray) -> float:
        return float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1]))

    def brier(y: np.ndarray, p: np.ndarray) -> float:
        return float(brier_score_loss(y, p))

    return {"roc_auc": roc, "pr_auc": pr, "log_loss": loss, "brier_score": brier}


def _threshold_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    true_positive = float(np.sum((predicted == 1) & (y == 1)))
    predicted_positive = float(np.sum(predicted == 1))
    positives = float(np.sum(y == 1))
    precision = true_positive / predicted_positive if predicted_positive else 0.0
    recall = true_positive / positives if positives else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": float(np.mean(predicted == y)) if len(y) else float("nan"),
        "positive_rate": predicted_positive / len(y) if len(y) else float("nan"),
    }


def binary_metrics(labels: Any, probabilities: Any, threshold: float) -> dict[str, float]:
    """Every reported metric for one set of labels and predicted probabilities."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        return dict.fromkeys(REPORTED, float("nan"))
    values = {name: fn(y, p) for name, fn in _probability_metrics().items()}
    values.update(_threshold_metrics(y, (p >= threshold).astype(np.int64)))
    return {name: values[name] for name in REPORTED}


def evaluation_frame(labels: Any, probabilities: Any, threshold: float) -> pd.DataFrame:
    """The frame ``evaluate`` reads: label, probability and the decision at ``threshold``."""
    probability = np.asarray(probabilities, dtype=np.float64).ravel()
    return pd.DataFrame(
        {
            LABEL: np.asarray(labels, dtype=np.int64).ravel(),
            PROBABILITY: probability,
            PREDICTION: (probability >= threshold).astype(np.int64),
        }
    )


def mlflow_evaluate(
    labels: Any, probabilities: Any, threshold: float, *, prefix: str = ""
) -> dict[str, float]:
    """Evaluate one model's predictions with ``mlflow.models.evaluate`` (classifier) into the
    active MLflow run, metric names prefixed with ``prefix``; returns the reported metrics.

    The classifier evaluator computes the threshold metrics from the ``prediction`` column;
    ROC AUC, PR AUC, log loss and the Brier score come from the ``probability`` column through
    extra metrics, because static predictions carry no ``predict_proba``.
    """
    import mlflow
    from mlflow.models import make_metric

    def extra(name: str, fn: Callable[[np.ndarray, np.ndarray], float]) -> Any:
        def eval_fn(predictions: pd.Series, targets: pd.Series, probability: pd.Series) -> float:
            return fn(np.asarray(targets, dtype=np.int64), np.asarray(probability, dtype=float))

        return make_metric(eval_fn=eval_fn, greater_is_better=GREATER_IS_BETTER[name], name=name)

    frame = evaluation_frame(labels, probabilities, threshold)
    result = mlflow.models.evaluate(
        data=frame,
        targets=LABEL,
        predictions=PREDICTION,
        model_type="classifier",
        extra_metrics=[extra(n, fn) for n, fn in _probability_metrics().items()],
        evaluator_config={"metric_prefix": prefix, "pos_label": 1, "label_list": [0, 1]},
    )
    computed = binary_metrics(frame[LABEL], frame[PROBABILITY], threshold)
    names = {
        "roc_auc": "roc_auc",
        "pr_auc": "pr_auc",
        "log_loss": "log_loss",
        "brier_score": "brier_score",
        "precision": "precision_score",
        "recall": "recall_score",
        "f1": "f1_score",
        "accuracy": "accuracy_score",
    }
    missing = [m for m in names.values() if f"{prefix}{m}" not in result.metrics]
    if missing:
        # MLflow leaves out what it cannot compute on this data (e.g. one class only); the
        # same definitions computed here fill in, and the log says which.
        logging.getLogger(__name__).warning(
            "mlflow.models.evaluate did not report %s; using the local definitions",
            ", ".join(missing),
        )
    metrics = {
        name: float(result.metrics.get(f"{prefix}{mlflow_name}", computed[name]))
        for name, mlflow_name in names.items()
    }
    metrics["positive_rate"] = computed["positive_rate"]
    return metrics


@dataclass(frozen=True)
class SegmentRow:
    model: str
    column: str
    value: str
    rows: int
    positives: int
    metrics: dict[str, float]


def segment_metrics(
    frame: pd.DataFrame,
    probabilities: Mapping[str, Any],
    segments: Sequence[str],
    threshold: float,
) -> list[SegmentRow]:
    """Metrics of each model in each slice of each segment column (e.g. plan, region)."""
    labels = frame[LABEL].to_numpy()
    rows = []
    for column in segments:
        if column not in frame.columns:
            raise ValueError(f"segment column {column!r} is not in the evaluation set")
        for value in sorted(frame[column].astype(str).unique()):
            mask = (frame[column].astype(str) == value).to_numpy()
            for model, probs in probabilities.items():
                p = np.asarray(probs, dtype=np.float64).ravel()[mask]
                rows.append(
                    SegmentRow(
                        model=model,
                        column=column,
                        value=value,
                        rows=int(mask.sum()),
                        positives=int(labels[mask].sum()),
                        metrics=binary_metrics(labels[mask], p, threshold),
                    )
                )
    return rows


def segments_table(rows: Sequence[SegmentRow]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "segment": r.column,
                "value": r.value,
                "model": r.model,
                "rows": r.rows,
                "positives": r.positives,
                **r.metrics,
            }
            for r in rows
        ]
    )
