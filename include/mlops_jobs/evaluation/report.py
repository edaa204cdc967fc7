"""The comparison report a person opens in the MLflow UI: PNG plots and tables.

ROC and precision-recall curves with every model, a calibration plot, the candidate's confusion
matrix at the operating threshold, the per-segment table (CSV and Markdown) and the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLOURS = {"candidate": "#1f77b4", "champion": "#2ca02c", "baseline": "#7f7f7f"}


def _figure(models: Iterable[str] = ()) -> tuple[Any, Any]:
    """A figure whose curves take each model's colour in turn (``models``, in plot order)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    if models:
        ax.set_prop_cycle(color=[COLOURS.get(m, "#d62728") for m in models])
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def _both_classes(labels: np.ndarray, ax: Any) -> bool:
    """Curves need churners and stayers; say so on the plot when one class is missing."""
    if len(np.unique(labels)) == 2:
        return True
    ax.text(0.5, 0.5, "the test split holds one class only", ha="center", va="center")
    return False


def roc_plot(labels: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path) -> Path:
    from sklearn.metrics import RocCurveDisplay

    fig, ax = _figure(predictions)
    for name, probs in predictions.items() if _both_classes(labels, ax) else ():
        RocCurveDisplay.from_predictions(labels, probs, name=name, ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return _save(fig, path)


def pr_plot(labels: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path) -> Path:
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = _figure(predictions)
    for name, probs in predictions.items() if _both_classes(labels, ax) else ():
        PrecisionRecallDisplay.from_predictions(labels, probs, name=name, ax=ax)
    ax.axhline(float(np.mean(labels)), linestyle=":", color="black", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test split")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    return _save(fig, path)


def calibration_plot(
    labels: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path, bins: int = 10
) -> Path:
    from sklearn.calibration import CalibrationDisplay

    fig, ax = _figure(predictions)
    for name, probs in predictions.items():
        CalibrationDisplay.from_predictions(
            labels, probs, n_bins=bins, strategy="quantile", name=name, ax=ax
        )
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
        title="Calibration (quantile bins), test split",
    )
    ax.legend(loc="upper left")
    return _save(fig, path)


def confusion_plot(labels: np.ndarray, probs: np.ndarray, threshold: float, path: Path) -> Path:
    from sklearn.metrics import ConfusionMatrixDisplay

    fig, ax = _figure()
    ConfusionMatrixDisplay.from_predictions(
        labels,
        (probs >= threshold).astype(int),
        labels=[0, 1],
        display_labels=["stays", "churns"],
        cmap="Blues",
        colorbar=False,
        values_format=",d",
        ax=ax,
    )
    ax.set(
        xlabel="predicted",
        ylabel="actual",
        title=f"Candidate confusion matrix at threshold {threshold:g}",
    )
    return _save(fig, path)


def segments_markdown(table: pd.DataFrame, metric: str = "roc_auc") -> str:
    """One row per segment value, one column per model: ``metric`` (rows, positives)."""
    if table.empty:
        return "(no segments)"
    wide = table.pivot_table(
        index=["segment", "value"], columns="model", values=metric, aggfunc="first"
    )
    sizes = table.groupby(["segment", "value"])[["rows", "positives"]].first()
    models = [m for m in ("candidate", "champion", "baseline") if m in wide.columns]
    frame = sizes.rename(columns={"positives": "churners"}).join(
        wide[models].rename(columns={m: f"{m} {metric}" for m in models})
    )
    return str(frame.reset_index().to_markdown(index=False, floatfmt=".4f"))


def write_report(
    directory: Path,
    labels: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    threshold: float,
    segments: pd.DataFrame,
    summary_markdown: str,
) -> list[Path]:
    """Write every report file into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    files = [
        roc_plot(labels, predictions, directory / "roc.png"),
        pr_plot(labels, predictions, directory / "precision_recall.png"),
        calibration_plot(labels, predictions, directory / "calibration.png"),
        confusion_plot(
            labels, predictions["candidate"], threshold, directory / "confusion_matrix.png"
        ),
    ]
    segments.to_csv(directory / "segments.csv", index=False)
    files.append(directory / "segments.csv")
    (directory / "summary.md").write_text(summary_markdown + "\n")
    files.append(directory / "summary.md")
    return files
