"""Human approval of a promotion, answered through Airflow's own REST API.

A DAG with the real promotion operators runs under ``dag.test()``; when the approval task waits
for input, a reviewer logs in to the API (the simple auth manager's token endpoint) and answers
with ``PATCH …/taskInstances/approve_promotion/-1/hitlDetails``, as the UI's Required Actions
page does. Nothing in the operators is patched.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_airflow.hooks.mlflow_registry import MlflowRegistryHook
from tests.support import evaluation_result, register_version

DAG_ID = "promotion_approval_check"
REVIEWER, PASSWORD = "reviewer", "reviewer-secret"


@pytest.fixture
def approval_dag(test_dags: Any) -> Any:
    return test_dags.dags[DAG_ID]


@pytest.fixture
def api(airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A client of the Airflow API app on the test metadata database, logged in as a reviewer."""
    from fastapi.testclient import TestClient

    passwords = tmp_path / "passwords.json"
    passwords.write_text(json.dumps({REVIEWER: PASSWORD}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", f"{REVIEWER}:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    # 64 bytes: the API signs its tokens with HMAC-SHA512
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(32))
    from airflow.api_fastapi.app import create_app

    with TestClient(create_app()) as client:
        token = client.post("/auth/token", json={"username": REVIEWER, "password": PASSWORD})
        assert token.status_code == 201, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def answer_when_asked(api: Any, option: str, seen: dict[str, Any]) -> None:
    """The reviewer: wait for the pending request, read it, answer it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            listing = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/~/hitlDetails")
            listing.raise_for_status()
            pending = [d for d in listing.json()["hitl_details"] if not d["response_received"]]
            if pending:
                request = pending[0]
                seen["request"] = request
                ti = request["task_instance"]
                response = api.patch(
                    f"/api/v2/dags/{DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                    f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                    json={"chosen_options": [option]},
                )
                seen["status"] = response.status_code
                return
        except Exception as err:  # keep asking; the test reports the last error
            seen["error"] = repr(err)
        time.sleep(0.5)
    seen.setdefault("status", "no approval request appeared")


@pytest.mark.integration
@pytest.mark.parametrize("option", ["Promote", "Reject"])
def test_reviewer_decides_the_promotion_through_the_rest_api(
    approval_dag: Any, api: Any, option: str
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    hook = MlflowRegistryHook()
    name = f"churn_test_{uuid.uuid4().hex[:8]}"
    v1 = register_version(hook.client, name)
    hook.move_champion(name, v1, None)
    v2 = register_version(hook.client, name)
    evaluation = evaluation_result(hook.client, name, v2, 0.84, 0.78, v1, 0.81)

    seen: dict[str, Any] = {}
    reviewer = threading.Thread(target=answer_when_asked, args=(api, option, seen), daemon=True)
    reviewer.start()
    run = approval_dag.test(
        logical_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        run_conf={"evaluation": evaluation},
    )
    reviewer.join(timeout=10)

    assert seen.get("status") == 200, seen
    assert seen["request"]["subject"] == f"Promote {v2}?"
    assert "| roc_auc ↑ | 0.8400 | 0.8100 | 0.7800 |" in seen["request"]["body"]
    assert run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["reject_candidate"] == TaskInstanceState.SKIPPED
    tags = hook.client.get_model_version(name, v2).tags
    assert tags["approval.by"] == REVIEWER
    if option == "Promote":
        assert states["promote_model"] == TaskInstanceState.SUCCESS
        assert states["reject_in_review"] == TaskInstanceState.SKIPPED
        assert tags["approval"] == "approved" and tags["validation_status"] == "passed"
        assert hook.alias_version(name, "champion") == v2
        assert hook.alias_version(name, "previous") == v1
    else:
        assert states["promote_model"] == TaskInstanceState.SKIPPED
        assert states["reject_in_review"] == TaskInstanceState.SUCCESS
        assert tags["approval"] == "rejected" and tags["validation_status"] == "rejected"
        assert tags["rejected_by"] == "approval"
        assert hook.alias_version(name, "champion") == v1
