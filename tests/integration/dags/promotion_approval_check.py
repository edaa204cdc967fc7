"""Test DAG: the promotion stage of ``churn_training`` on an evaluation given in the run's conf."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from mlops_airflow.operators.promotion import (
    ModelGateOperator,
    PromoteModelOperator,
    PromotionApprovalOperator,
    RejectModelOperator,
)

with DAG(
    "promotion_approval_check",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    doc_md=__doc__,
    tags=["test"],
) as dag:

    @task
    def evaluate_model() -> dict[str, Any]:
        return get_current_context()["dag_run"].conf["evaluation"]

    gate = ModelGateOperator(
        task_id="promotion_gate",
        evaluation=evaluate_model(),
        approval_task_id="approve_promotion",
        reject_task_id="reject_candidate",
    )
    approve = PromotionApprovalOperator(
        task_id="approve_promotion",
        require_approval=True,
        subject="Promote "
        "{{ ti.xcom_pull(task_ids='promotion_gate', key='decision')['candidate_version'] }}?",
        body="{{ ti.xcom_pull(task_ids='promotion_gate', key='decision')['table'] }}",
        promote_task_id="promote_model",
        reject_task_id="reject_in_review",
    )
    promote = PromoteModelOperator(
        task_id="promote_model", gate_task_id="promotion_gate", approval_task_id="approve_promotion"
    )
    reject_candidate = RejectModelOperator(
        task_id="reject_candidate", gate_task_id="promotion_gate"
    )
    reject_in_review = RejectModelOperator(
        task_id="reject_in_review",
        gate_task_id="promotion_gate",
        approval_task_id="approve_promotion",
    )
    gate >> [approve, reject_candidate]
    approve >> [promote, reject_in_review]
