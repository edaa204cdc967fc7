"""Every benchmark at a smoke size: it runs, its engines agree, and its figures are real.

A benchmark that nobody runs rots (a schema change breaks it unseen until the next
measurement); these run each ``bench/*.py`` as ``make bench*`` does, on inputs small enough for
seconds, and check the fields the full runs report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_PORT

BENCH = Path(__file__).resolve().parents[2] / "bench"


def run_bench(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args``; its last JSON line (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (
        f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    summary: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_features_bench_engines_agree_on_the_demo_snapshot() -> None:
    summary = run_bench("features.py", "--sizes", "3000")
    assert summary["benchmark"] == "features"
    (size,) = summary["sizes"]
    assert size["results_match"] is True
    assert size["events"] > 0 and size["labelled_customers"] > 0
    for key in ("spark_tuned_warm_s", "spark_default_warm_s", "duckdb_warm_s"):
        assert size[key] > 0, key


def test_train_bench_measures_both_worker_counts() -> None:
    summary = run_bench(
        "train.py", "--customers", "300", "--epochs", "1", "--batch", "64", "--max-epochs", "2"
    )
    assert summary["benchmark"] == "train"
    assert summary["two_workers_identical_weights"] is True
    for key in (
        "plain_fit_examples_per_second",
        "launcher_1_worker_examples_per_second",
        "launcher_2_workers_examples_per_second",
    ):
        assert summary[key] > 0, key
    assert summary["launcher_fixed_overhead_seconds"] > 0
    assert 0.5 <= summary["bayes_optimal_test_auc"] <= 1
    assert 0 < summary["test_auc"] <= 1
    assert 1 <= summary["epochs_run_with_early_stopping"] <= 2


def test_dag_import_bench_times_both_files() -> None:
    summary = run_bench("dag_import.py", "--repeat", "1")
    assert summary["benchmark"] == "dag_import"
    assert summary["airflow_import_s"] > 0
    assert summary["churn_training_import_s"] > 0 and summary["trivial_import_s"] > 0
    assert summary["ratio_churn_training_to_trivial_with_airflow_import"] > 0


@pytest.mark.hive
def test_extract_bench_outputs_match_hive(hiveserver2: object) -> None:
    summary = run_bench(
        "extract.py",
        "--rows",
        "3000",
        "--repeat",
        "1",
        "--port",
        str(TEST_PORT),
        "--running-server",
    )
    extraction = summary["extraction"]
    assert extraction["results_match"] is True
    assert extraction["rows"] == 3000 == summary["setup"]["rows"]
    assert extraction["export_s"] > 0 and extraction["get_df_s"] > 0
    assert extraction["export_statement_s"] <= extraction["export_s"]


def test_reliability_bench_counts_its_cases(tmp_path: Path) -> None:
    # A suite inside the suite: its own stores, so the outer session's are untouched.
    summary = run_bench(
        "reliability.py",
        "-k",
        "write_error_mid_publish or hostile_conf_is_refused_by_the_dag_params",
        env={"MLOPS_TEST_ROOT": str(tmp_path / "stores"), "MLOPS_TEST_HIVESERVER2_PORT": "10003"},
    )
    assert summary["benchmark"] == "reliability"
    assert summary["faults_injected"] == summary["faults_survived_as_specified"] == 2
    assert summary["bad_inputs_tried"] == summary["bad_inputs_refused"] >= 1
    assert summary["lost_or_half_written"] == 0 and summary["failed"] == []
    assert summary["lakes_audited"] >= 1
