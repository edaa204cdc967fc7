"""The local stack's environment points into this checkout, whatever the tests set."""

from __future__ import annotations

from pathlib import Path

from mlops_localstack import env

CHECKOUT = Path(__file__).resolve().parents[3]


def test_the_local_stack_lives_in_this_checkout() -> None:
    assert env.PROJECT_ROOT == CHECKOUT
    assert env.local_root({}) == CHECKOUT / ".local"
    variables = env.local_environment({})
    assert variables["AIRFLOW__CORE__DAGS_FOLDER"] == str(CHECKOUT / "dags")
    assert (CHECKOUT / "dags" / "churn_training.py").is_file()
    assert variables["AIRFLOW_HOME"] == str(CHECKOUT / ".local" / "airflow")
    assert variables["PYTHONPATH"].split(":")[:2] == [
        str(CHECKOUT / "include"),
        str(CHECKOUT / "plugins"),
    ]
