"""The local stack's environment: one mapping that points Airflow, Hive and the jobs at `.local/`.

Everything that differs between the embedded local stack and production is a variable here
(connections as ``AIRFLOW_CONN_*``, the lake root, the Airflow home). A variable already set in
the caller's environment wins, so any of them can be overridden per command.

Usage: ``python -m mlops_localstack.env exec -- airflow dags test churn_training 2026-03-01``
or ``python -m mlops_localstack.env show``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_HIVESERVER2_PORT = 10000


def local_root(environ: Mapping[str, str] | None = None) -> Path:
    """Directory holding all local state (``MLOPS_LOCAL_ROOT``, default ``<project>/.local``)."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("MLOPS_LOCAL_ROOT") or PROJECT_ROOT / ".local").resolve()


def hiveserver2_port(environ: Mapping[str, str] | None = None) -> int:
    """Port of the local HiveServer2 (``HIVESERVER2_PORT``, default 10000)."""
    environ = os.environ if environ is None else environ
    return int(environ.get("HIVESERVER2_PORT") or DEFAULT_HIVESERVER2_PORT)


def hiveserver2_connection_uri(port: int) -> str:
    """Airflow connection URI for the local HiveServer2 (no authentication, loopback only)."""
    return f"hiveserver2://127.0.0.1:{port}/default?auth_mechanism=NONE"


def local_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the variables the local stack adds to ``environ`` (values already set win)."""
    environ = dict(os.environ if environ is None else environ)
    root = local_root(environ)
    airflow_home = root / "airflow"
    python_path = [str(PROJECT_ROOT / "include"), str(PROJECT_ROOT / "plugins")]
    if environ.get("PYTHONPATH"):
        python_path.append(environ["PYTHONPATH"])
    defaults = {
        "MLOPS_LOCAL_ROOT": str(root),
        "MLOPS_LAKE_ROOT": str(root / "lake"),
        "HIVESERVER2_PORT": str(DEFAULT_HIVESERVER2_PORT),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(airflow_home / "logs"),
        # Spark's Python workers run in the project's interpreter; local Spark binds to loopback.
        "PYSPARK_PYTHON": sys.executable,
        "PYARROW_IGNORE_TIMEZONE": "1",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
        "MLOPS_MLFLOW_ARTIFACT_ROOT": str(root / "mlflow" / "artifacts"),
    }
    result = {key: environ.get(key, value) for key, value in defaults.items()}
    port = hiveserver2_port(result)
    result["AIRFLOW_CONN_HIVESERVER2_DEFAULT"] = environ.get(
        "AIRFLOW_CONN_HIVESERVER2_DEFAULT", hiveserver2_connection_uri(port)
    )
    result["PYTHONPATH"] = os.pathsep.join(python_path)
    venv_bin = str(Path(sys.executable).parent)
    result["PATH"] = os.pathsep.join([venv_bin, environ.get("PATH", "")])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["show"]:
        print(json.dumps(local_environment(), indent=2, sort_keys=True))
        return 0
    if args[:1] == ["exec"]:
        command = args[2:] if args[1:2] == ["--"] else args[1:]
        if not command:
            print("usage: env exec -- COMMAND [ARGS...]", file=sys.stderr)
            return 2
        env = {**os.environ, **local_environment()}
        Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
        (local_root() / "mlflow").mkdir(parents=True, exist_ok=True)
        os.execvpe(command[0], command, env)
    print("usage: env show | env exec -- COMMAND [ARGS...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
