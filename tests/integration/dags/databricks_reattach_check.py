"""Test DAG: a Databricks job whose first try dies after submitting its run, then is retried."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG

from mlops_airflow.operators.spark_job import SparkJobOperator


class DiesAfterSubmitting(SparkJobOperator):
    """On its first try, fails the way a killed worker leaves a task: after the run was
    submitted and its id stored, before the run ended."""

    def poll_until_complete(self, external_id: Any, context: Any) -> Any:
        if context["ti"].try_number == 1:
            raise RuntimeError(f"simulated worker loss while Databricks run {external_id} runs")
        return super().poll_until_complete(external_id, context)


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
