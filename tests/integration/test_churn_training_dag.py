"""The churn_training DAG end to end with `dag.test()` against the test HiveServer2."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from mlops_jobs import lake
from tests.conftest import DEMO

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.mark.hive
@pytest.mark.integration
def test_churn_training_runs_end_to_end(demo_warehouse: object, airflow_db: None) -> None:
    from airflow.utils.state import DagRunState

    dag = DagBag(dag_folder=str(DAGS)).get_dag("churn_training")
    assert dag is not None
    logical_date = dt.datetime.fromisoformat(f"{DEMO['end_ds']}T00:00:00+00:00")
    run = dag.test(
        logical_date=logical_date,
        run_conf={"lookback_days": 90, "train_params": {"epochs": 3}},
    )
    assert run.state == DagRunState.SUCCESS

    box = Path(os.environ["MLOPS_LAKE_ROOT"]) / "churn" / "snapshots" / f"ds={DEMO['end_ds']}"
    manifest = lake.read_manifest(box)
    assert manifest["lookback_days"] == 90
    assert manifest["producer"]["dag_id"] == "churn_training"
    assert manifest["producer"]["task_id"] == "extract_snapshot"
    assert manifest["tables"]["events"]["partitions"]["first"] == "2025-12-01"

    features = lake.read_manifest(box.parents[1] / "features" / f"ds={DEMO['end_ds']}")
    assert features["snapshot"]["content_hash"] == manifest["content_hash"]
    labelled = sum(split["rows"] for split in features["splits"].values())
    assert labelled == manifest["tables"]["churn_labels"]["rows"]

    import mlflow

    versions = [
        v
        for v in mlflow.MlflowClient().search_model_versions("name = 'churn'")
        if v.tags.get("airflow.run_id") == run.run_id
    ]
    assert len(versions) == 1 and versions[0].tags["role"] == "candidate"
    run_tags = mlflow.MlflowClient().get_run(versions[0].run_id).data.tags
    assert run_tags["features.content_hash"] == features["content_hash"]
