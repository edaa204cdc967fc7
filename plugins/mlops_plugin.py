"""Registers the project's operator extra links with Airflow (needed to show them in the UI)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow.operators.spark_job import DatabricksRunLink
from mlops_airflow.operators.train_model import MlflowModelVersionLink, MlflowRunLink


class MlopsPlugin(AirflowPlugin):
    name = "mlops_airflow"
    operator_extra_links = [MlflowRunLink(), MlflowModelVersionLink(), DatabricksRunLink()]  # noqa: RUF012 (AirflowPlugin's own convention)
