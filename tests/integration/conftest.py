from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TEST_DAGS = Path(__file__).resolve().parent / "dags"


@pytest.fixture
def test_dags(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The test DAGs, in a DAG bundle of their own beside the project's (``dag.test`` runs what
    a bundle holds, as the scheduler would)."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import DagBag

    bundles = [
        {
            "name": "dags-folder",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": conf.get("core", "dags_folder")},
        },
        {
            "name": "test-dags",
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(TEST_DAGS)},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    bag = DagBag(dag_folder=str(TEST_DAGS))
    assert bag.import_errors == {}
    return bag
