"""Run a cluster-side job from ``include/`` on local Spark or as a Databricks run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import conf
from airflow.providers.databricks.hooks.databricks import RunState
from airflow.providers.databricks.operators.databricks import DatabricksJobRunLink
from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger
from airflow.providers.databricks.utils.databricks import validate_trigger_event
from airflow.sdk import BaseOperator, BaseOperatorLink

from mlops_airflow.exceptions import InvalidParameterError, SparkJobError
from mlops_airflow.hooks.databricks import DatabricksJobsHook
from mlops_airflow.utils import resolve_backend, resolve_json_setting

if TYPE_CHECKING:
    from airflow.sdk import Context

CLUSTER_VARIABLE = "mlops_databricks_cluster"
CLUSTER_ENV = "MLOPS_DATABRICKS_CLUSTER"
WHEEL_DIR_VARIABLE = "mlops_databricks_wheel_dir"
DEFAULT_WHEEL_DIR = "dbfs:/FileStore/mlops/wheels"
TAIL_LINES = 40


class SparkJobOperator(BaseOperator):
    """
    Run ``mlops-job <job> <arguments>`` on the configured compute backend.

    The backend is resolved at execute time (argument, Variable ``mlops_compute_backend``, or
    ``MLOPS_COMPUTE_BACKEND``; default ``local``), so the DAG is the same everywhere:

    * ``local``: ``spark-submit --master local[N]`` from the installed pyspark; the job's output
      streams into the task log; a non-zero exit fails the task with the job's last lines;
      ``on_kill`` terminates the whole process group.
    * ``databricks``: the ``mlops_jobs`` wheel is built, uploaded to DBFS once per content
      version and run as a ``python_wheel_task`` through ``DatabricksHook.submit_run`` with an
      idempotency token unique to the task try. ``run_id`` and ``run_page_url`` go to XCom (and
      the provider's "See Databricks Job Run" link); deferrable mode hands the wait to the
      provider's ``DatabricksExecutionTrigger``; ``on_kill`` cancels the run; a failed run raises
      with its page URL and error output.

    The job's last stdout line, when it is a JSON object, is returned (XCom ``return_value``).

    :param job: Job name, e.g. ``churn-features``. (templated)
    :param arguments: Job arguments. (templated)
    :param spark_conf: Spark settings for the job. (templated)
    :param backend: ``local`` or ``databricks``; default from configuration. (templated)
    :param local_master: Spark master for the local backend.
    :param databricks_conn_id: Airflow connection to the Databricks workspace.
    :param databricks_cluster: ``{"new_cluster": {...}}`` or ``{"existing_cluster_id": "..."}``;
        default from the Variable ``mlops_databricks_cluster`` or ``MLOPS_DATABRICKS_CLUSTER``.
    :param wheel_dir: DBFS folder for job wheels; default Variable ``mlops_databricks_wheel_dir``.
    :param deferrable: Wait for the Databricks run in the triggerer.
    :param polling_period_seconds: Seconds between run state checks.
    :param databricks_retry_limit: Retries of each Databricks API call (429, 5xx, network).
    :param databricks_retry_delay: Seconds between those retries.
    :param run_timeout_seconds: Databricks run timeout (0: none).
    :param mlflow_conn_id: Airflow connection to MLflow whose URIs the local job gets (the
        environment's ``MLFLOW_*`` when it does not exist).
    """

    template_fields: Sequence[str] = ("job", "arguments", "spark_conf", "backend")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "spark_conf": "json",
        "arguments": "json",
    }
    operator_extra_links: tuple[BaseOperatorLink, ...] = (DatabricksJobRunLink(),)
    ui_color = "#fde7d1"

    def __init__(
        self,
        *,
        job: str,
        arguments: Sequence[str] = (),
        spark_conf: Mapping[str, str] | None = None,
        backend: str | None = None,
        local_master: str = "local[2]",
        databricks_conn_id: str = DatabricksJobsHook.default_conn_name,
        databricks_cluster: Mapping[str, Any] | None = None,
        wheel_dir: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        polling_period_seconds: int = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1.0,
        run_timeout_seconds: int = 0,
        mlflow_conn_id: str | None = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_conn_id = mlflow_conn_id
        self.job = job
        self.arguments = arguments
        self.spark_conf = spark_conf
        self.backend = backend
        self.local_master = local_master
        self.databricks_conn_id = databricks_conn_id
        self.databricks_cluster = databricks_cluster
        self.wheel_dir = wheel_dir
        self.deferrable = deferrable
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.run_timeout_seconds = run_timeout_seconds
        self.run_id: int | None = None
        self._process: subprocess.Popen[str] | None = None

    @cached_property
    def databricks_hook(self) -> DatabricksJobsHook:
        return DatabricksJobsHook(
            self.databricks_conn_id,
            retry_limit=self.databricks_retry_limit,
            retry_delay=self.databricks_retry_delay,
            caller="SparkJobOperator",
        )

    def mlflow_environment(self) -> dict[str, str]:
        """Where the job's MLflow client points: the connection ``mlflow_conn_id`` when it
        exists (the promotion tasks use the same one), else the worker's ``MLFLOW_*``."""
        from mlops_airflow.hooks.mlflow_registry import MlflowRegistryHook

        if not self.mlflow_conn_id:
            return {}
        try:
            return MlflowRegistryHook(self.mlflow_conn_id).job_environment()
        except InvalidParameterError:
            return {}  # no MLflow configured at all: jobs that need it say so themselves

    def job_arguments(self, context: Context) -> list[str]:
        """The job's command line after the entry point; subclasses may add to it."""
        return [str(self.job), *[str(a) for a in self.arguments]]

    def execute(self, context: Context) -> Any:
        backend = resolve_backend(self.backend)
        if backend == "local":
            return self.execute_local(context)
        return self.execute_databricks(context)

    # -- local ---------------------------------------------------------------------------

    def local_command(self, context: Context) -> list[str]:
        from pyspark.find_spark_home import _find_spark_home

        import mlops_jobs

        spark_submit = Path(_find_spark_home()) / "bin" / "spark-submit"
        entry = Path(mlops_jobs.__file__).resolve().parents[1] / "mlops_job.py"
        ti = context.get("ti")
        name = f"{getattr(ti, 'dag_id', 'adhoc')}.{getattr(ti, 'task_id', self.task_id)}"
        command = [str(spark_submit), "--master", self.local_master, "--name", name]
        defaults = {"spark.ui.enabled": "false", "spark.log.level": "WARN"}
        for key, value in {**defaults, **(self.spark_conf or {})}.items():
            command += ["--conf", f"{key}={value}"]
        return [*command, str(entry), *self.job_arguments(context)]

    def execute_local(self, context: Context) -> Any:
        import mlops_jobs

        include = str(Path(mlops_jobs.__file__).resolve().parents[1])
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [include, os.environ.get("PYTHONPATH")])),
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            # local mode needs no network name; loopback also works where the host name
            # does not resolve
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            **self.mlflow_environment(),
        }
        command = self.local_command(context)
        self.log.info("Running locally: %s", " ".join(command))
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            self.log.info("%s", line)
            tail.append(line)
        returncode = self._process.wait()
        if returncode != 0:
            raise SparkJobError(
                f"job {self.job!r} failed on the local backend with exit code {returncode}; "
                "last lines:\n" + "\n".join(tail)
            )
        return _result_line(tail)

    # -- databricks ----------------------------------------------------------------------

    def upload_wheel(self) -> str:
        """Build the job wheel and upload it unless that version is already there."""
        from mlops_jobs.distribution import build_wheel

        wheel_dir = (self.wheel_dir or _variable(WHEEL_DIR_VARIABLE) or DEFAULT_WHEEL_DIR).rstrip(
            "/"
        )
        with tempfile.TemporaryDirectory() as tmp:
            wheel = build_wheel(Path(tmp))
            target = f"{wheel_dir}/{wheel.name}"
            dbfs_path = target.removeprefix("dbfs:")
            data = wheel.read_bytes()
            if self.databricks_hook.dbfs_file_size(dbfs_path) == len(data):
                self.log.info("Job package %s is already uploaded", target)
            else:
                self.log.info("Uploading job package to %s (%d bytes)", target, len(data))
                self.databricks_hook.dbfs_upload(dbfs_path, data)
        return target

    def run_json(self, context: Context, wheel: str) -> dict[str, Any]:
        """The ``runs/submit`` request for this task try."""
        from mlops_jobs.distribution import ENTRY_POINT, PACKAGE

        cluster = resolve_json_setting(self.databricks_cluster, CLUSTER_VARIABLE, CLUSTER_ENV)
        if not cluster or not ({"new_cluster", "existing_cluster_id"} & set(cluster)):
            raise InvalidParameterError(
                "databricks_cluster needs 'new_cluster' or 'existing_cluster_id' (argument, "
                f"Variable {CLUSTER_VARIABLE} or {CLUSTER_ENV}), got {cluster!r}"
            )
        cluster = dict(cluster)
        if self.spark_conf and "new_cluster" in cluster:
            new_cluster = dict(cluster["new_cluster"])
            new_cluster["spark_conf"] = {**new_cluster.get("spark_conf", {}), **self.spark_conf}
            cluster["new_cluster"] = new_cluster
        ti = context["ti"]
        return {
            "run_name": f"{ti.dag_id}.{ti.task_id}.{self.job}",
            "idempotency_token": idempotency_token(context),
            "timeout_seconds": self.run_timeout_seconds,
            "tasks": [
                {
                    "task_key": str(self.job).replace("-", "_"),
                    "python_wheel_task": {
                        "package_name": PACKAGE,
                        "entry_point": ENTRY_POINT,
                        "parameters": self.job_arguments(context),
                    },
                    "libraries": [{"whl": wheel}],
                    **cluster,
                }
            ],
        }

    def execute_databricks(self, context: Context) -> Any:
        request = self.run_json(context, self.upload_wheel())
        self.run_id = self.databricks_hook.submit_run(request)
        run_page_url = self.databricks_hook.get_run_page_url(self.run_id)
        ti = context["ti"]
        ti.xcom_push(key="run_id", value=self.run_id)
        ti.xcom_push(key="run_page_url", value=run_page_url)
        self.log.info("Databricks run %s: %s", self.run_id, run_page_url)
        if self.deferrable:
            self.defer(
                trigger=DatabricksExecutionTrigger(
                    run_id=self.run_id,
                    databricks_conn_id=self.databricks_conn_id,
                    polling_period_seconds=self.polling_period_seconds,
                    retry_limit=self.databricks_retry_limit,
                    retry_delay=max(1, round(self.databricks_retry_delay)),
                    run_page_url=run_page_url,
                    caller="SparkJobOperator",
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=self.run_timeout_seconds)
                if self.run_timeout_seconds
                else None,
            )
        while True:
            state = self.databricks_hook.get_run_state(self.run_id)
            if state.is_terminal:
                return self._finish(self.run_id, run_page_url, state)
            self.log.info("Run %s is %s", self.run_id, state.life_cycle_state)
            time.sleep(self.polling_period_seconds)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger reported a terminal state."""
        validate_trigger_event(event)
        self.run_id = int(event["run_id"])
        return self._finish(
            self.run_id, event["run_page_url"], RunState.from_json(event["run_state"])
        )

    def _finish(self, run_id: int, run_page_url: str, state: RunState) -> Any:
        run = self.databricks_hook.get_run(run_id)
        outputs = []
        for task in run.get("tasks", []):
            try:
                output = self.databricks_hook.get_run_output(task["run_id"])
            except Exception as err:  # a run cancelled before its task started has no output
                output = {} if state.is_successful else {"error": f"(no output: {err})"}
            outputs.append((task, output))
        if state.is_successful:
            self.log.info("Run %s succeeded: %s", run_id, run_page_url)
            for _, output in outputs:
                if output.get("logs"):
                    return _result_line(output["logs"].splitlines())
            return None
        details = []
        for task, output in outputs:
            error = output.get("error") or task.get("state", {}).get("state_message", "")
            trace = "\n".join((output.get("error_trace") or "").splitlines()[-TAIL_LINES:])
            details.append(
                f"task {task.get('task_key')}: {error}" + (f"\n{trace}" if trace else "")
            )
        raise SparkJobError(
            f"Databricks run {run_id} of job {self.job!r} ended {state.life_cycle_state}"
            f"/{state.result_state}: {state.state_message}\nRun page: {run_page_url}\n"
            + "\n".join(details)
        )

    # -- both ----------------------------------------------------------------------------

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.log.info("Terminating local job (process group %s)", self._process.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
        if self.run_id is not None:
            self.log.info("Cancelling Databricks run %s", self.run_id)
            self.databricks_hook.cancel_run(self.run_id)


def idempotency_token(context: Context) -> str:
    """A token unique to the task try (Databricks allows at most 64 characters)."""
    ti = context["ti"]
    key = ":".join(
        str(getattr(ti, attr, ""))
        for attr in ("dag_id", "task_id", "run_id", "map_index", "try_number")
    )
    return hashlib.sha256(key.encode()).hexdigest()


def instance_arguments(context: Context) -> list[str]:
    """``--dag-id … --try-number …``: the task instance a job runs for, as jobs take it."""
    ti = context["ti"]
    return [
        "--dag-id", str(ti.dag_id),
        "--run-id", str(ti.run_id),
        "--task-id", str(ti.task_id),
        "--map-index", str(getattr(ti, "map_index", -1)),
        "--try-number", str(ti.try_number),
    ]  # fmt: skip


def _result_line(lines: Sequence[str] | deque[str]) -> Any:
    """The last line that is a JSON object, parsed (the job's machine-readable result)."""
    for line in reversed(list(lines)):
        text = line.strip()
        if text.startswith("{") and text.endswith("}"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(text)
    return None


def _variable(key: str) -> str | None:
    from airflow.sdk import Variable

    return Variable.get(key, default=None)
