"""The lifecycle end to end against the test HiveServer2, Spark and MLflow: churn_training
(extraction, features, training, evaluation, gate, promotion), then churn_batch_scoring
(predictions in the lake and in Hive), under ``airflow dags test`` as ``make run`` runs them;
and the same DAG on Databricks (the emulator) with ``dag.test()``."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_airflow.hooks.mlflow_registry import MlflowRegistryHook
from mlops_jobs import lake
from mlops_jobs.hql import TableName
from tests.conftest import DEMO, TEST_ROOT

DAGS = Path(__file__).resolve().parents[2] / "dags"
BENCH = DAGS.parent / "bench" / "pipeline.py"
END = str(DEMO["end_ds"])


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.mark.hive
@pytest.mark.integration
def test_churn_lifecycle_runs_end_to_end(demo_warehouse: object, airflow_db: None) -> None:
    """As a user runs it: ``airflow dags test`` of churn_training, then churn_batch_scoring,
    through ``bench/pipeline.py`` (so this is also the benchmark's smoke size: its figures must
    be those of the runs it started, and add up)."""
    from airflow.models import DagRun, TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    conf = {
        "lookback_days": 90,
        "epochs": 3,
        "workers": 1,
        # the 150-customer test demo is too small for the gate to mean anything: the gate's
        # decisions are tested on their own; here the whole path to @champion runs
        "force_reason": "integration test on the tiny demo",
    }
    bench = subprocess.run(
        [sys.executable, str(BENCH), "--ds", END, "--conf", json.dumps(conf)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert bench.returncode == 0, f"{bench.stdout[-3000:]}\n{bench.stderr[-3000:]}"
    figures = json.loads(bench.stdout.strip().splitlines()[-1])
    training, scoring = figures["churn_training"], figures["churn_batch_scoring"]
    for dag_run in (training, scoring):
        assert 0 < dag_run["tasks_total_s"] <= dag_run["wall_s"]
        assert 0 < dag_run["fixed_startup_share"] < 1
    assert training["tasks_s"]["train_model"] > 0 and scoring["tasks_s"]["score"] > 0
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.run_id == training["run_id"]).one()
        assert run.state == DagRunState.SUCCESS
        assert run.conf["force_promote"] is True and run.conf["epochs"] == 3
        states = {
            ti.task_id: ti.state
            for ti in session.query(TaskInstance).filter(
                TaskInstance.dag_id == "churn_training", TaskInstance.run_id == run.run_id
            )
        }
    assert states["promote_model"] == TaskInstanceState.SUCCESS
    assert states["reject_candidate"] == TaskInstanceState.SKIPPED
    assert states["reject_in_review"] == TaskInstanceState.SKIPPED

    box = Path(os.environ["MLOPS_LAKE_ROOT"]) / "churn" / "snapshots" / f"ds={END}"
    manifest = lake.read_manifest(box)
    assert manifest["lookback_days"] == 90
    assert manifest["producer"]["dag_id"] == "churn_training"
    # trained on the labels of a week before END (the default out_of_time_days), tested on END
    assert manifest["span_days"] == 7
    assert manifest["tables"]["events"]["partitions"]["first"] == "2025-11-24"
    features = lake.read_manifest(box.parents[1] / "features" / f"ds={END}")
    assert features["snapshot"]["content_hash"] == manifest["content_hash"]
    assert features["label_ds"] == "2026-02-22"
    labelled = sum(features["splits"][s]["rows"] for s in ("train", "valid", "test"))
    labels = manifest["tables"]["churn_labels"]["partitions"]["rows"]
    assert labelled == labels["2026-02-22"]
    assert 0 < features["splits"]["oot"]["rows"] < labels[END]

    registry = MlflowRegistryHook()
    versions = [
        v
        for v in registry.client.search_model_versions("name = 'churn'")
        if v.tags.get("airflow.dag_run_id") == training["run_id"]
    ]
    assert len(versions) == 1 and versions[0].tags["role"] == "candidate"
    version = versions[0]
    candidate_run = registry.client.get_run(version.run_id)
    assert candidate_run.info.status == "FINISHED"
    assert candidate_run.data.tags["features.content_hash"] == features["content_hash"]
    assert "test_roc_auc" in candidate_run.data.metrics  # evaluated on the frozen test split
    assert "oot_roc_auc" in candidate_run.data.metrics  # ...and on a later day
    assert version.tags["validation_status"] in ("passed", "overridden")
    assert "validation.baseline_mlflow_run_id" in version.tags
    assert registry.alias_version("churn", "champion") == str(version.version)

    # (a re-run replacing the partition, never appending, is tested with the load operator)
    predictions = lake.read_manifest(
        Path(os.environ["MLOPS_LAKE_ROOT"]) / "churn" / "predictions" / f"ds={END}"
    )
    assert predictions["model"]["version"] == str(version.version)
    hive = HiveWarehouseHook()
    table = TableName("ml", "churn_predictions")
    assert hive.count_by_partition(table, "ds", END, END) == {END: predictions["rows"]}
    customers = manifest["tables"]["customers"]["partitions"]["rows"]["2026-02-28"]
    assert 0 < predictions["rows"] <= customers
    ((distinct,),) = hive.fetch_all(
        f"SELECT COUNT(DISTINCT customer_id) FROM ml.churn_predictions WHERE ds = '{END}'"
    )
    assert distinct == predictions["rows"]

    # Each Asset event carries what a consumer needs to find and trust what changed.
    events = latest_asset_events()
    assert events["churn_snapshot"]["content_hash"] == manifest["content_hash"]
    assert events["churn_snapshot"]["ds"] == END
    assert events["churn_features"] == {
        "uri": events["churn_features"]["uri"],
        "ds": END,
        "content_hash": features["content_hash"],
    }
    assert events["churn_model_candidate"]["model_version"] == str(version.version)
    assert events["churn_model"]["version"] == str(version.version)
    assert events["churn_predictions"]["model_version"] == str(version.version)
    assert events["churn_predictions"]["rows"] == predictions["rows"]


def latest_asset_events() -> dict[str, dict[str, object]]:
    """The extra of each Asset's newest event, by Asset name."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.name, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .order_by(AssetEvent.timestamp)
        ).all()
    return {name: dict(extra or {}) for name, extra in rows}


@pytest.mark.hive
@pytest.mark.integration
def test_churn_training_runs_on_databricks_with_the_lake_on_dbfs(
    demo_warehouse: object,
    airflow_db: None,
    dagbag: DagBag,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The same DAG, changed by configuration only: the jobs run on the strict Databricks
    emulator (a fresh process with only the run's environment, the wheel and its declared
    dependencies), and the lake is a ``dbfs:/`` URI. The worker reaches DBFS through a mount
    of the emulator's DBFS directory, as the cluster does through its FUSE mount."""
    from airflow.utils.state import DagRunState

    from mlops_localstack.databricks_emulator import DatabricksEmulator

    # Secret-looking credentials: the Databricks token and an MLflow token must never be
    # written anywhere (logs, XCom, the run's request, MLflow, manifests).
    secrets = [f"dapi{uuid.uuid4().hex}", f"mlflow-token-{uuid.uuid4().hex}"]
    emulator = DatabricksEmulator(
        tmp_path / "databricks", pending_seconds=0.2, token=secrets[0]
    ).start()
    try:
        root = "dbfs:/mlops/lake"
        for key, value in {
            "MLFLOW_TRACKING_TOKEN": secrets[1],
            "AIRFLOW_CONN_DATABRICKS_DEFAULT": emulator.connection(),
            "MLOPS_COMPUTE_BACKEND": "databricks",
            "MLOPS_DATABRICKS_CLUSTER": '{"new_cluster": {"num_workers": 1}}',
            "MLOPS_DATABRICKS_WHEEL_DIR": "/Volumes/main/mlops/artifacts/wheels",
            "MLOPS_LAKE_ROOT": root,
            "MLOPS_LAKE_MOUNTS": json.dumps({"dbfs:/": lake.path_uri(emulator.dbfs_root) + "/"}),
        }.items():
            monkeypatch.setenv(key, value)
        logical_date = dt.datetime.fromisoformat(f"{END}T00:00:00+00:00")
        run = dagbag.dags["churn_training"].test(
            logical_date=logical_date,
            run_conf={
                "label_ds": END,
                "lookback_days": 90,
                "workers": 1,
                "epochs": 2,
                # the browser test may have trained on these very inputs: register anew
                "retrain": True,
                "force_promote": True,
                "force_reason": "integration test on the tiny demo",
            },
        )
    finally:
        emulator.stop()
    assert run.state == DagRunState.SUCCESS
    jobs = [
        r.request["tasks"][0]["python_wheel_task"]["parameters"] for r in emulator.runs.values()
    ]
    assert [p[2] for p in jobs] == ["churn-features", "churn-train", "churn-evaluate"]
    assert all(p[1].startswith(f"{root}/_results/churn_training/ds={END}/") for p in jobs)
    features = lake.open_box(f"{root}/churn/features/ds={END}")
    assert features.uri.startswith(f"{root}/churn/features/ds={END}/v=")
    assert features.manifest["snapshot"]["uri"].startswith(f"{root}/churn/snapshots/ds={END}/v=")
    assert (emulator.dbfs_root / "mlops/lake/churn/features" / f"ds={END}" / lake.POINTER).is_file()
    registry = MlflowRegistryHook()
    versions = [
        v
        for v in registry.client.search_model_versions("name = 'churn'")
        if v.tags.get("airflow.dag_run_id") == run.run_id
    ]
    assert len(versions) == 1
    tags = registry.client.get_run(versions[0].run_id).data.tags
    assert tags["features.uri"] == features.uri
    stores = [TEST_ROOT / "airflow", TEST_ROOT / "mlflow", tmp_path]
    assert files_containing(stores, secrets) == []
    # nor the task logs (dag.test() prints them) and the runs' requests as the API got them
    out, err = capfd.readouterr()
    requests = json.dumps([r.request for r in emulator.runs.values()])
    for secret in secrets:
        assert secret not in out and secret not in err and secret not in requests


def files_containing(directories: list[Path], secrets: list[str]) -> list[str]:
    """Every file under ``directories`` (logs, databases, artifacts, the lake, the emulator's
    runs) holding one of ``secrets`` in its bytes."""
    needles = [s.encode() for s in secrets]
    found = []
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file() and any(n in path.read_bytes() for n in needles):
                found.append(str(path))
    return found
