"""Run a cluster-side job from ``include/`` on local Spark or as a Databricks run."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.databricks.operators.databricks import (
    DatabricksJobRunLink,
    DatabricksSubmitRunOperator,
    _handle_deferrable_databricks_operator_execution,
)
from airflow.sdk.exceptions import AirflowException

from mlops_airflow.assets import emit_asset_events
from mlops_airflow.exceptions import InvalidParameterError, JobInputError, SparkJobError
from mlops_airflow.hooks.databricks import DatabricksJobsHook
from mlops_airflow.utils import (
    resolve_backend,
    resolve_json_setting,
    resolve_lake_root,
    run_ds,
    setting,
)
from mlops_jobs.cli import EXIT_BAD_INPUT
from mlops_jobs.process import ProcessGroup

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, BaseOperatorLink, Context
    from airflow.sdk.types import TaskInstanceKey

CLUSTER_VARIABLE = "mlops_databricks_cluster"
CLUSTER_ENV = "MLOPS_DATABRICKS_CLUSTER"
WHEEL_DIR_VARIABLE = "mlops_databricks_wheel_dir"
WHEEL_DIR_ENV = "MLOPS_DATABRICKS_WHEEL_DIR"
DEFAULT_WHEEL_DIR = "/Volumes/main/mlops/artifacts/wheels"
CLUSTER_ENVIRONMENT_VARIABLE = "mlops_databricks_env"
CLUSTER_ENVIRONMENT_ENV = "MLOPS_DATABRICKS_ENV"
TAIL_LINES = 40
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
PROCESS_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "TZ", "USER")
# What a local job needs to reach an object-store lake: cloud credentials, proxies, CA bundles.
PROCESS_ENVIRONMENT_PREFIXES = (
    "AWS_", "AZURE_", "GOOGLE_", "HADOOP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_",
)  # fmt: skip
_SECRET_NAME = ("TOKEN", "PASSWORD", "PASSWD", "PWD", "SECRET", "CREDENTIAL", "KEY", "AUTH")


class DatabricksRunLink(DatabricksJobRunLink):
    """The Databricks run page of a job run on Databricks; no link (not the text "None") for a
    job that ran on local Spark."""

    name = "Databricks run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return super().get_link(operator, ti_key=ti_key) or ""


class SparkJobOperator(DatabricksSubmitRunOperator):
    """
    Run ``mlops-job <job> <arguments>`` on the configured compute backend.

    The backend is resolved at execute time (argument, Variable ``mlops_compute_backend``, or
    ``MLOPS_COMPUTE_BACKEND``; default ``local``), so the DAG is the same everywhere:

    * ``local``: ``spark-submit --master local[N]`` from the installed pyspark, in a minimal
      environment (the job settings ``MLOPS_LAKE_*``, ``MLFLOW_*`` from the MLflow connection;
      no ``AIRFLOW_*``, no connections, no metadata database); the job's output streams into the
      task log; a non-zero exit fails the task with the job's last lines; ``on_kill`` terminates
      the whole process group.
    * ``databricks``: the provider's ``DatabricksSubmitRunOperator`` does the submission,
      waiting, deferral, "See Databricks Job Run" link, error output and cancellation (also of a
      deferred run, through its trigger). Its durable mode keeps the Databricks run id in the
      task state store, so a retry reattaches to a run that is still alive or has succeeded
      instead of starting a second one. This operator adds the job package (a wheel uploaded
      once per content version to a Unity Catalog volume, or DBFS), the run specification
      (``python_wheel_task``; the lake root, MLflow URIs and job settings as ``spark_env_vars``,
      secrets only as ``{{secrets/scope/key}}`` references) and the result.

    The job writes its result (a JSON object) to ``result_uri`` in the lake; the task returns it
    (XCom ``return_value``).

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
    :param kwargs: ``DatabricksSubmitRunOperator`` arguments (``databricks_conn_id``,
        ``deferrable``, ``durable``, ``polling_period_seconds``, ``databricks_retry_*``) and
        ``BaseOperator`` ones.
    """

    template_fields: Sequence[str] = ("job", "arguments", "spark_conf", "backend", "result_uri")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "spark_conf": "json",
        "arguments": "json",
    }
    ui_color = "#fde7d1"
    ui_fgcolor = "#000"
    operator_extra_links: tuple[BaseOperatorLink, ...] = (DatabricksRunLink(),)  # type: ignore[assignment]

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
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("execution_timeout", run_timeout + timedelta(hours=1))
        kwargs.setdefault("databricks_conn_id", DatabricksJobsHook.default_conn_name)
        super().__init__(timeout_seconds=int(run_timeout.total_seconds()), **kwargs)
        self.job = job
        self.arguments = arguments
        self.spark_conf = spark_conf
        self.backend = backend
        self.result_uri = result_uri
        self.local_master = local_master
        self.databricks_cluster = databricks_cluster
        self.cluster_environment = cluster_environment
        self.wheel_dir = wheel_dir
        self.mlflow_conn_id = mlflow_conn_id
        self._process: ProcessGroup | None = None
        self._result_location: str | None = None

    @property
    def databricks_hook(self) -> DatabricksJobsHook:
        return self._hook

    def _get_hook(self, caller: str) -> DatabricksJobsHook:
        return DatabricksJobsHook(
            self.databricks_conn_id,
            retry_limit=self.databricks_retry_limit,
            retry_delay=self.databricks_retry_delay,
            retry_args=self.databricks_retry_args,
            caller=caller,
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

    def job_settings(self, cluster: bool = False) -> dict[str, str]:
        """The lake root and the job settings of this deployment (``JOB_SETTINGS``). A cluster
        reaches the lake through its own mounts, never the worker's."""
        settings = {k: os.environ[k] for k in JOB_SETTINGS if os.environ.get(k)}
        if cluster:
            settings.pop("MLOPS_LAKE_MOUNTS", None)
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
            *self.job_command_settings(context),
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
                    clearing = f"{ti.run_id}:clear{_clear_number(context)}"
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
        self.external_id_key = state_key(context)
        backend = resolve_backend(self.backend)
        if backend == "local":
            return self.execute_local(context)
        return self.execute_resumable(context)

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

    def local_environment(self) -> dict[str, str]:
        """The local job's whole environment: the process basics, Python and Spark paths, the
        job settings and MLflow; nothing else of the worker's."""
        import mlops_jobs

        include = str(Path(mlops_jobs.__file__).resolve().parents[1])
        return {
            **{
                k: v
                for k, v in os.environ.items()
                if v and (k in PROCESS_ENVIRONMENT or k.startswith(PROCESS_ENVIRONMENT_PREFIXES))
            },
            "PYTHONPATH": include,
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYARROW_IGNORE_TIMEZONE": "1",
            # local mode needs no network name; loopback also works where the host name
            # does not resolve
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            **self.job_settings(),
            **self.mlflow_environment(),
        }

    def execute_local(self, context: Context) -> Any:
        command = self.local_command(context)
        self.log.info("Running locally: %s", " ".join(command))
        self._process = ProcessGroup(command, env=self.local_environment(), tail_lines=TAIL_LINES)
        # The job's own error line ("error: <job>: …") leads the task's error: output that
        # other processes print after it (a peer worker's traceback) may push it out of the tail.
        errors: list[str] = []

        def on_line(line: str) -> None:
            self.log.info("%s", line)
            if line.startswith(JOB_ERROR_PREFIX) and not errors:
                errors.append(line.removeprefix(JOB_ERROR_PREFIX))

        returncode = self._process.stream(on_line)
        refusal = self.refusal(context) if returncode == EXIT_BAD_INPUT else None
        if refusal is not None:
            raise JobInputError(f"{refusal}; last lines:\n{self._process.tail}")
        if returncode != 0:
            cause = f": {errors[0]}" if errors else ""
            raise SparkJobError(
                f"job {self.job!r} failed on the local backend with exit code {returncode}"
                f"{cause}; last lines:\n{self._process.tail}"
            )
        return self.read_result(context)

    # -- databricks ----------------------------------------------------------------------

    def upload_wheel(self) -> str:
        """Build the job wheel and upload it unless that version is already there."""
        from mlops_jobs.distribution import build_wheel

        wheel_dir = self.wheel_dir or setting(WHEEL_DIR_VARIABLE, WHEEL_DIR_ENV, DEFAULT_WHEEL_DIR)
        with tempfile.TemporaryDirectory() as tmp:
            wheel = build_wheel(Path(tmp))
            return self.databricks_hook.upload_job_package(wheel, str(wheel_dir))

    def cluster_specification(self) -> dict[str, Any]:
        """The task's cluster: configured cluster, job ``spark_conf``, and the environment."""
        cluster = resolve_json_setting(self.databricks_cluster, CLUSTER_VARIABLE, CLUSTER_ENV)
        if not cluster or not ({"new_cluster", "existing_cluster_id"} & set(cluster)):
            raise InvalidParameterError(
                "databricks_cluster needs 'new_cluster' or 'existing_cluster_id' (argument, "
                f"Variable {CLUSTER_VARIABLE} or {CLUSTER_ENV}), got {cluster!r}"
            )
        cluster = dict(cluster)
        if "new_cluster" in cluster:
            new_cluster = dict(cluster["new_cluster"])
            new_cluster["spark_conf"] = {
                **new_cluster.get("spark_conf", {}),
                **(self.spark_conf or {}),
            }
            new_cluster["spark_env_vars"] = _checked_environment(
                {**new_cluster.get("spark_env_vars", {}), **self.cluster_env_vars()}
            )
            cluster["new_cluster"] = new_cluster
        return cluster

    def job_command_settings(self, context: Context) -> list[str]:
        """``--setting KEY=VALUE`` for an existing cluster, whose environment a run cannot set
        (secret references cannot travel this way: configure them on the cluster)."""
        if resolve_backend(self.backend) != "databricks":
            return []
        cluster = resolve_json_setting(self.databricks_cluster, CLUSTER_VARIABLE, CLUSTER_ENV)
        if "new_cluster" in (cluster or {}):
            return []
        arguments = []
        for name, value in self.cluster_env_vars().items():
            if _is_secret_ref(value):
                raise InvalidParameterError(
                    f"cluster environment variable {name} is a secret reference, which an "
                    "existing cluster cannot receive per run; set it in the cluster's "
                    "spark_env_vars instead"
                )
            arguments += ["--setting", f"{name}={value}"]
        return arguments

    def cluster_env_vars(self) -> dict[str, str]:
        """``spark_env_vars`` of the run: the lake root, MLflow URIs and HTTP request settings,
        job settings, and the configured extras. A value whose name says it is a secret must be
        a secret reference."""
        from mlops_airflow.hooks.mlflow_registry import HTTP_REQUEST_SETTINGS

        mlflow = self.mlflow_environment()
        extra = resolve_json_setting(
            self.cluster_environment, CLUSTER_ENVIRONMENT_VARIABLE, CLUSTER_ENVIRONMENT_ENV
        )
        passed = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *HTTP_REQUEST_SETTINGS)
        return _checked_environment(
            {
                **self.job_settings(cluster=True),
                **{k: v for k, v in mlflow.items() if k in passed},
                **{str(k): str(v) for k, v in (extra or {}).items()},
            }
        )

    def run_specification(self, context: Context, wheel: str) -> dict[str, Any]:
        """The ``runs/submit`` request for this task instance."""
        from mlops_jobs.distribution import ENTRY_POINT, PACKAGE

        ti = context["ti"]
        cluster = self.cluster_specification()
        return {
            "run_name": f"{ti.dag_id}.{ti.task_id}.{self.job}",
            "idempotency_token": idempotency_token(context, self.durable),
            "tasks": [
                {
                    "task_key": str(self.job).replace("-", "_"),
                    "python_wheel_task": {
                        "package_name": PACKAGE,
                        "entry_point": ENTRY_POINT,
                        "parameters": self.job_arguments(context),
                    },
                    **cluster,
                    "libraries": [*cluster.get("libraries", []), {"whl": wheel}],
                }
            ],
        }

    def _prepare_submit_json(self, context: Context) -> dict[str, Any]:
        # Called by the provider only when it submits a run (never on a reattach), so the
        # package is uploaded only then.
        self.json = self.run_specification(context, self.upload_wheel())
        request = super()._prepare_submit_json(context)
        for task in request.get("tasks", []):
            # The provider forwards DAG params as named parameters; the job takes its arguments
            # as a list (``parameters``), and the two cannot be combined.
            task.get("python_wheel_task", {}).pop("named_parameters", None)
        return request

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        # Returns the result: when the mixin reattaches, the task returns what this returns.
        if self.deferrable:
            # Deferrable and durable: the mixin decided to submit or reattach; the triggerer
            # waits (a run already over is finished here at once).
            self.run_id = int(external_id)
            _handle_deferrable_databricks_operator_execution(self, self._hook, self.log, context)
        else:
            with self._refusal_raised(context):
                super().poll_until_complete(external_id, context)
        return self.read_result(context)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        super().get_job_result(external_id, context)
        return self.read_result(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:  # type: ignore[override]
        """Resume after the trigger reported a terminal state; a failed run raises."""
        with self._refusal_raised(context, event.get("run_page_url")):
            super().execute_complete(dict(context), event)
        self.run_id = int(event["run_id"])
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
            # the page the provider looked up when the run started: the failure may be the API's
            page = run_page_url or (
                None if self.run_id is None else self._hook.known_run_page_url(self.run_id)
            )
            where = f"\nRun page: {page}" if page else ""
            if refusal is None:
                raise AirflowException(f"{err}{where}") from err
            raise JobInputError(f"{refusal}\n{err}{where}") from err

    # -- both ----------------------------------------------------------------------------

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.log.info("Terminating local job (process group %s)", self._process.pid)
            self._process.terminate(grace=30)
            return
        if self.run_id is not None:
            super().on_kill()


def _checked_environment(env: dict[str, str]) -> dict[str, str]:
    """``env``, or an error when a variable whose name says secret has a plain value."""
    for name, value in env.items():
        words = name.upper().replace("-", "_").split("_")
        secret = any(w in _SECRET_NAME or w.endswith(_SECRET_NAME) for w in words)
        if secret and not _is_secret_ref(str(value)):
            raise InvalidParameterError(
                f"cluster environment variable {name} must be a Databricks secret reference "
                "({{secrets/<scope>/<key>}}), not a plain value"
            )
    return env


def _is_secret_ref(value: str) -> bool:
    text = value.strip()
    return text.startswith("{{secrets/") and text.endswith("}}") and text.count("/") == 2


def idempotency_token(context: Context, durable: bool = True) -> str:
    """A token per task instance, clearing and submission (Databricks allows 64 characters).

    Durable, it covers the run id the task state store holds from an earlier try: a try that
    died between submitting and storing the id gets the same run back from ``runs/submit``,
    while a resubmission after a failed run (a new stored id) gets a new run. Otherwise it
    covers the try number. A cleared task (a new ``clear_number``) always gets a new run.
    """
    ti = context["ti"]
    store = context.get("task_state_store")
    if durable and store is not None:
        submission = f"after:{store.get(state_key(context))}"
    else:
        submission = f"try:{getattr(ti, 'try_number', '')}"
    key = ":".join(
        [*(str(getattr(ti, attr, "")) for attr in ("dag_id", "task_id", "run_id", "map_index")),
         f"clear:{_clear_number(context)}", submission]
    )  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()


def state_key(context: Context) -> str:
    """The task state key of the Databricks run id: per clearing of the DAG run, so a cleared
    task computes again instead of reattaching to the run of before."""
    return f"{DatabricksSubmitRunOperator.external_id_key}.c{_clear_number(context)}"


def _clear_number(context: Context) -> int:
    return int(getattr(context.get("dag_run"), "clear_number", 0) or 0)


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
