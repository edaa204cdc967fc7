"""Generic operators, sensors and hooks know table contracts, not any one pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "module",
    [
        "mlops_airflow.hooks.hive",
        "mlops_airflow.operators.hive_extract",
        "mlops_airflow.operators.hive_load",
        "mlops_airflow.sensors.hive_partitions",
    ],
)
def test_generic_module_imports_no_pipeline(module: str) -> None:
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        "print(','.join(m for m in sys.modules if m.startswith('mlops_jobs.churn')))"
    )
    pythonpath = os.pathsep.join(str(ROOT / p) for p in ("include", "plugins"))
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
