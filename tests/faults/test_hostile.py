"""Hostile input: injection attempts in every string that reaches a query, a path or the
registry, path traversal, absurd numbers and wrong types, in DAG Params (what the trigger form
and the REST API's ``conf`` go through) and in operator arguments. Each is refused with a
message naming the parameter, before any side effect: no connection to HiveServer2 (the
connection points at a closed port, so an attempt would fail differently), nothing written to
the lake.

Run alone with ``pytest -m hostile`` (``bench/reliability.py`` counts the cases).
"""

from __future__ import annotations

import copy
import datetime as dt
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_airflow.operators.train_model import TrainModelOperator
from mlops_jobs.churn.tables import CHURN_SOURCES
from tests.support import FakeTI

pytestmark = pytest.mark.hostile

DAGS = Path(__file__).resolve().parents[2] / "dags"
INJECTIONS = [
    "2026-03-01' OR '1'='1",
    "2026-03-01; DROP TABLE raw.events",
    "2026-03-01`; --",
    "../../../etc/passwd",
    "2026-02-30",
    "{{ 7 * 7 }}",
    "",
]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(DAGS))


@pytest.mark.parametrize(
    ("dag_id", "conf", "named"),
    [
        ("churn_training", {"lookback_days": -5}, "lookback_days"),
        ("churn_training", {"lookback_days": 10**9}, "lookback_days"),
        ("churn_training", {"lookback_days": "90; DROP TABLE raw.events"}, "lookback_days"),
        ("churn_training", {"lookback_days": 3.5}, "lookback_days"),
        ("churn_training", {"out_of_time_days": -1}, "out_of_time_days"),
        ("churn_training", {"workers": 0}, "workers"),
        ("churn_training", {"workers": 100000}, "workers"),
        ("churn_training", {"workers": "2"}, "workers"),
        ("churn_training", {"train_params": "epochs=10"}, "train_params"),
        ("churn_training", {"train_params": ["epochs", 10]}, "train_params"),
        ("churn_training", {"require_approval": "yes"}, "require_approval"),
        ("churn_training", {"force_reason": "x" * 10_000}, "force_reason"),
        ("churn_training", {"label_ds": "2026-03-01' OR '1'='1"}, "label_ds"),
        ("churn_training", {"label_ds": "2026-02-30"}, "label_ds"),
        ("churn_training", {"label_horizon_days": -1}, "label_horizon_days"),
        ("churn_training", {"epochs": 0}, "epochs"),
        ("churn_training", {"learning_rate": 0}, "learning_rate"),
        ("churn_training", {"learning_rate": "0.1; rm -rf /"}, "learning_rate"),
        ("churn_training", {"batch_size": 2}, "batch_size"),
        ("churn_training", {"compute_backend": "kubernetes"}, "compute_backend"),
        ("churn_training", {"wait_for_data_minutes": -5}, "wait_for_data_minutes"),
        ("churn_batch_scoring", {"ds": "2026-03-01' OR '1'='1"}, "ds"),
        ("churn_batch_scoring", {"ds": "../../etc"}, "ds"),
        ("churn_batch_scoring", {"lookback_days": 0}, "lookback_days"),
    ],
)
def test_hostile_conf_is_refused_by_the_dag_params(
    dagbag: DagBag, dag_id: str, conf: dict[str, Any], named: str
) -> None:
    """What triggering with this ``conf`` runs: the DAG's Params validated with the run's conf
    (a run with invalid Params is never created)."""
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=named):
        params.update(conf)  # each value is validated as it is set
        params.validate()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("ds", INJECTIONS)
def test_hostile_ds_never_reaches_hive_or_the_lake(
    ds: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_HIVESERVER2_HOSTILE",
        f"hiveserver2://127.0.0.1:{closed_port()}/default?auth_mechanism=NONE",
    )
    operator = HiveExtractOperator(
        task_id="extract_snapshot",
        sources=CHURN_SOURCES,
        dataset="churn/snapshots",
        ds=ds,
        lake_root=str(tmp_path / "lake"),
        hiveserver2_conn_id="hiveserver2_hostile",
    )
    with pytest.raises(InvalidParameterError, match="ds"):
        operator.execute({})  # type: ignore[arg-type]
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"lookback_days": "90 OR 1=1"}, "lookback_days"),
        ({"lookback_days": -1}, "lookback_days"),
        ({"span_days": "-3"}, "span_days"),
        ({"allow_empty_partitions": "maybe"}, "allow_empty_partitions"),
        ({"lake_root": "relative/lake"}, "lake root 'relative/lake' is a relative path"),
        ({"dataset": "../../../outside"}, "invalid lake path segment '..'"),
    ],
)
def test_hostile_extraction_arguments_are_refused_before_any_side_effect(
    arguments: dict[str, Any], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_HIVESERVER2_HOSTILE",
        f"hiveserver2://127.0.0.1:{closed_port()}/default?auth_mechanism=NONE",
    )
    monkeypatch.chdir(tmp_path)
    defaults: dict[str, Any] = {
        "task_id": "extract_snapshot",
        "sources": CHURN_SOURCES,
        "dataset": "churn/snapshots",
        "ds": "2026-03-01",
        "lake_root": str(tmp_path / "lake"),
        "hiveserver2_conn_id": "hiveserver2_hostile",
    }
    with pytest.raises(InvalidParameterError, match=named):
        HiveExtractOperator(**{**defaults, **arguments}).execute({})  # type: ignore[arg-type]
    assert not (tmp_path / "lake").exists() and not (tmp_path / "relative").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"model_name": "churn'; DROP TABLE registered_models; --"}, "registered model name"),
        ({"model_name": "../../models/churn"}, "registered model name"),
        ({"workers": "two"}, "workers"),
        ({"workers": -1}, "workers"),
        ({"train_params": "[1, 2]"}, "train_params"),
        ({"worker_timeout_seconds": "0"}, "worker_timeout_seconds"),
        ({"retrain": "perhaps"}, "retrain"),
        ({"epochs": "ten"}, "epochs"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"batch_size": "0"}, "batch_size"),
        ({"epochs": "5", "train_params": '{"epochs": 3}'}, "epochs is 5 but train_params"),
    ],
)
def test_hostile_training_arguments_are_refused_before_a_job_starts(
    arguments: dict[str, Any], named: str
) -> None:
    defaults: dict[str, Any] = {
        "task_id": "train_model",
        "features": "file:///lake/churn/features/ds=2026-03-01",
        "backend": "local",
    }
    operator = TrainModelOperator(**{**defaults, **arguments})
    context = {
        "ti": FakeTI(task_id="train_model"),
        "dag_run": SimpleNamespace(logical_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC)),
    }
    with pytest.raises(InvalidParameterError, match=named):
        operator.job_arguments(context)  # type: ignore[arg-type]
