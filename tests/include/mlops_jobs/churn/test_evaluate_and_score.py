"""Evaluation and batch scoring jobs on a real feature set, real tf-keras models in a real MLflow
store, and the local Spark session: three-way evaluation with its report, train/serve parity of
features and scores, idempotent scoring, and the errors that name what is missing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_jobs import lake
from mlops_jobs.churn import features as feature_job
from mlops_jobs.churn.evaluate import EvaluateRequest, EvaluationError
from mlops_jobs.churn.evaluate import run as evaluate
from mlops_jobs.churn.features import OUT_OF_TIME
from mlops_jobs.churn.model import FeatureSet, predict_probabilities
from mlops_jobs.churn.score import ScoreRequest, ScoringError
from mlops_jobs.churn.score import run as score
from mlops_localstack.demo.generator import DemoSpec
from tests.support import fit_and_register, write_demo_snapshot

SPEC = DemoSpec(customers=1500, days=100, end_ds="2026-03-01", seed=31)
LATER_DAYS = 7  # trained on the labels of a week before ds, tested out of time on ds


@pytest.fixture(scope="module")
def feature_sets(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Training and inference features built from one snapshot by the jobs' own entry points
    (training on the labels of ``LATER_DAYS`` before ds, with an out-of-time split of ds)."""
    root = tmp_path_factory.mktemp("lifecycle-lake")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(lake.ROOT_ENV, str(root))
        snapshot = write_demo_snapshot(root, SPEC, span_days=LATER_DAYS)
        training = lake.box_uri(str(root), "churn/features", SPEC.end_ds)
        inference = lake.box_uri(str(root), "churn/inference_features", SPEC.end_ds)
        feature_job.run(snapshot, training)
        feature_job.run_inference(snapshot, inference)
    return {"training": training, "inference": inference, "root": str(root)}


@pytest.fixture(scope="module")
def models(feature_sets: dict[str, str]) -> dict[str, str]:
    """A registered model of its own with two real tf-keras versions: ``trained`` (a few
    epochs) and ``untrained`` (initial weights)."""
    name = f"churn_eval_{uuid.uuid4().hex[:8]}"
    untrained = fit_and_register(feature_sets["training"], name, epochs=0)
    trained = fit_and_register(feature_sets["training"], name, epochs=15)
    return {"name": name, "untrained": untrained, "trained": trained}


def rows_of_ds(features: FeatureSet) -> pd.DataFrame:
    """The labelled rows of the run's own ds: the out-of-time split."""
    frame = features.frame(OUT_OF_TIME)
    assert set(frame["ds"]) == {SPEC.end_ds}
    return frame.sort_values("customer_id").reset_index(drop=True)


def test_the_model_trains_on_an_earlier_day_and_is_tested_on_ds(
    feature_sets: dict[str, str],
) -> None:
    features = FeatureSet.open(feature_sets["training"])
    earlier = "2026-02-22"
    assert features.manifest["label_ds"] == earlier
    assert features.manifest["out_of_time"] == {"ds": SPEC.end_ds, "days_after_training": 7}
    frames = {s: features.frame(s) for s in ("train", "valid", "test", OUT_OF_TIME)}
    for split in ("train", "valid", "test"):
        assert set(frames[split]["ds"]) == {earlier}, split
    later = frames[OUT_OF_TIME]
    assert len(later) == features.rows(OUT_OF_TIME) > 0
    # only customers never trained on: those of the test split
    trained_on = set(frames["train"]["customer_id"]) | set(frames["valid"]["customer_id"])
    assert not trained_on & set(later["customer_id"])


def test_inference_features_equal_training_features(feature_sets: dict[str, str]) -> None:
    training = rows_of_ds(FeatureSet.open(feature_sets["training"]))
    manifest = lake.read_manifest(feature_sets["inference"])
    box = lake.open_box(feature_sets["inference"])
    inference = lake.read_parquet(box.path(manifest["path"])).to_pandas()
    # every labelled customer signed up before ds, and so is scored
    assert set(training["customer_id"]) <= set(inference["customer_id"])
    assert manifest["rows"] == len(inference)
    same = inference.set_index("customer_id").loc[training["customer_id"]].reset_index()
    columns = ["customer_id", "ds", *manifest["features"]]
    pd.testing.assert_frame_equal(same[columns], training[columns], check_dtype=True)


def test_scores_equal_the_models_predictions_on_training_features(
    feature_sets: dict[str, str],
    models: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    monkeypatch.setenv(lake.ROOT_ENV, str(tmp_path))
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(models["name"], "champion", models["trained"])
    output = lake.box_uri(str(tmp_path), "churn/predictions", SPEC.end_ds)
    request = ScoreRequest(
        features=feature_sets["inference"], output=output, registered_model=models["name"]
    )
    manifest = score(request)
    assert manifest["model"]["version"] == models["trained"]
    assert manifest["ds"] == SPEC.end_ds
    predictions = lake.read_parquet(lake.open_box(output).path("data")).to_pandas()
    assert len(predictions) == manifest["rows"] == predictions["customer_id"].nunique()
    assert set(predictions["model_version"]) == {models["trained"]}

    features = FeatureSet.open(feature_sets["training"])
    training = rows_of_ds(features)
    model = mlflow.pyfunc.load_model(f"models:/{models['name']}/{models['trained']}")
    expected = predict_probabilities(model, features.inputs(training))
    scored = predictions.set_index("customer_id").loc[training["customer_id"]]
    np.testing.assert_allclose(scored["churn_probability"].to_numpy(), expected, atol=1e-6)
    threshold = manifest["threshold"]
    assert (scored["churn_predicted"] == (scored["churn_probability"] >= threshold)).all()

    # a re-run replaces the output with the same predictions, nothing added
    again = score(request)
    assert again["uri"] != manifest["uri"]  # a new version, committed whole
    rerun = lake.read_parquet(lake.open_box(output).path("data")).to_pandas()
    assert again["rows"] == manifest["rows"] == len(rerun)
    np.testing.assert_allclose(
        rerun["churn_probability"].to_numpy(), predictions["churn_probability"].to_numpy()
    )


def test_scoring_without_a_champion_names_the_model(
    feature_sets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(lake.ROOT_ENV, str(tmp_path))
    with pytest.raises(ScoringError, match="churn_nobody has no @champion"):
        score(
            ScoreRequest(
                features=feature_sets["inference"],
                output=lake.normalize(tmp_path / "out"),
                registered_model="churn_nobody",
            )
        )
    assert not (tmp_path / "out").exists()


def test_evaluation_compares_candidate_champion_and_baseline(
    feature_sets: dict[str, str], models: dict[str, str]
) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.set_registered_model_alias(models["name"], "champion", models["untrained"])
    result = evaluate(
        EvaluateRequest(
            features=feature_sets["training"],
            candidate_version=models["trained"],
            registered_model=models["name"],
            dag_id="churn_training",
            dag_run_id="manual__eval",
        )
    )
    assert result["candidate"]["version"] == models["trained"]
    assert result["champion"]["version"] == models["untrained"]
    features = FeatureSet.open(feature_sets["training"])
    test = features.frame("test")
    assert result["evaluated_on"]["rows"] == len(test)

    # the candidate's figures are those of its predictions on the frozen test split
    from sklearn.metrics import roc_auc_score

    model = mlflow.pyfunc.load_model(f"models:/{models['name']}/{models['trained']}")
    probabilities = predict_probabilities(model, features.inputs(test))
    assert result["candidate"]["metrics"]["roc_auc"] == pytest.approx(
        roc_auc_score(test["label"], probabilities)
    )
    for role in ("candidate", "champion", "baseline"):
        metrics = result[role]["metrics"]
        assert set(metrics) >= {"roc_auc", "pr_auc", "log_loss", "brier_score", "precision"}
        assert 0.0 <= metrics["roc_auc"] <= 1.0
    # trained beats initial weights; the logistic regression baseline learns something
    assert result["candidate"]["metrics"]["roc_auc"] > result["champion"]["metrics"]["roc_auc"]
    assert result["baseline"]["metrics"]["roc_auc"] > 0.6

    segments = pd.DataFrame(result["segments"])
    assert set(segments["segment"]) == {"plan", "region"}
    assert set(segments["model"]) == {"candidate", "champion", "baseline"}
    assert segments.groupby("segment")["rows"].sum().eq(3 * len(test)).all()

    candidate_run = client.get_run(result["candidate"]["mlflow_run_id"])
    assert candidate_run.data.metrics["test_roc_auc"] == pytest.approx(
        result["candidate"]["metrics"]["roc_auc"]
    )
    assert "champion_test_roc_auc" in candidate_run.data.metrics
    report = {a.path for a in client.list_artifacts(candidate_run.info.run_id, "evaluation")}
    assert report >= {
        f"evaluation/{f}"
        for f in ("roc.png", "precision_recall.png", "calibration.png", "confusion_matrix.png",
                  "segments.csv", "summary.md", "evaluation.json")
    }  # fmt: skip
    baseline = client.get_run(result["baseline"]["mlflow_run_id"])
    assert baseline.data.tags["role"] == "baseline"
    assert baseline.data.tags["airflow.dag_run_id"] == "manual__eval"
    assert baseline.data.metrics["test_roc_auc"] == pytest.approx(
        result["baseline"]["metrics"]["roc_auc"]
    )
    assert "model" in {a.path for a in client.list_artifacts(baseline.info.run_id)}

    # and all three on a later day than the candidate trained on
    later = result["out_of_time"]
    assert (later["ds"], later["label_ds"]) == (SPEC.end_ds, "2026-02-22")
    oot = features.frame(OUT_OF_TIME)
    assert later["rows"] == len(oot) and later["positives"] == int(oot["label"].sum())
    assert set(later["metrics"]) == {"candidate", "champion", "baseline"}
    assert later["metrics"]["candidate"]["roc_auc"] == pytest.approx(
        roc_auc_score(oot["label"], predict_probabilities(model, features.inputs(oot)))
    )
    assert candidate_run.data.metrics["oot_roc_auc"] == pytest.approx(
        later["metrics"]["candidate"]["roc_auc"]
    )
    assert "baseline_oot_roc_auc" in candidate_run.data.metrics


def test_evaluation_of_an_unknown_version_names_it(feature_sets: dict[str, str]) -> None:
    with pytest.raises(EvaluationError, match="candidate version 42 of churn_nobody not found"):
        evaluate(
            EvaluateRequest(
                features=feature_sets["training"],
                candidate_version="42",
                registered_model="churn_nobody",
            )
        )
