"""Run a cluster-side job from ``include/`` on local Spark or as a Databricks run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, BaseOperator, conf
from airflow.providers.databricks.operators.databricks import DatabricksJobRunLink

from mlops_airflow.assets import emit_asset_events
from mlops_airflow.compute.databricks import DatabricksJob, clear_number, complete_run
from mlops_airflow.compute.local import LocalSparkJob
from mlops_airflow.exceptions import InvalidParameterError, JobInputError, SparkJobError
from mlops_airflow.hooks.databricks import DatabricksJobsHook
from mlops_airflow.utils import resolve_backend, resolve_lake_root, run_ds
from mlops_jobs.cli import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from airflow.sdk import BaseOperatorLink, Context
    from airflow.sdk.types import TaskInstanceKey

# How a job's error line starts (``mlops_jobs.cli``).
JOB_ERROR_PREFIX = "error: "
DEFAULT_RUN_TIMEOUT = timedelta(hours=4)
# Settings the jobs read (``mlops_jobs``); the local backend passes these on and nothing else
# from the worker's environment, so connections, the metadata database and secrets stay behind.
JOB_SETTINGS = (
    "MLOPS_LAKE_ROOT",
    "MLOPS_LAKE_MOUNTS",
    "MLOPS_LAKE_KEEP_VERSIONS",
    "MLOPS_LAKE_STALE_SECONDS",
    "MLOPS_MLFLOW_ARTIFACT_ROOT",
    "MLOPS_TRAIN_THREADS",
)


class DatabricksRunLink(DatabricksJobRunLink):
    """The Databricks run page of a job run on Databricks; no link (not the text "None") for a
    job that ran on local Spark."""

    name = "Databricks run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return super().get_link(operator, ti_key=ti_key) or ""


class SparkJobOperator(BaseOperator):
    """
    Run ``mlops-job <job> <arguments>`` on the configured compute backend.

    The backend is resolved at execute time (argument, Variable ``mlops_compute_backend``, or
    ``MLOPS_COMPUTE_BACKEND``; default ``local``), so the DAG is the same everywhere, and this
    operator hands the job to it:

    * ``local`` (``LocalSparkJob``): ``spark-submit --master <local_master>`` from the installed
      pyspark, in a minimal environment (the job settings ``MLOPS_LAKE_*``, ``MLFLOW_*`` from the
      MLflow connection; no ``AIRFLOW_*``, no connections, no metadata database); the job's
      output streams into the task log; a non-zero exit fails the task with the job's last lines;
      ``on_kill`` terminates the whole process group.
    * ``databricks`` (``DatabricksJob``): the job package and the run specification, handed to
      the provider's ``DatabricksSubmitRunOperator``, which submits, waits (or defers to its
      trigger), fails with the run's errors and cancels; durable, it keeps the run id in the
      task state store, so a retry reattaches to a run that is still alive or has succeeded
      instead of starting a second one.

    The job writes its result (a JSON object) to ``result_uri`` in the lake; the task returns it
    (XCom ``return_value``). A job that refuses its input fails the task without retries.

    :param job: Job name, e.g. ``churn-features``. (templated)
    :param arguments: Job arguments. (templated)
    :param spark_conf: Spark settings for the job. (templated)
    :param backend: ``local`` or ``databricks``; default from configuration. (templated)
    :param result_uri: Lake location of the job's result; default
        ``{lake}/_results/{dag_id}/ds={ds}/{task_id}[.{map_index}]/{digest of the run id}.json``,
        deterministic per task instance so a reattached run's result is found. (templated)
    :param local_master: Spark master for the local backend.
    :param databricks_cluster: ``{"new_cluster": {...}}`` or ``{"existing_cluster_id": "..."}``;
        default from the Variable ``mlops_databricks_cluster`` or ``MLOPS_DATABRICKS_CLUSTER``.
    :param cluster_environment: Extra ``spark_env_vars`` for a new cluster (values may be
        ``{{secrets/scope/key}}``); default Variable ``mlops_databricks_env`` or
        ``MLOPS_DATABRICKS_ENV`` (JSON).
    :param wheel_dir: Where job wheels go: ``/Volumes/<catalog>/<schema>/<volume>/<dir>`` or a
        ``dbfs:/`` folder; default Variable ``mlops_databricks_wheel_dir`` or
        ``MLOPS_DATABRICKS_WHEEL_DIR``.
    :param run_timeout: Databricks run timeout (``timeout_seconds`` of the run); the task's
        ``execution_timeout`` defaults to it plus an hour for queueing and cluster start.
    :param mlflow_conn_id: Airflow connection to MLflow whose URIs the job gets (the worker's
        ``MLFLOW_*`` when it does not exist).
    :param databricks_conn_id: Airflow connection to the Databricks workspace.
    :param polling_period_seconds: Seconds between checks of a Databricks run.
    :param databricks_retry_limit: Retries of a failed Databricks API request.
    :param databricks_retry_delay: Seconds between those retries.
    :param databricks_retry_args: tenacity arguments of those retries.
    :param deferrable: Wait for a Databricks run in the triggerer; default
        ``[operators] default_deferrable``.
    :param durable: Keep the Databricks run id in the task state store, so a retry reattaches.
    """

    template_fields: Sequence[str] = ("job", "arguments", "spark_conf", "backend", "result_uri")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "spark_conf": "json",
        "arguments": "json",
    }
    ui_color = "#fde7d1"
    ui_fgcolor = "#000"
    operator_extra_links: tuple[BaseOperatorLink, ...] = (DatabricksRunLink(),)

    def __init__(
        self,
        *,
        job: str,
        arguments: Sequence[str] = (),
        spark_conf: Mapping[str, str] | None = None,
        backend: str | None = None,
        result_uri: str | None = None,
        local_master: str = "local[2]",
        databricks_cluster: Mapping[str, Any] | None = None,
        cluster_environment: Mapping[str, str] | None = None,
        wheel_dir: str | None = None,
        run_timeout: timedelta = DEFAULT_RUN_TIMEOUT,
        mlflow_conn_id: str | None = "mlflow_default",
        databricks_conn_id: str = DatabricksJobsHook.default_conn_name,
        polling_period_seconds: float = 30,
        databricks_retry_limit: int = 3,
        databricks_retry_delay: float = 1,
        databricks_retry_args: dict[Any, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        durable: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("execution_timeout", run_timeout + timedelta(hours=1))
        super().__init__(**kwargs)
        self.job = job
        self.arguments = arguments
        self.spark_conf = spark_conf
        self.backend = backend
        self.result_uri = result_uri
        self.local_master = local_master
        self.databricks_cluster = databricks_cluster
        self.cluster_environment = cluster_environment
        self.wheel_dir = wheel_dir
        self.run_timeout = run_timeout
        self.mlflow_conn_id = mlflow_conn_id
        self.databricks_conn_id = databricks_conn_id
        self.polling_period_seconds = polling_period_seconds
        self.databricks_retry_limit = databricks_retry_limit
        self.databricks_retry_delay = databricks_retry_delay
        self.databricks_retry_args = databricks_retry_args
        self.deferrable = deferrable
        self.durable = durable
        self._local: LocalSparkJob | None = None
        self._databricks: DatabricksJob | None = None
        self._result_location: str | None = None

    @property
    def run_id(self) -> int | None:
        """The Databricks run this task submitted or reattached to (None on local Spark)."""
        return None if self._databricks is None else self._databricks.run_id

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

    def job_settings(self) -> dict[str, str]:
        """The lake root and the job settings of this deployment (``JOB_SETTINGS``)."""
        settings = {k: os.environ[k] for k in JOB_SETTINGS if os.environ.get(k)}
        from mlops_jobs import lake

        try:
            settings["MLOPS_LAKE_ROOT"] = lake.lake_root(resolve_lake_root())
        except lake.LakeError as err:
            raise InvalidParameterError(f"lake root: {err}") from None
        return settings

    def job_arguments(self, context: Context) -> list[str]:
        """The job's command line after the entry point; subclasses may add to it."""
        return [
            "--result-uri",
            self.result_location(context),
            str(self.job),
            *[str(a) for a in self.arguments],
        ]

    def result_location(self, context: Context) -> str:
        """The lake URI the job writes its result to (see ``result_uri``)."""
        if self._result_location is None:
            from mlops_jobs import lake

            try:
                if self.result_uri:
                    uri = lake.ensure_within(str(self.result_uri), resolve_lake_root())
                else:
                    ti = context["ti"]
                    map_index = getattr(ti, "map_index", -1)
                    task = ti.task_id + (f".{map_index}" if map_index not in (None, -1) else "")
                    # Per clearing: a cleared task never reads a result (or a refusal) that
                    # the run before the clearing left.
                    clearing = f"{ti.run_id}:clear{clear_number(context)}"
                    digest = hashlib.sha256(clearing.encode()).hexdigest()[:16]
                    ds = run_ds(context.get("dag_run"), context.get("ds"))
                    uri = lake.join(
                        resolve_lake_root(), "_results", ti.dag_id, f"ds={ds}", task,
                        f"{digest}.json",
                    )  # fmt: skip
            except lake.LakeError as err:
                raise InvalidParameterError(f"result_uri: {err}") from None
            self._result_location = uri
        return self._result_location

    def refusal(self, context: Context) -> str | None:
        """The error of a job that refused its input (``{"error": …, "retryable": false}`` as
        its result), else None."""
        from mlops_jobs import lake

        uri = self.result_location(context)
        try:
            result = json.loads(lake.locate(uri).read_text())
        except FileNotFoundError:
            return None
        except Exception as err:  # the run's own error is what the task reports then
            self.log.warning("Could not read the job's result at %s: %s", uri, err)
            return None
        if isinstance(result, dict) and result.get("retryable") is False and "error" in result:
            return f"job {self.job!r} refused its input: {result['error']}"
        return None

    def read_result(self, context: Context) -> Any:
        """The result the job wrote, or an error naming where it was expected."""
        from mlops_jobs import lake

        uri = self.result_location(context)
        try:
            result = json.loads(lake.locate(uri).read_text())
        except FileNotFoundError:
            raise SparkJobError(f"job {self.job!r} wrote no result to {uri}") from None
        if isinstance(result, dict) and result.get("retryable") is False and "error" in result:
            raise SparkJobError(f"job {self.job!r} reported success but its result is an error "
                                f"(from an earlier run?): {result['error']}")  # fmt: skip
        if not self.result_uri:
            self.expire_results(context)
        processed = self.process_result(context, result)
        emit_asset_events(context, self.outlets, self.asset_extra(processed))
        return processed

    def expire_results(self, context: Context) -> None:
        """Remove this DAG's old job results (``MLOPS_LAKE_RESULTS_KEEP_DAYS``); best effort."""
        from mlops_jobs import lake

        directory = lake.join(resolve_lake_root(), "_results", context["ti"].dag_id)
        try:
            removed = lake.expire(lake.locate(directory))
        except Exception as err:  # housekeeping must not fail the task that did the work
            self.log.warning("Could not expire old job results under %s: %s", directory, err)
            return
        if removed:
            self.log.info("Removed %d expired job results under %s", len(removed), directory)

    def asset_extra(self, result: Any) -> dict[str, Any] | None:
        """The extra of the outlets' Asset events, from the job's result: what a consumer
        needs to find and trust the output (its URI, ds, content hash, rows, model version)."""
        if not isinstance(result, dict):
            return None
        extra = {k: result.get(k) for k in ("ds", "content_hash", "rows", "model_version")}
        return {"uri": result.get("output"), **extra}

    def process_result(self, context: Context, result: Any) -> Any:
        """Check or act on the job's result before the task returns it (on every path: local,
        waiting, deferred, reattached); subclasses override this rather than ``execute``."""
        return result

    def execute(self, context: Context) -> Any:
        self._result_location = None
        backend = resolve_backend(self.backend)
        if backend == "local":
            return self.execute_local(context)
        return self.execute_databricks(context)

    # -- local ---------------------------------------------------------------------------

    def local_job(self, context: Context) -> LocalSparkJob:
        ti = context.get("ti")
        name = f"{getattr(ti, 'dag_id', 'adhoc')}.{getattr(ti, 'task_id', self.task_id)}"
        return LocalSparkJob(name, self.local_master, self.spark_conf)

    def local_environment(self) -> dict[str, str]:
        """The local job's whole environment: the process basics, Python and Spark paths, the
        job settings and MLflow; nothing else of the worker's."""
        return LocalSparkJob.environment({**self.job_settings(), **self.mlflow_environment()})

    def execute_local(self, context: Context) -> Any:
        self._local = job = self.local_job(context)
        arguments = self.job_arguments(context)
        self.log.info("Running locally: %s", " ".join(job.command(arguments)))
        # The job's own error line ("error: <job>: …") leads the task's error: output that
        # other processes print after it (a peer worker's traceback) may push it out of the tail.
        errors: list[str] = []

        def on_line(line: str) -> None:
            self.log.info("%s", line)
            if line.startswith(JOB_ERROR_PREFIX) and not errors:
                errors.append(line.removeprefix(JOB_ERROR_PREFIX))

        returncode = job.run(arguments, self.local_environment(), on_line)
        refusal = self.refusal(context) if returncode == EXIT_BAD_INPUT else None
        if refusal is not None:
            raise JobInputError(f"{refusal}; last lines:\n{job.tail}")
        if returncode != 0:
            cause = f": {errors[0]}" if errors else ""
            raise SparkJobError(
                f"job {self.job!r} failed on the local backend with exit code {returncode}"
                f"{cause}; last lines:\n{job.tail}"
            )
        return self.read_result(context)

    # -- databricks ----------------------------------------------------------------------

    def databricks_job(self) -> DatabricksJob:
        """The Databricks backend for this task, with the deployment's settings."""
        return DatabricksJob(
            task_id=self.task_id,
            job=str(self.job),
            job_settings=self.job_settings(),
            mlflow_settings=self.mlflow_environment(),
            spark_conf=self.spark_conf,
            cluster=self.databricks_cluster,
            cluster_environment=self.cluster_environment,
            wheel_dir=self.wheel_dir,
            timeout_seconds=int(self.run_timeout.total_seconds()),
            databricks_conn_id=self.databricks_conn_id,
            polling_period_seconds=self.polling_period_seconds,
            databricks_retry_limit=self.databricks_retry_limit,
            databricks_retry_delay=self.databricks_retry_delay,
            databricks_retry_args=self.databricks_retry_args,
            durable=self.durable,
        )

    def execute_databricks(self, context: Context) -> Any:
        self._databricks = job = self.databricks_job()
        arguments = self.job_arguments(context)
        with self._refusal_raised(context):
            if self.deferrable:
                job.start(self, context, arguments)  # defers unless the run already succeeded
            else:
                job.run(context, arguments)
        return self.read_result(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger reported a terminal state; a failed run raises."""
        with self._refusal_raised(context, event.get("run_page_url")):
            complete_run(self.task_id, context, event)
        return self.read_result(context)

    @contextlib.contextmanager
    def _refusal_raised(self, context: Context, run_page_url: str | None = None) -> Iterator[None]:
        """A failed run's error names its run page; a run whose job refused its input fails
        the task without retries."""
        try:
            yield
        except AirflowException as err:
            refusal = self.refusal(context)
            if refusal is None and type(err) is not AirflowException:
                raise
            page = run_page_url or DatabricksJob.published_run_page(context)
            where = f"\nRun page: {page}" if page else ""
            if refusal is None:
                raise AirflowException(f"{err}{where}") from err
            raise JobInputError(f"{refusal}\n{err}{where}") from err

    # -- both ----------------------------------------------------------------------------

    def on_kill(self) -> None:
        if self._local is not None and self._local.running():
            self.log.info("Terminating the local job (process group %s)", self._local.process.pid)  # type: ignore[union-attr]
            self._local.terminate(grace=30)
        elif self._databricks is not None:
            self._databricks.cancel()


def instance_arguments(context: Context) -> list[str]:
    """``--dag-id … --try-number …``: the task instance a job runs for, as jobs take it."""
    ti = context["ti"]
    return [
        "--dag-id", str(ti.dag_id),
        "--dag-run-id", str(ti.run_id),
        "--task-id", str(ti.task_id),
        "--map-index", str(getattr(ti, "map_index", -1)),
        "--try-number", str(ti.try_number),
    ]  # fmt: skip
