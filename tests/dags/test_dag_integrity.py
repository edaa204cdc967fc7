from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.operators.evaluate_model import EvaluateModelOperator
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_airflow.operators.hive_load import HivePartitionLoadOperator
from mlops_airflow.operators.promotion import (
    REGISTRY_POOL,
    ModelGateOperator,
    PromoteModelOperator,
    PromotionApprovalOperator,
    RejectModelOperator,
    RollbackModelOperator,
)
from mlops_airflow.operators.spark_job import SparkJobOperator
from mlops_airflow.operators.train_model import TrainModelOperator
from mlops_airflow.sensors.hive_partitions import HivePartitionsSensor
from mlops_jobs.churn.tables import CHURN_SOURCES

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


def test_dags_import_without_errors(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"churn_training", "churn_batch_scoring", "churn_model_rollback"}


def test_every_dag_is_documented_and_tagged(dagbag: DagBag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md, f"{dag_id} has no doc_md"
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.doc_md, f"{dag_id}.{task.task_id} has no doc_md"
            if task.task_id != "approve_promotion":  # waits for a person: its response_timeout
                assert task.execution_timeout, f"{dag_id}.{task.task_id} has no execution_timeout"


PROMOTION_TASKS = ["evaluate_model", "promotion_gate", "approve_promotion", "promote_model"]
PROMOTION_TASKS += ["reject_candidate", "reject_in_review"]


def test_the_stages_are_task_groups_and_task_ids_stay_unprefixed(dagbag: DagBag) -> None:
    def groups(dag_id: str) -> dict[str, list[str]]:
        dag = dagbag.dags[dag_id]
        return {
            group_id: sorted(t.task_id for t in group.iter_tasks())
            for group_id, group in dag.task_group.get_task_group_dict().items()
            if group_id
        }

    assert groups("churn_training") == {
        "extraction": ["extract_snapshot", "wait_for_partitions"],
        "features_and_training": ["build_features", "train_model"],
        "promotion": sorted(PROMOTION_TASKS),
    }
    assert groups("churn_batch_scoring") == {
        "extraction": ["extract_snapshot", "wait_for_partitions"],
        "scoring": ["build_features", "load_predictions", "score"],
    }


def test_churn_training_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["churn_training"]
    assert dag is not None
    wait = dag.get_task("wait_for_partitions")
    extract = dag.get_task("extract_snapshot")
    assert isinstance(wait, HivePartitionsSensor) and wait.mode == "reschedule"
    assert isinstance(extract, HiveExtractOperator)
    assert extract.upstream_task_ids == {"wait_for_partitions"}
    assert [a.name for a in extract.outlets] == ["churn_snapshot"]
    features = dag.get_task("build_features")
    assert isinstance(features, SparkJobOperator) and features.job == "churn-features"
    assert features.upstream_task_ids == {"extract_snapshot"}
    assert [a.name for a in features.outlets] == ["churn_features"]
    # the Param, else (empty) the deployment's setting, resolved at execute time
    assert features.backend == "{{ params.compute_backend or '' }}"
    train = dag.get_task("train_model")
    assert isinstance(train, TrainModelOperator) and train.job == "churn-train"
    assert train.upstream_task_ids == {"build_features"}
    assert [a.name for a in train.outlets] == ["churn_model_candidate"]
    assert dag.params["workers"] == 2
    assert dag.params["lookback_days"] == 90
    assert dag.params["allow_empty_partitions"] is False
    assert not dag.catchup and dag.max_active_runs == 1


def test_churn_training_promotion_stage(dagbag: DagBag) -> None:
    dag = dagbag.dags["churn_training"]
    evaluate = dag.get_task("evaluate_model")
    assert isinstance(evaluate, EvaluateModelOperator) and evaluate.job == "churn-evaluate"
    assert evaluate.upstream_task_ids == {"train_model"}
    gate = dag.get_task("promotion_gate")
    assert isinstance(gate, ModelGateOperator)
    # A rejection is a branch, never a failure; approval sits between the gate and promotion.
    assert gate.downstream_task_ids == {"approve_promotion", "reject_candidate"}
    approve = dag.get_task("approve_promotion")
    assert isinstance(approve, PromotionApprovalOperator)
    assert approve.downstream_task_ids == {"promote_model", "reject_in_review"}
    promote = dag.get_task("promote_model")
    assert isinstance(promote, PromoteModelOperator)
    assert promote.upstream_task_ids == {"approve_promotion"}
    assert promote.pool == REGISTRY_POOL
    assert [a.name for a in promote.outlets] == ["churn_model"]
    for task_id in ("reject_candidate", "reject_in_review"):
        assert isinstance(dag.get_task(task_id), RejectModelOperator)
    assert dag.params["require_approval"] is False
    assert dag.params["force_promote"] is False


def test_churn_batch_scoring_shape(dagbag: DagBag) -> None:
    from airflow.sdk import AssetOrTimeSchedule

    dag = dagbag.dags["churn_batch_scoring"]
    # daily, and whenever the champion moves
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert "churn_model" in str(dag.timetable.asset_condition)
    order = ["wait_for_partitions", "extract_snapshot", "build_features", "score"]
    for upstream, task_id in zip(order, [*order[1:], "load_predictions"], strict=True):
        assert dag.get_task(task_id).upstream_task_ids == {upstream}
    extract = dag.get_task("extract_snapshot")
    assert isinstance(extract, HiveExtractOperator)
    assert [c.alias for c in extract.sources] == ["customers", "events"]  # no labels to wait for
    features = dag.get_task("build_features")
    assert isinstance(features, SparkJobOperator) and features.arguments[:2] == [
        "--mode",
        "inference",
    ]
    assert dag.get_task("score").job == "churn-score"
    load = dag.get_task("load_predictions")
    assert isinstance(load, HivePartitionLoadOperator)
    assert str(load.target.table) == "ml.churn_predictions"
    assert [a.name for a in load.outlets] == ["churn_predictions"]


def test_scoring_ds_comes_from_the_param_the_logical_date_or_run_after(dagbag: DagBag) -> None:
    import datetime as dt

    import airflow.sdk.execution_time.macros as macros

    dag = dagbag.dags["churn_batch_scoring"]

    class Run:
        def __init__(self, logical_date: dt.datetime | None, run_after: dt.datetime) -> None:
            self.logical_date, self.run_after = logical_date, run_after

    due = dt.datetime(2026, 3, 2, 6, 30, tzinfo=dt.UTC)
    asset_run = Run(None, due)
    scheduled_run = Run(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), due)
    for params, run, expected in (
        ({"ds": "", "lookback_days": 7}, asset_run, "2026-03-02"),
        ({"ds": "2026-02-27", "lookback_days": 7}, asset_run, "2026-02-27"),
        ({"ds": "", "lookback_days": 7}, scheduled_run, "2026-03-01"),
    ):
        wait = copy.deepcopy(dag.get_task("wait_for_partitions"))
        extract = copy.deepcopy(dag.get_task("extract_snapshot"))
        context = {"params": params, "dag_run": run, "macros": macros, **dag.user_defined_macros}
        wait.render_template_fields(context)  # type: ignore[arg-type]
        extract.render_template_fields(context)  # type: ignore[arg-type]
        assert extract.ds == expected
        first = (dt.date.fromisoformat(expected) - dt.timedelta(days=7)).isoformat()
        last = (dt.date.fromisoformat(expected) - dt.timedelta(days=1)).isoformat()
        assert wait.partitions == {
            "raw.customers": [[last, last]],
            "raw.events": [[first, last]],
        }


def test_training_label_day_is_the_newest_with_complete_labels(dagbag: DagBag) -> None:
    """A run is due at the start of its logical day: it trains on the day before, less the
    label horizon; the date alone decides, so a backfill trains on what the original did."""
    import datetime as dt

    import airflow.sdk.execution_time.macros as macros

    dag = dagbag.dags["churn_training"]

    class Run:
        def __init__(self, logical_date: dt.datetime | None, run_type: str) -> None:
            self.logical_date, self.run_after, self.run_type = logical_date, logical_date, run_type

    class TI:
        def xcom_pull(self, task_ids: str) -> str:
            return f"file:///lake/{task_ids}"

    midnight = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    afternoon = dt.datetime(2026, 3, 2, 15, 30, tzinfo=dt.UTC)  # the UI's default: now
    base = {**dag.params.dump(), "lookback_days": 7, "out_of_time_days": 0}
    for params, run, expected in (
        ({}, Run(midnight, "scheduled"), "2026-03-01"),
        ({}, Run(midnight, "backfill"), "2026-03-01"),
        ({}, Run(afternoon, "manual"), "2026-03-01"),
        ({"label_horizon_days": 2}, Run(midnight, "scheduled"), "2026-02-27"),
        (
            {"label_ds": "2026-02-20", "label_horizon_days": 2},
            Run(midnight, "manual"),
            "2026-02-20",
        ),
    ):
        context = {
            "params": {**base, **params}, "dag_run": run, "macros": macros, "ti": TI(),
            **dag.user_defined_macros,
        }  # fmt: skip
        wait = copy.deepcopy(dag.get_task("wait_for_partitions"))
        extract = copy.deepcopy(dag.get_task("extract_snapshot"))
        features = copy.deepcopy(dag.get_task("build_features"))
        for task in (wait, extract, features):
            task.render_template_fields(context)  # type: ignore[arg-type]
        assert extract.ds == expected
        # out_of_time_days 0: the first and the last day are one
        assert {tuple(r) for r in wait.partitions["raw.churn_labels"]} == {(expected, expected)}
        assert features.arguments[-1].endswith(f"/churn/features/ds={expected}")

    # the label day's Param was called ds: a conf still naming it is refused, not ignored
    stale = Run(afternoon, "manual")
    stale.conf = {"ds": "2026-02-20"}  # type: ignore[attr-defined]
    context = {
        "params": base, "dag_run": stale, "macros": macros, "ti": TI(), **dag.user_defined_macros
    }  # fmt: skip
    with pytest.raises(InvalidParameterError, match=r"conf names ds='2026-02-20'.*label_ds"):
        copy.deepcopy(dag.get_task("extract_snapshot")).render_template_fields(context)  # type: ignore[arg-type]


def test_training_params_are_typed_grouped_and_refuse_bad_values(dagbag: DagBag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["churn_training"]
    schemas = {name: param.schema for name, param in dag.params.items()}
    assert {s.get("section") for s in schemas.values()} == {"Data", "Training", "Promotion"}
    assert all(s.get("title") for s in schemas.values())
    assert all(param.description for param in dag.params.values())
    for name in ("epochs", "learning_rate", "batch_size", "compute_backend"):
        assert schemas[name]["section"] == "Training"
    assert schemas["compute_backend"]["enum"] == [None, "local", "databricks"]
    params = copy.deepcopy(dag.params)
    params.update({"label_ds": "2026-03-01", "epochs": 5, "learning_rate": 0.01, "batch_size": 128})
    params.validate()
    for name, value in (("epochs", 0), ("learning_rate", 1.5), ("label_ds", "March 1st")):
        with pytest.raises(ParamValidationError, match=name):
            copy.deepcopy(dag.params)[name] = value


def test_churn_model_rollback_shape(dagbag: DagBag) -> None:
    dag = dagbag.dags["churn_model_rollback"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # triggered by a person only
    (task,) = dag.tasks
    assert isinstance(task, RollbackModelOperator)
    assert task.pool == REGISTRY_POOL
    assert [a.name for a in task.outlets] == ["churn_model"]
    assert dag.params["version"] == "previous"


def test_sensor_and_extract_read_the_same_window(dagbag: DagBag) -> None:
    dag = dagbag.dags["churn_training"]
    assert dag is not None
    wait = copy.deepcopy(dag.get_task("wait_for_partitions"))
    params = {
        "label_ds": "2026-03-01",
        "label_horizon_days": 0,
        "lookback_days": 7,
        "out_of_time_days": 3,
        "allow_empty_partitions": False,
        "wait_for_data_minutes": None,
    }
    context = {"dag_run": None, "params": params, **dag.user_defined_macros}
    import airflow.sdk.execution_time.macros as macros

    wait.render_template_fields({**context, "macros": macros})  # type: ignore[arg-type]
    # the training day (ds - 3) and ds, not the days between
    assert wait.partitions == {
        "raw.customers": [["2026-02-25", "2026-02-25"], ["2026-02-28", "2026-02-28"]],
        "raw.events": [["2026-02-19", "2026-02-25"], ["2026-02-22", "2026-02-28"]],
        "raw.churn_labels": [["2026-02-26", "2026-02-26"], ["2026-03-01", "2026-03-01"]],
    }
    # ...which are exactly the partitions the extraction reads for that run
    extract = copy.deepcopy(dag.get_task("extract_snapshot"))
    extract.render_template_fields({**context, "macros": macros})  # type: ignore[arg-type]
    assert (extract.lookback_days, extract.span_days) == ("7", "3")
    required = {str(t): days for t, days in wait.required().items()}
    for contract in CHURN_SOURCES:
        if contract.partitioned:
            expected = contract.required_partitions("2026-03-01", 7, 3)
            assert required[str(contract.table)] == expected


def test_feature_arguments_render_from_the_snapshot_and_lake_root(
    dagbag: DagBag, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dag = dagbag.dags["churn_training"]
    assert dag is not None
    monkeypatch.setenv("MLOPS_LAKE_ROOT", str(tmp_path))
    task = dag.get_task("build_features")

    class TI:
        def xcom_pull(self, task_ids: str) -> str:
            return f"file:///lake/{task_ids}"

    params = {"label_ds": "2026-03-01", "label_horizon_days": 0, "compute_backend": None}
    task.render_template_fields(
        {"params": params, "dag_run": None, "ti": TI(), **dag.user_defined_macros}  # type: ignore[arg-type]
    )
    assert task.backend == ""  # the deployment's setting
    assert task.arguments == [
        "--snapshot",
        "file:///lake/extract_snapshot",
        "--output",
        f"file://{tmp_path}/churn/features/ds=2026-03-01",
    ]


def test_the_registered_model_is_a_deployment_setting(
    dagbag: DagBag, monkeypatch: pytest.MonkeyPatch
) -> None:
    dag = dagbag.dags["churn_batch_scoring"]
    monkeypatch.setenv("MLOPS_MODEL_NAME", "main.ml.churn")
    score = copy.deepcopy(dag.get_task("score"))

    class TI:
        def xcom_pull(self, task_ids: str) -> dict[str, str]:
            return {"output": f"file:///lake/{task_ids}"}

    context = {"ds": "2026-03-01", "params": {"ds": "2026-03-01"}, "dag_run": None, "ti": TI()}
    score.render_template_fields({**context, **dag.user_defined_macros})  # type: ignore[arg-type]
    assert score.arguments[-2:] == ["--model-name", "main.ml.churn"]
    monkeypatch.setenv("MLOPS_MODEL_NAME", "main.churn")
    with pytest.raises(InvalidParameterError, match=r"invalid registered model name 'main\.churn'"):
        copy.deepcopy(dag.get_task("score")).render_template_fields(
            {**context, **dag.user_defined_macros}  # type: ignore[arg-type]
        )


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_dag_files_import_no_heavy_libraries_at_parse_time(dag_file: str) -> None:
    code = (
        "import sys, runpy;"
        f"runpy.run_path({str(DAGS / dag_file)!r});"
        "heavy = [m for m in ('pyspark', 'tensorflow', 'mlflow', 'pandas', 'pyarrow')"
        " if m in sys.modules];"
        "print(','.join(heavy))"
    )
    root = DAGS.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root / "include"), str(root / "plugins")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
