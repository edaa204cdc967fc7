"""Benchmark the import time of the training DAG against a one-task DAG, side by side in one run.

Each DAG file in fresh interpreters with the local stack's environment: (1) ``import airflow``
(timed apart); (2) the ``airflow.*`` modules the DAG file names (``iter_airflow_imports``, as the
processor pre-imports them before forking its parsing child when ``parsing_pre_import_modules``
is on); (3) the file executed as the DagBag's importer does (``SourceFileLoader`` under
``get_unique_dag_module_name``). Compared between ``dags/churn_training.py`` and a one-task DAG
(``EmptyOperator``), three ways: ``ratio_churn_training_to_trivial_with_airflow_import`` is (1) +
(2) + (3), what a fresh interpreter pays for each file (the target's measure);
``ratio_churn_training_to_trivial`` is (2) + (3) alone, what the file adds beyond ``import
airflow``; ``..._in_processor`` is (2) + (3) in an interpreter that first imports
``airflow.dag_processing.processor``, what the processor's parsing child (forked from a parent
that holds those modules) pays per parse. Both files are copied into a temporary directory, so
their bytecode caches are written there, and each is imported once before the timed repetitions
so both run from compiled bytecode.

Prints one JSON line per repetition; the last line is one JSON object with everything.

Usage: ``python bench/dag_import.py [--repeat 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import Emit, json_output

ROOT = Path(__file__).resolve().parents[1]
IMPORT_TARGET_RATIO = 1.5

TRIVIAL_DAG = '''"""One task, nothing else: the baseline of the import-time benchmark."""

import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG(
    dag_id="bench_trivial",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
) as dag:
    EmptyOperator(task_id="noop")
'''

IMPORT_PROBE = """
import importlib, importlib.machinery, importlib.util, json, sys, time

path, mode = sys.argv[1], sys.argv[2]
started = time.perf_counter()
import airflow
if mode == "processor":
    # What the DAG processor's parsing child inherits from the parent it forks from.
    import airflow.dag_processing.processor
airflow_s = time.perf_counter() - started

from airflow.utils.file import get_unique_dag_module_name, iter_airflow_imports

modules = list(iter_airflow_imports(path))
started = time.perf_counter()
for module in modules:
    importlib.import_module(module)
preimport_s = time.perf_counter() - started

name = get_unique_dag_module_name(path)
started = time.perf_counter()
loader = importlib.machinery.SourceFileLoader(name, path)
spec = importlib.util.spec_from_loader(name, loader)
dag_module = importlib.util.module_from_spec(spec)
sys.modules[name] = dag_module
loader.exec_module(dag_module)
parse_s = time.perf_counter() - started

from airflow.sdk import DAG

dags = sorted(v.dag_id for v in vars(dag_module).values() if isinstance(v, DAG))
print(json.dumps({"airflow_import_s": airflow_s, "preimport_s": preimport_s,
                  "parse_s": parse_s, "dags": dags}))
"""


def import_once(path: Path, mode: str = "fresh") -> dict[str, Any]:
    """One fresh interpreter importing the DAG file (``IMPORT_PROBE``); its timings. ``mode``
    ``processor`` first imports what the DAG processor's parsing child already holds."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(path), mode],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        cwd=path.parent,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {path.name} failed:\n{result.stderr[-3000:]}")
    timings: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if not timings["dags"]:
        raise RuntimeError(f"{path.name} defined no DAG")
    timings["import_s"] = timings["preimport_s"] + timings["parse_s"]
    return timings


def measure_imports(dag_dir: Path, repeat: int, emit: Emit) -> dict[str, Any]:
    dag_dir.mkdir(parents=True)
    files = {
        "churn_training": dag_dir / "churn_training.py",
        "trivial": dag_dir / "bench_trivial.py",
    }
    shutil.copyfile(ROOT / "dags" / "churn_training.py", files["churn_training"])
    files["trivial"].write_text(TRIVIAL_DAG)
    for path in files.values():
        import_once(path)  # writes the bytecode cache; not timed
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in files}
    in_processor: dict[str, list[dict[str, Any]]] = {name: [] for name in files}
    for attempt in range(repeat):
        names = list(files) if attempt % 2 == 0 else list(reversed(files))
        for name in names:
            samples[name].append(import_once(files[name]))
            in_processor[name].append(import_once(files[name], "processor"))
        emit(
            {
                "import_repetition": attempt + 1,
                **{
                    f"{name}_{key}": round(samples[name][-1][key], 3)
                    for name in files
                    for key in ("import_s", "parse_s", "airflow_import_s")
                },
            }
        )

    def median(name: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[name])

    churn, trivial = median("churn_training", "import_s"), median("trivial", "import_s")
    # Both files pay the same ``import airflow``: one median over all interpreters.
    airflow_s = statistics.median(s["airflow_import_s"] for v in samples.values() for s in v)
    fresh = (churn + airflow_s) / (trivial + airflow_s)
    processor = {
        name: statistics.median(s["import_s"] for s in runs) for name, runs in in_processor.items()
    }
    return {
        "repeat": repeat,
        "airflow_import_s": round(airflow_s, 3),
        "churn_training_import_s": round(churn, 3),
        "trivial_import_s": round(trivial, 3),
        "churn_training_parse_s": round(median("churn_training", "parse_s"), 3),
        "trivial_parse_s": round(median("trivial", "parse_s"), 3),
        "churn_training_import_samples_s": [
            round(s["import_s"], 3) for s in samples["churn_training"]
        ],
        "trivial_import_samples_s": [round(s["import_s"], 3) for s in samples["trivial"]],
        "churn_training_in_processor_s": round(processor["churn_training"], 3),
        "trivial_in_processor_s": round(processor["trivial"], 3),
        # The target's measure: each file imported by a fresh interpreter, as a whole.
        "ratio_churn_training_to_trivial_with_airflow_import": round(fresh, 2),
        # Stricter: only what the file adds beyond ``import airflow``, or beyond what the DAG
        # processor's parsing child already holds.
        "ratio_churn_training_to_trivial": round(churn / trivial, 2),
        "ratio_churn_training_to_trivial_in_processor": round(
            processor["churn_training"] / processor["trivial"], 2
        ),
        "target_ratio_below": IMPORT_TARGET_RATIO,
        "target_met": fresh < IMPORT_TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench-dag-import", description=__doc__)
    parser.add_argument("--repeat", type=int, default=7, help="fresh interpreters per DAG file")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    emit = json_output()
    with tempfile.TemporaryDirectory(prefix="bench-dag-import-") as tmp:
        imports = measure_imports(Path(tmp) / "dags", args.repeat, emit)
    emit({"benchmark": "dag_import", "cores": os.cpu_count(), **imports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
