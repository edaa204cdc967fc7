"""
### Churn batch scoring

Scores every active customer with the current `churn@champion` and writes the predictions back
to Hive, `ml.churn_predictions`, partition `ds`. Runs daily and whenever the champion changes
(Asset `churn_model`, emitted by a promotion in `churn_training` or by `churn_model_rollback`).

1. **wait_for_partitions**: `raw.events` has every daily partition of the lookback window and
   `raw.customers` the snapshot of the day before `ds`.
2. **extract_snapshot**: those partitions, checked against the contract and exported to
   `{lake}/churn/scoring_snapshots/ds=…/`.
3. **build_features**: the same Spark feature code as training, in inference mode: every
   customer who signed up before `ds`, no label (`{lake}/churn/inference_features/ds=…/`).
4. **score**: the champion's version is resolved once; Spark scores every customer with it
   (probability, decision at the operating threshold of `promotion_config.json`, model version,
   scoring time) into `{lake}/churn/predictions/ds=…/`.
5. **load_predictions**: replaces the Hive partition `ds` of `ml.churn_predictions` (created
   from its contract if needed) and reconciles the row count. A re-run replaces the partition;
   nothing is duplicated. Asset `churn_predictions`.

`ds` is the run's logical date; runs triggered by the model Asset have none and use the day
they were due; the Param `ds` overrides both.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, AssetOrTimeSchedule, CronTriggerTimetable, Param, TaskGroup

from mlops_airflow.assets import CHURN_MODEL, CHURN_PREDICTIONS, hive_asset
from mlops_airflow.notifications import run_failed_alert, task_failed_alert
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_airflow.operators.hive_load import HivePartitionLoadOperator
from mlops_airflow.operators.spark_job import SparkJobOperator
from mlops_airflow.sensors.hive_partitions import HivePartitionsSensor, partition_templates
from mlops_airflow.utils import lake_uri, resolve_model_name, run_ds
from mlops_jobs.churn.tables import CHURN_PREDICTIONS as PREDICTIONS_TABLE
from mlops_jobs.churn.tables import CHURN_SCORING_SOURCES
from mlops_jobs.contracts import DEFAULT_LOOKBACK_DAYS

DS = "run_ds(dag_run, params.ds)"

with DAG(
    dag_id="churn_batch_scoring",
    description="churn@champion scores every active customer into ml.churn_predictions",
    doc_md=__doc__,
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 6 * * *", timezone="UTC"), assets=CHURN_MODEL
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["churn", "ml", "scoring"],
    user_defined_macros={
        "lake_uri": lake_uri,
        "run_ds": run_ds,
        "model_name": resolve_model_name,
    },
    on_failure_callback=run_failed_alert(),
    default_args={
        "retries": 1,
        "retry_delay": dt.timedelta(minutes=5),
        "on_failure_callback": task_failed_alert(),
    },
    params={
        "ds": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            description="Score as of this day (YYYY-MM-DD); empty: the run's date.",
        ),
        "lookback_days": Param(
            DEFAULT_LOOKBACK_DAYS,
            type="integer",
            minimum=1,
            maximum=730,
            title="Lookback (days)",
            description="Days of event history before ds that the features read.",
        ),
    },
) as dag:
    with TaskGroup(
        "extraction",
        group_display_name="Hive extraction",
        prefix_group_id=False,
        tooltip="Waits for the partitions and exports the checked snapshot",
    ):
        wait_for_partitions = HivePartitionsSensor(
            task_id="wait_for_partitions",
            doc_md="Waits for the event window and the customers' snapshot of the day before ds.",
            partitions=partition_templates(CHURN_SCORING_SOURCES, ds=DS),
            mode="reschedule",
            poke_interval=300,
            timeout=6 * 3600,
            # per poke (reschedule mode): a metastore call that hangs fails the poke
            execution_timeout=dt.timedelta(minutes=10),
        )
        extract_snapshot = HiveExtractOperator(
            task_id="extract_snapshot",
            sources=CHURN_SCORING_SOURCES,
            inlets=[hive_asset(contract) for contract in CHURN_SCORING_SOURCES],
            ds=f"{{{{ {DS} }}}}",
            lookback_days="{{ params.lookback_days }}",
            dataset="churn/scoring_snapshots",
            doc_md="Checks the contract and exports the partitions server-side into the lake.",
            execution_timeout=dt.timedelta(hours=2),
        )
    with TaskGroup(
        "scoring",
        group_display_name="Features and scoring",
        prefix_group_id=False,
        tooltip="Inference features, scores from churn@champion, the Hive partition",
    ):
        build_features = SparkJobOperator(
            task_id="build_features",
            doc_md="Spark: the training feature code in inference mode, one row per customer.",
            job="churn-features",
            arguments=[
                "--mode",
                "inference",
                "--snapshot",
                "{{ ti.xcom_pull(task_ids='extract_snapshot') }}",
                "--output",
                f"{{{{ lake_uri('churn', 'inference_features', 'ds=' ~ {DS}) }}}}",
            ],
            execution_timeout=dt.timedelta(hours=2),
        )
        score = SparkJobOperator(
            task_id="score",
            doc_md="Spark: scores every customer with churn@champion (the version is recorded).",
            job="churn-score",
            arguments=[
                "--features",
                "{{ ti.xcom_pull(task_ids='build_features')['output'] }}",
                "--output",
                f"{{{{ lake_uri('churn', 'predictions', 'ds=' ~ {DS}) }}}}",
                "--model-name",
                "{{ model_name() }}",
            ],
            execution_timeout=dt.timedelta(hours=2),
        )
        load_predictions = HivePartitionLoadOperator(
            task_id="load_predictions",
            doc_md="Replaces the ds partition of the predictions table in one step.",
            target=PREDICTIONS_TABLE,
            source="{{ ti.xcom_pull(task_ids='score')['output'] }}",
            ds=f"{{{{ {DS} }}}}",
            outlets=[CHURN_PREDICTIONS],
            execution_timeout=dt.timedelta(hours=1),
        )

    wait_for_partitions >> extract_snapshot >> build_features >> score >> load_predictions
