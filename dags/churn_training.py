"""
### Churn training

Trains the churn model for one day (`ds`) from the Hive warehouse:

The model trains on the labels of `ds - out_of_time_days` (a train/valid/test split by
customer) and is also tested on the labels of `ds` itself, for the customers of the test split:
a later day than it learned from (out of time).

1. **wait_for_partitions**: waits (reschedule mode) until `raw.churn_labels` has the partitions
   from the training day to `ds`, `raw.customers` the daily snapshots of the days before them
   (the attributes as of each cutoff) and `raw.events` every daily partition of the lookback
   window before the training day and up to `ds`.
2. **extract_snapshot**: checks `raw.customers`, `raw.events` and `raw.churn_labels` against the
   pipeline's contract, exports the needed partitions server-side as Parquet, reconciles row
   counts and publishes `{lake}/churn/snapshots/ds=…/` with a `manifest.json` (Asset
   `churn_snapshot`).
3. **build_features**: the Spark feature job (`mlops-job churn-features`) turns the snapshot into
   point-in-time correct features with a deterministic train/valid/test split, published at
   `{lake}/churn/features/ds=…/` (Asset `churn_features`). It runs on local Spark or as a
   Databricks run, chosen by the Variable `mlops_compute_backend` (or `MLOPS_COMPUTE_BACKEND`).
4. **train_model**: `workers` TensorFlow workers (tf-keras, `MultiWorkerMirroredStrategy`) train
   the model synchronously, launched as a Spark barrier stage on the same backend; the chief logs
   to MLflow and the model is registered as a new version of `churn` tagged `role=candidate`
   (Asset `churn_model_candidate`; link "MLflow run").
5. **evaluate_model**: the candidate, the current `churn@champion` and a Spark MLlib baseline
   (logistic regression trained in the same job) score the same frozen test split and the
   out-of-time split; ROC AUC,
   PR AUC, log loss, Brier score, precision and recall at the operating threshold, overall and
   by plan and region, go to MLflow with a report (ROC, precision-recall and calibration plots,
   confusion matrix, segment table) in the candidate's run under `evaluation/`.
6. **promotion_gate**: thresholds of `include/mlops_jobs/churn/promotion_config.json`
   (Param `promotion_thresholds` overrides them) applied with MLflow's model validation: a floor,
   a margin over the champion, better than the baseline. Fails → **reject_candidate** records
   why (`validation_status=rejected`); the run still succeeds.
7. **approve_promotion**: with `require_approval`, waits for a person (Required Actions in the
   UI) shown the gate's table; "Reject", or no answer within 24 hours, → **reject_in_review**.
   Otherwise approves at once.
8. **promote_model**: `@challenger`, then `@champion` by compare-and-set against the champion the
   candidate was evaluated with; the old champion keeps `@previous` (pool `mlflow_registry`,
   Asset `churn_model`, which triggers `churn_batch_scoring`).

Params: `lookback_days` (history window, days), `out_of_time_days` (days between the training
labels and the out-of-time test), `allow_empty_partitions` (accept partitions
without rows), `workers` (TensorFlow workers), `train_params` (overrides of
`include/mlops_jobs/churn/train_config.json`, e.g. `{"epochs": 20}`), `promotion_thresholds`,
`require_approval`, `force_promote` with `force_reason` (promote whatever the gate says; the
reason is recorded).

Connections: `hiveserver2_default`, `databricks_default` for the Databricks backend, and
`mlflow_default` (else `MLFLOW_TRACKING_URI`). Lake root: Variable `mlops_lake_root` or
`MLOPS_LAKE_ROOT`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from mlops_airflow.assets import CHURN_FEATURES, CHURN_MODEL, CHURN_MODEL_CANDIDATE, CHURN_SNAPSHOT
from mlops_airflow.operators.evaluate_model import EvaluateModelOperator
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_airflow.operators.promotion import (
    REGISTRY_POOL,
    ModelGateOperator,
    PromoteModelOperator,
    PromotionApprovalOperator,
    RejectModelOperator,
)
from mlops_airflow.operators.spark_job import SparkJobOperator
from mlops_airflow.operators.train_model import TrainModelOperator
from mlops_airflow.sensors.hive_partitions import HivePartitionsSensor, partition_templates
from mlops_airflow.utils import lake_uri
from mlops_jobs.churn.tables import CHURN_SOURCES, OUT_OF_TIME_DAYS
from mlops_jobs.contracts import DEFAULT_LOOKBACK_DAYS

with DAG(
    dag_id="churn_training",
    description="Hive snapshot → Spark features → distributed training → MLflow candidate",
    doc_md=__doc__,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["churn", "ml"],
    user_defined_macros={"lake_uri": lake_uri},
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=5)},
    params={
        "lookback_days": Param(
            DEFAULT_LOOKBACK_DAYS,
            type="integer",
            minimum=1,
            maximum=730,
            description="Days of event history before ds that the snapshot includes.",
        ),
        "out_of_time_days": Param(
            OUT_OF_TIME_DAYS,
            type="integer",
            minimum=0,
            maximum=90,
            description="Train on the labels of this many days before ds and test the model on "
            "the labels of ds too (out of time); 0 trains on ds and skips that test.",
        ),
        "allow_empty_partitions": Param(
            False,
            type="boolean",
            description="Accept required partitions that exist but have no rows.",
        ),
        "workers": Param(
            2, type="integer", minimum=1, maximum=64, description="TensorFlow workers."
        ),
        "train_params": Param(
            {},
            type="object",
            description='Training parameter overrides, e.g. {"epochs": 20, "dropout": 0.1}.',
        ),
        "retrain": Param(
            False,
            type="boolean",
            description="Train even if a model version was trained on the same inputs (feature "
            "set, code, configuration and workers); by default that version is reused.",
        ),
        "promotion_thresholds": Param(
            {},
            type="object",
            description='Promotion threshold overrides, e.g. {"floor": 0.75, '
            '"min_improvement_over_champion": 0.005}.',
        ),
        "require_approval": Param(
            False,
            type="boolean",
            description="Wait for a person to approve the promotion (Required Actions).",
        ),
        "force_promote": Param(
            False,
            type="boolean",
            description="Promote even if the gate rejects the candidate (needs force_reason).",
        ),
        "force_reason": Param(
            "",
            type="string",
            maxLength=500,
            description="Why the gate is overridden; required with force_promote.",
        ),
    },
) as dag:
    wait_for_partitions = HivePartitionsSensor(
        task_id="wait_for_partitions",
        partitions=partition_templates(CHURN_SOURCES, span="params.out_of_time_days"),
        mode="reschedule",
        poke_interval=300,
        timeout=6 * 3600,
    )
    extract_snapshot = HiveExtractOperator(
        task_id="extract_snapshot",
        sources=CHURN_SOURCES,
        dataset="churn/snapshots",
        lookback_days="{{ params.lookback_days }}",
        span_days="{{ params.out_of_time_days }}",
        allow_empty_partitions="{{ params.allow_empty_partitions }}",
        outlets=[CHURN_SNAPSHOT],
    )

    build_features = SparkJobOperator(
        task_id="build_features",
        job="churn-features",
        arguments=[
            "--snapshot",
            "{{ ti.xcom_pull(task_ids='extract_snapshot') }}",
            "--output",
            "{{ lake_uri('churn', 'features', 'ds=' ~ ds) }}",
        ],
        outlets=[CHURN_FEATURES],
    )

    train_model = TrainModelOperator(
        task_id="train_model",
        features="{{ ti.xcom_pull(task_ids='build_features')['output'] }}",
        workers="{{ params.workers }}",
        train_params="{{ params.train_params | tojson }}",
        retrain="{{ params.retrain }}",
        outlets=[CHURN_MODEL_CANDIDATE],
    )

    evaluate_model = EvaluateModelOperator(
        task_id="evaluate_model",
        features="{{ ti.xcom_pull(task_ids='build_features')['output'] }}",
        candidate_version="{{ ti.xcom_pull(task_ids='train_model')['model_version'] }}",
        # the model the candidate was registered in, even if the setting changed since
        model_name="{{ ti.xcom_pull(task_ids='train_model')['model_name'] }}",
        thresholds="{{ params.promotion_thresholds | tojson }}",
    )
    promotion_gate = ModelGateOperator(
        task_id="promotion_gate",
        evaluation=evaluate_model.output,
        thresholds="{{ params.promotion_thresholds | tojson }}",
        force_promote="{{ params.force_promote }}",
        force_reason="{{ params.force_reason }}",
        approval_task_id="approve_promotion",
        reject_task_id="reject_candidate",
    )
    approve_promotion = PromotionApprovalOperator(
        task_id="approve_promotion",
        require_approval="{{ params.require_approval }}",
        subject="{% set decision = ti.xcom_pull(task_ids='promotion_gate', key='decision') %}"
        "Promote {{ decision['model_name'] }} version {{ decision['candidate_version'] }}?",
        body="{{ ti.xcom_pull(task_ids='promotion_gate', key='decision')['table'] }}",
        promote_task_id="promote_model",
        reject_task_id="reject_in_review",
        # An unanswered request must not hold the next day's run (max_active_runs=1) forever:
        # after a day the candidate is rejected.
        response_timeout=dt.timedelta(hours=24),
        defaults=["Reject"],
    )
    promote_model = PromoteModelOperator(
        task_id="promote_model",
        gate_task_id="promotion_gate",
        approval_task_id="approve_promotion",
        pool=REGISTRY_POOL,
        outlets=[CHURN_MODEL],
    )
    reject_candidate = RejectModelOperator(
        task_id="reject_candidate", gate_task_id="promotion_gate"
    )
    reject_in_review = RejectModelOperator(
        task_id="reject_in_review",
        gate_task_id="promotion_gate",
        approval_task_id="approve_promotion",
    )

    wait_for_partitions >> extract_snapshot >> build_features >> train_model >> evaluate_model
    evaluate_model >> promotion_gate >> [approve_promotion, reject_candidate]
    approve_promotion >> [promote_model, reject_in_review]
