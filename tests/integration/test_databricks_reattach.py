"""A retry reattaches to the Databricks run of the try before, through Airflow's own task
runner and task state store (``ResumableJobMixin``), not a stand-in for them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from mlops_jobs.distribution import source_hash
from tests.support import databricks_emulator


@pytest.mark.integration
def test_a_retry_after_a_lost_worker_reattaches_to_the_submitted_run(
    test_dags: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.utils.state import DagRunState, TaskInstanceState

    monkeypatch.setenv("MLOPS_LAKE_ROOT", str(tmp_path / "lake"))
    with databricks_emulator(tmp_path / "databricks", monkeypatch, pending_seconds=0.5) as emulator:
        run = test_dags.dags["databricks_reattach_check"].test(
            logical_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
        )
    assert run.state == DagRunState.SUCCESS
    ti = run.get_task_instance("version")
    assert ti.state == TaskInstanceState.SUCCESS and ti.try_number == 2
    submits = [p for method, p in emulator.requests if p.endswith("runs/submit")]
    assert len(submits) == 1, emulator.requests
    (databricks_run,) = emulator.runs.values()
    assert databricks_run.result_state == "SUCCESS"
    assert ti.xcom_pull(task_ids="version") == {
        "package": "mlops_jobs",
        "source_hash": source_hash(),
    }
