"""The promotion gate's decisions and the metric definitions, on literal figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlops_jobs.churn import PROMOTION_CONFIG
from mlops_jobs.evaluation.gate import GateConfig, GateConfigError, decide, markdown_table
from mlops_jobs.evaluation.metrics import binary_metrics, segment_metrics, segments_table

CONFIG = GateConfig.load(
    PROMOTION_CONFIG, overrides={"floor": 0.7, "min_improvement_over_champion": 0.01}
)


def failed(decision) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.name for c in decision.failed]


def test_first_candidate_needs_the_floor_and_the_baseline() -> None:
    assert decide(CONFIG, {"roc_auc": 0.75}, {"roc_auc": 0.72}).passed
    assert failed(decide(CONFIG, {"roc_auc": 0.69}, {"roc_auc": 0.6})) == ["floor"]
    # "better than the baseline" is strict: a tie does not pass
    assert failed(decide(CONFIG, {"roc_auc": 0.75}, {"roc_auc": 0.75})) == ["beats_baseline"]


def test_candidate_must_beat_the_champion_by_the_margin() -> None:
    champion = {"roc_auc": 0.80}
    assert decide(CONFIG, {"roc_auc": 0.811}, {"roc_auc": 0.7}, champion).passed
    decision = decide(CONFIG, {"roc_auc": 0.805}, {"roc_auc": 0.7}, champion)
    assert failed(decision) == ["beats_champion"]
    assert "0.8050 against champion 0.8000" in decision.failed[0].detail
    # the same version evaluated against itself is not held to the margin
    assert decide(
        CONFIG, {"roc_auc": 0.80}, {"roc_auc": 0.7}, champion, candidate_is_champion=True
    ).passed


def test_lower_is_better_metrics_are_compared_the_right_way() -> None:
    config = GateConfig.load(
        PROMOTION_CONFIG,
        overrides={"metric": "log_loss", "floor": 0.5, "min_improvement_over_champion": 0.01},
    )
    assert decide(config, {"log_loss": 0.30}, {"log_loss": 0.35}, {"log_loss": 0.32}).passed
    decision = decide(config, {"log_loss": 0.34}, {"log_loss": 0.33}, {"log_loss": 0.32})
    assert failed(decision) == ["beats_champion", "beats_baseline"]


def test_missing_or_nan_metric_fails_with_its_name() -> None:
    for missing in (float("nan"), None):
        decision = decide(CONFIG, {"roc_auc": missing}, {"roc_auc": 0.7})
        assert not decision.passed
        assert decision.checks[0].detail == "candidate has no roc_auc on the test split"
    decision = decide(CONFIG, {"roc_auc": 0.8}, {"roc_auc": None})
    assert failed(decision) == ["beats_baseline"]
    assert decision.failed[0].detail.endswith("the reference has no roc_auc")


def test_config_errors_name_the_threshold() -> None:
    with pytest.raises(GateConfigError, match="unknown promotion thresholds: flor"):
        GateConfig.load(PROMOTION_CONFIG, overrides={"flor": 0.1})
    with pytest.raises(GateConfigError, match="metric 'auc'"):
        GateConfig.load(PROMOTION_CONFIG, overrides={"metric": "auc"})
    with pytest.raises(GateConfigError, match="operating_threshold"):
        GateConfig.load(PROMOTION_CONFIG, overrides={"operating_threshold": 1.5})
    with pytest.raises(GateConfigError, match="invalid promotion threshold value"):
        GateConfig.load(PROMOTION_CONFIG, overrides={"floor": "high"})


def test_markdown_table_shows_every_model_and_check() -> None:
    evaluation = {
        "candidate": {"version": "3", "metrics": {"roc_auc": 0.81, "log_loss": 0.3}},
        "champion": {"version": "2", "metrics": {"roc_auc": 0.80, "log_loss": 0.31}},
        "baseline": {"version": None, "metrics": {"roc_auc": 0.78, "log_loss": 0.33}},
    }
    decision = decide(CONFIG, evaluation["candidate"]["metrics"], evaluation["baseline"]["metrics"],
                      evaluation["champion"]["metrics"])  # fmt: skip
    table = markdown_table(evaluation, decision)
    assert "| metric | candidate (v3) | champion (v2) | baseline |" in table
    assert "| roc_auc ↑ | 0.8100 | 0.8000 | 0.7800 |" in table
    assert "| log_loss ↓ | 0.3000 | 0.3100 | 0.3300 |" in table
    assert "**Gate: passed**" in table
    assert decision.checks
    for check in decision.checks:
        assert f"- pass `{check.name}`: {check.detail}" in table
    rejected = decide(CONFIG, {"roc_auc": 0.5, "log_loss": 0.7}, evaluation["baseline"]["metrics"],
                      evaluation["champion"]["metrics"])  # fmt: skip
    assert "**Gate: rejected**" in markdown_table(evaluation, rejected)
    assert "- **FAIL** `" in markdown_table(evaluation, rejected)


def test_binary_metrics_match_their_definitions() -> None:
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 500)
    y = (rng.uniform(size=500) < p).astype(int)
    metrics = binary_metrics(y, p, threshold=0.4)
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert metrics["log_loss"] == pytest.approx(log_loss(y, p))
    assert metrics["brier_score"] == pytest.approx(np.mean((p - y) ** 2))
    predicted = p >= 0.4
    assert metrics["precision"] == pytest.approx((predicted & (y == 1)).sum() / predicted.sum())
    assert metrics["recall"] == pytest.approx((predicted & (y == 1)).sum() / (y == 1).sum())
    assert metrics["positive_rate"] == pytest.approx(predicted.mean())
    # a slice with one class has no ROC AUC, and says so instead of failing
    assert math.isnan(binary_metrics([0, 0, 0], [0.1, 0.2, 0.3], 0.5)["roc_auc"])


def test_segments_cover_every_value_of_every_column() -> None:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "label": [1, 0, 1, 0, 1, 0],
            "plan": ["basic", "basic", "basic", "premium", "premium", "premium"],
            "region": ["north", "south", "north", "south", "north", "south"],
        }
    )
    good = np.array([0.9, 0.1, 0.8, 0.2, 0.7, 0.3])
    table = segments_table(
        segment_metrics(frame, {"candidate": good, "baseline": 1 - good}, ["plan", "region"], 0.5)
    )
    assert len(table) == (2 + 2) * 2
    basic = table[(table["value"] == "basic") & (table["model"] == "candidate")].iloc[0]
    assert basic["rows"] == 3 and basic["positives"] == 2 and basic["roc_auc"] == 1.0
    assert (
        table[(table["value"] == "basic") & (table["model"] == "baseline")]["roc_auc"].iloc[0]
        == 0.0
    )
    with pytest.raises(ValueError, match="segment column 'tier'"):
        segment_metrics(frame, {"candidate": good}, ["tier"], 0.5)
