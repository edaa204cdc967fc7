"""
### Churn model rollback

Moves `churn@champion` back to an earlier version, for when the current champion misbehaves in
production. Trigger it from the UI ("Trigger DAG w/ config"):

- `version`: the version to restore; `previous` (the default) means `churn@previous`, the
  champion before the current one.
- `reason`: why (required); recorded in the tags of both versions with who triggered the run.

The move is the same compare-and-set as a promotion (`@champion` must still be the version read
at the start), runs in the `mlflow_registry` pool so it never interleaves with a promotion, and
leaves the replaced champion as `@previous`. It emits the `churn_model` Asset, so
`churn_batch_scoring` re-scores with the restored model.

Connection: `mlflow_default` (else `MLFLOW_TRACKING_URI`).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from mlops_airflow.assets import CHURN_MODEL
from mlops_airflow.operators.promotion import REGISTRY_POOL, RollbackModelOperator

with DAG(
    dag_id="churn_model_rollback",
    description="Move churn@champion back to @previous or a chosen version",
    doc_md=__doc__,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["churn", "ml", "registry"],
    params={
        "version": Param(
            "previous",
            type="string",
            pattern=r"^(previous|[1-9][0-9]*)$",
            title="Version",
            description="Version number to restore, or 'previous' for churn@previous.",
        ),
        "reason": Param(
            type="string",
            minLength=3,
            maxLength=500,
            title="Reason",
            description="Why the champion is rolled back (recorded in the model's tags).",
        ),
    },
) as dag:
    RollbackModelOperator(
        task_id="rollback_champion",
        doc_md="Moves @champion to the chosen version; the replaced champion keeps @previous.",
        execution_timeout=dt.timedelta(minutes=15),
        version="{{ params.version }}",
        reason="{{ params.reason }}",
        pool=REGISTRY_POOL,
        outlets=[CHURN_MODEL],
    )
