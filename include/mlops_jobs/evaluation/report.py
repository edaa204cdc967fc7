"""The comparison report a person opens in the MLflow UI: PNG plots and tables.

ROC and precision-recall curves with every model, a calibration plot, the candidate's confusion
matrix at the operating threshold, the per-segment table (CSV and Markdown) and the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

COLOURS = {"candidate": "#1f77b4", "champion": "#2ca02c", "baseline": "#7f7f7f"}


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 5), dpi=100)


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
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = _figure()
    for name, probs in predictions.items() if _both_classes(labels, ax) else ():
        fpr, tpr, _ = roc_curve(labels, probs)
        auc = roc_auc_score(labels, probs)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", color=COLOURS.get(name))
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test split")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    return _save(fig, path)


def pr_plot(labels: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path) -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = _figure()
    for name, probs in predictions.items() if _both_classes(labels, ax) else ():
        precision, recall, _ = precision_recall_curve(labels, probs)
        ap = average_precision_score(labels, probs)
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})", color=COLOURS.get(name))
    ax.axhline(float(np.mean(labels)), linestyle=":", color="black", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test split")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    return _save(fig, path)


def calibration_plot(
    labels: np.ndarray, predictions: Mapping[str, np.ndarray], path: Path, bins: int = 10
) -> Path:
    from sklearn.calibration import calibration_curve

    fig, ax = _figure()
    for name, probs in predictions.items():
        observed, predicted = calibration_curve(labels, probs, n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=name, color=COLOURS.get(name))
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", linewidth=0.8)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
        title="Calibration (quantile bins), test split",
    )
    ax.legend(loc="upper left")
    return _save(fig, path)


def confusion_plot(labels: np.ndarray, probs: np.ndarray, threshold: float, path: Path) -> Path:
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(labels, (probs >= threshold).astype(int), labels=[0, 1])
    fig, ax = _figure()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, f"{count:,}", ha="center", va="center", color=colour, fontsize=14)
    ax.set_xticks([0, 1], ["stays", "churns"])
    ax.set_yticks([0, 1], ["stays", "churns"])
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
    lines = [
        "| segment | value | rows | churners | "
        + " | ".join(f"{m} {metric}" for m in models)
        + " |",
        "|---|---|---:|---:|" + "---:|" * len(models),
    ]
    for (segment, value), row in wide.iterrows():
        size = sizes.loc[(segment, value)]
        cells = ["nan" if pd.isna(row[m]) else f"{row[m]:.4f}" for m in models]
        lines.append(
            f"| {segment} | {value} | {int(size['rows'])} | {int(size['positives'])} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


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
