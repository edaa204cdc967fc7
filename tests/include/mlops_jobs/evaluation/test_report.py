"""The evaluation report's files, also for a test split too small to hold both classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops_jobs.churn.evaluate import finite_or_none
from mlops_jobs.evaluation.metrics import binary_metrics, segment_metrics, segments_table
from mlops_jobs.evaluation.report import write_report


@pytest.mark.parametrize("labels", [np.array([0, 1, 0, 1, 1, 0]), np.array([0, 0, 0, 0, 0, 0])])
def test_report_files_are_written(tmp_path: Path, labels: np.ndarray) -> None:
    import pandas as pd

    predictions = {
        "candidate": np.array([0.2, 0.9, 0.1, 0.7, 0.6, 0.3]),
        "baseline": np.array([0.4, 0.6, 0.5, 0.5, 0.4, 0.6]),
    }
    frame = pd.DataFrame({"label": labels, "plan": ["basic", "premium"] * 3})
    segments = segments_table(segment_metrics(frame, predictions, ["plan"], 0.5))
    files = write_report(tmp_path / "evaluation", labels, predictions, 0.5, segments, "# summary")
    names = {f.name for f in files}
    assert names == {
        "roc.png",
        "precision_recall.png",
        "calibration.png",
        "confusion_matrix.png",
        "segments.csv",
        "summary.md",
    }
    for png in (f for f in files if f.suffix == ".png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_that_do_not_exist_become_null() -> None:
    metrics = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)
    cleaned = finite_or_none({"candidate": {"metrics": metrics}, "rows": [1.0, float("inf")]})
    assert cleaned["candidate"]["metrics"]["roc_auc"] is None
    assert cleaned["candidate"]["metrics"]["brier_score"] == pytest.approx(metrics["brier_score"])
    assert cleaned["rows"] == [1.0, None]
