"""Test DAG: a Databricks job whose first try dies after submitting its run, then is retried."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.databricks.operators.databricks import DatabricksSubmitRunOperator
from airflow.sdk import DAG

from mlops_airflow.compute.databricks import DatabricksJob
from mlops_airflow.operators.spark_job import SparkJobOperator


class DiesAfterSubmitting(SparkJobOperator):
    """On its first try, fails the way a killed worker leaves a task: after the run was
    submitted and its id stored, before the run ended."""

    def databricks_job(self) -> DatabricksJob:
        job = super().databricks_job()
        submitter = job.submitter

        def dying_submitter(context: Any) -> DatabricksSubmitRunOperator:
            submit = submitter(context)
            if context["ti"].try_number == 1:

                def lost(external_id: Any, context: Any) -> None:
                    raise RuntimeError(
                        f"simulated worker loss while Databricks run {external_id} runs"
                    )

                submit.poll_until_complete = lost  # type: ignore[method-assign]
            return submit

        job.submitter = dying_submitter  # type: ignore[method-assign]
        return job


with DAG(
    "databricks_reattach_check",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    doc_md=__doc__,
    tags=["test"],
) as dag:
    DiesAfterSubmitting(
        task_id="version",
        job="version",
        backend="databricks",
        databricks_cluster={"new_cluster": {"spark_version": "16.4.x-scala2.12", "num_workers": 1}},
        polling_period_seconds=0.2,
        retries=1,
        retry_delay=dt.timedelta(0),
    )
