"""
### Churn training

Trains the churn model for one label day (`label_ds`, written `ds` below: the Param of that
name, or the newest day whose labels are complete; not the logical date `{{ ds }}`) from the
Hive warehouse:

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

from airflow.sdk import DAG, Param, TaskGroup

from mlops_airflow.assets import (
    CHURN_FEATURES,
    CHURN_MODEL,
    CHURN_MODEL_CANDIDATE,
    CHURN_SNAPSHOT,
    hive_asset,
)
from mlops_airflow.notifications import run_failed_alert, task_failed_alert
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
from mlops_airflow.utils import COMPUTE_BACKENDS, complete_label_ds, lake_uri
from mlops_jobs.churn.tables import CHURN_SOURCES, LABEL_HORIZON_DAYS, OUT_OF_TIME_DAYS
from mlops_jobs.contracts import DEFAULT_LOOKBACK_DAYS

#: The label day of the run (``complete_label_ds``), a Jinja expression.
BACKEND = "{{ params.compute_backend or '' }}"
LABEL_DS = "complete_label_ds(dag_run, params.label_ds, params.label_horizon_days)"
DATA, TRAINING, PROMOTION = "Data", "Training", "Promotion"

with DAG(
    dag_id="churn_training",
    description="Hive snapshot → Spark features → distributed training → MLflow candidate",
    doc_md=__doc__,
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    # Longer than the approval's response timeout: a run waiting for a person is not late.
    dagrun_timeout=dt.timedelta(hours=36),
    on_failure_callback=run_failed_alert(),
    tags=["churn", "ml"],
    user_defined_macros={"lake_uri": lake_uri, "complete_label_ds": complete_label_ds},
    default_args={
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=5),
        "on_failure_callback": task_failed_alert(),
    },
    params={
        "label_ds": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Label day",
            description="Train on the labels of this day (YYYY-MM-DD). Empty: the newest day "
            "whose labels are complete when the run is due (the day before its logical date, "
            "less the label horizon).",
            section=DATA,
        ),
        "label_horizon_days": Param(
            LABEL_HORIZON_DAYS,
            type="integer",
            minimum=0,
            maximum=365,
            title="Label horizon (days)",
            description="Days after a label's day before its labels are complete.",
            section=DATA,
        ),
        "lookback_days": Param(
            DEFAULT_LOOKBACK_DAYS,
            type="integer",
            minimum=1,
            maximum=730,
            title="Lookback (days)",
            description="Days of event history before the label day that the snapshot includes.",
            section=DATA,
        ),
        "out_of_time_days": Param(
            OUT_OF_TIME_DAYS,
            type="integer",
            minimum=0,
            maximum=90,
            title="Out-of-time test (days)",
            description="Train on the labels of this many days before the label day and test "
            "the model on the labels of the label day too (out of time); 0 trains on the label "
            "day and skips that test.",
            section=DATA,
        ),
        "allow_empty_partitions": Param(
            False,
            type="boolean",
            title="Allow empty partitions",
            description="Accept required partitions that exist but have no rows.",
            section=DATA,
        ),
        "wait_for_data_minutes": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=24 * 60,
            title="Wait for data (minutes)",
            description="How long to wait for missing partitions. Empty: scheduled runs wait "
            "up to 6 hours, runs triggered by hand check once and fail naming what is missing.",
            section=DATA,
        ),
        "compute_backend": Param(
            None,
            type=["null", "string"],
            enum=[None, *COMPUTE_BACKENDS],
            values_display={
                "null": "Deployment setting",
                "local": "Local Spark",
                "databricks": "Databricks",
            },
            title="Compute backend",
            description="Where the Spark jobs run. Empty: the deployment's setting (Variable "
            "mlops_compute_backend, else local).",
            section=TRAINING,
        ),
        "workers": Param(
            2,
            type="integer",
            minimum=1,
            maximum=64,
            title="Workers",
            description="TensorFlow workers training synchronously.",
            section=TRAINING,
        ),
        "epochs": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=1000,
            title="Epochs",
            description="Maximum epochs (early stopping may end sooner). Empty: "
            "train_config.json's.",
            section=TRAINING,
        ),
        "learning_rate": Param(
            None,
            type=["null", "number"],
            exclusiveMinimum=0,
            maximum=1,
            title="Learning rate",
            description="Adam's learning rate. Empty: train_config.json's.",
            section=TRAINING,
        ),
        "batch_size": Param(
            None,
            type=["null", "integer"],
            minimum=8,
            maximum=65536,
            title="Batch size per worker",
            description="Examples per worker and step. Empty: train_config.json's.",
            section=TRAINING,
        ),
        "train_params": Param(
            {},
            type="object",
            title="Expert overrides (JSON)",
            description="Other overrides of train_config.json, e.g. "
            '{"dropout": 0.1, "hidden_units": [128, 64]}.',
            section=TRAINING,
        ),
        "retrain": Param(
            False,
            type="boolean",
            title="Retrain",
            description="Train even if a model version was trained on the same inputs (feature "
            "set, code, configuration and workers); by default that version is reused.",
            section=TRAINING,
        ),
        "require_approval": Param(
            False,
            type="boolean",
            title="Require approval",
            description="Wait for a person to approve the promotion (Required Actions).",
            section=PROMOTION,
        ),
        "promotion_thresholds": Param(
            {},
            type="object",
            title="Threshold overrides (JSON)",
            description='Promotion threshold overrides, e.g. {"floor": 0.75, '
            '"min_improvement_over_champion": 0.005}.',
            section=PROMOTION,
        ),
        "force_promote": Param(
            False,
            type="boolean",
            title="Force promotion",
            description="Promote even if the gate rejects the candidate (needs a reason).",
            section=PROMOTION,
        ),
        # Optional fields default to None: the trigger form requires a value for every field
        # whose type does not admit null (an empty string included).
        "force_reason": Param(
            None,
            type=["null", "string"],
            maxLength=500,
            title="Reason for forcing",
            description="Why the gate is overridden; required with Force promotion.",
            section=PROMOTION,
        ),
    },
) as dag:
    # Groups for the stages in the Graph and Grid views; task ids stay unprefixed, so XCom
    # pulls, links and the tasks' history keep their names.
    with TaskGroup(
        "extraction",
        group_display_name="Hive extraction",
        prefix_group_id=False,
        tooltip="Waits for the partitions and exports the checked snapshot",
    ):
        wait_for_partitions = HivePartitionsSensor(
            task_id="wait_for_partitions",
            doc_md="Waits for the Hive partitions the run needs; a manual run checks once.",
            partitions=partition_templates(
                CHURN_SOURCES, ds=LABEL_DS, span="params.out_of_time_days"
            ),
            mode="reschedule",
            poke_interval=300,
            timeout=6 * 3600,
            # per poke (reschedule mode): a metastore call that hangs fails the poke
            execution_timeout=dt.timedelta(minutes=10),
            wait_minutes="{{ params.wait_for_data_minutes }}",
        )
        extract_snapshot = HiveExtractOperator(
            task_id="extract_snapshot",
            doc_md="Checks the tables' contract and exports the partitions server-side into a "
            "snapshot in the lake (`manifest.json` has the row counts and the content hash).",
            sources=CHURN_SOURCES,
            inlets=[hive_asset(contract) for contract in CHURN_SOURCES],
            dataset="churn/snapshots",
            ds=f"{{{{ {LABEL_DS} }}}}",
            lookback_days="{{ params.lookback_days }}",
            span_days="{{ params.out_of_time_days }}",
            allow_empty_partitions="{{ params.allow_empty_partitions }}",
            outlets=[CHURN_SNAPSHOT],
            execution_timeout=dt.timedelta(hours=2),
        )

    with TaskGroup(
        "features_and_training",
        group_display_name="Features and training",
        prefix_group_id=False,
        tooltip="Spark features, then distributed TensorFlow training tracked in MLflow",
    ):
        build_features = SparkJobOperator(
            task_id="build_features",
            doc_md="Spark: validates the snapshot and builds point-in-time features with a "
            "deterministic split.",
            job="churn-features",
            backend=BACKEND,
            arguments=[
                "--snapshot",
                "{{ ti.xcom_pull(task_ids='extract_snapshot') }}",
                "--output",
                f"{{{{ lake_uri('churn', 'features', 'ds=' ~ {LABEL_DS}) }}}}",
            ],
            outlets=[CHURN_FEATURES],
            execution_timeout=dt.timedelta(hours=2),
        )

        train_model = TrainModelOperator(
            task_id="train_model",
            doc_md="TensorFlow workers train the model; MLflow tracks the run and registers the "
            "candidate version (link: MLflow run).",
            backend=BACKEND,
            features="{{ ti.xcom_pull(task_ids='build_features')['output'] }}",
            workers="{{ params.workers }}",
            train_params="{{ params.train_params | tojson }}",
            epochs="{{ params.epochs }}",
            learning_rate="{{ params.learning_rate }}",
            batch_size="{{ params.batch_size }}",
            retrain="{{ params.retrain }}",
            outlets=[CHURN_MODEL_CANDIDATE],
            execution_timeout=dt.timedelta(hours=6),
        )

    with TaskGroup(
        "promotion",
        group_display_name="Evaluation and promotion",
        prefix_group_id=False,
        tooltip="Candidate against champion and baseline, the gate, approval and promotion",
    ):
        evaluate_model = EvaluateModelOperator(
            task_id="evaluate_model",
            doc_md="Candidate, champion and baseline score the same test and out-of-time splits; "
            "metrics and the report go to the candidate's MLflow run.",
            backend=BACKEND,
            features="{{ ti.xcom_pull(task_ids='build_features')['output'] }}",
            candidate_version="{{ ti.xcom_pull(task_ids='train_model')['model_version'] }}",
            # the model the candidate was registered in, even if the setting changed since
            model_name="{{ ti.xcom_pull(task_ids='train_model')['model_name'] }}",
            thresholds="{{ params.promotion_thresholds | tojson }}",
            execution_timeout=dt.timedelta(hours=2),
        )
        promotion_gate = ModelGateOperator(
            task_id="promotion_gate",
            doc_md="Applies the promotion thresholds; the task log shows the decision's table.",
            evaluation=evaluate_model.output,
            thresholds="{{ params.promotion_thresholds | tojson }}",
            force_promote="{{ params.force_promote }}",
            force_reason="{{ params.force_reason or '' }}",
            approval_task_id="approve_promotion",
            reject_task_id="reject_candidate",
            execution_timeout=dt.timedelta(minutes=15),
        )
        approve_promotion = PromotionApprovalOperator(
            task_id="approve_promotion",
            doc_md="With Require approval, a person approves or rejects the promotion under "
            "Required Actions; otherwise it passes at once.",
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
            doc_md="Moves @challenger, then @champion (compare-and-set); the old champion keeps "
            "@previous.",
            gate_task_id="promotion_gate",
            approval_task_id="approve_promotion",
            pool=REGISTRY_POOL,
            outlets=[CHURN_MODEL],
            execution_timeout=dt.timedelta(minutes=15),
        )
        reject_candidate = RejectModelOperator(
            task_id="reject_candidate",
            doc_md="Records why the gate rejected the candidate.",
            gate_task_id="promotion_gate",
            execution_timeout=dt.timedelta(minutes=15),
        )
        reject_in_review = RejectModelOperator(
            task_id="reject_in_review",
            doc_md="Records that the promotion was rejected in review (or not answered in time).",
            gate_task_id="promotion_gate",
            approval_task_id="approve_promotion",
            execution_timeout=dt.timedelta(minutes=15),
        )

    wait_for_partitions >> extract_snapshot >> build_features >> train_model >> evaluate_model
    evaluate_model >> promotion_gate >> [approve_promotion, reject_candidate]
    approve_promotion >> [promote_model, reject_in_review]
