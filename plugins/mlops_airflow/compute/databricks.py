"""The Databricks compute backend: the job package, the run specification, and the run itself,
handed to the provider's ``DatabricksSubmitRunOperator`` as it is."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.databricks.operators.databricks import (
    XCOM_RUN_ID_KEY,
    XCOM_RUN_PAGE_URL_KEY,
    DatabricksSubmitRunOperator,
)
from airflow.providers.databricks.triggers.databricks import DatabricksExecutionTrigger

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.hooks.databricks import DatabricksJobsHook
from mlops_airflow.utils import resolve_json_setting, setting

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

CLUSTER_VARIABLE = "mlops_databricks_cluster"
CLUSTER_ENV = "MLOPS_DATABRICKS_CLUSTER"
WHEEL_DIR_VARIABLE = "mlops_databricks_wheel_dir"
WHEEL_DIR_ENV = "MLOPS_DATABRICKS_WHEEL_DIR"
DEFAULT_WHEEL_DIR = "/Volumes/main/mlops/artifacts/wheels"
CLUSTER_ENVIRONMENT_VARIABLE = "mlops_databricks_env"
CLUSTER_ENVIRONMENT_ENV = "MLOPS_DATABRICKS_ENV"
_SECRET_NAME = ("TOKEN", "PASSWORD", "PASSWD", "PWD", "SECRET", "CREDENTIAL", "KEY", "AUTH")


class DatabricksJob:
    """
    One job of ``mlops_jobs`` as a Databricks one-time run (``runs/submit`` of a
    ``python_wheel_task``).

    This class builds what a run needs: the job package (a wheel uploaded once per content
    version to a Unity Catalog volume, or DBFS), the cluster (``spark_conf``, and the job
    settings as ``spark_env_vars``: secrets only as ``{{secrets/scope/key}}`` references) and
    the request. The provider's ``DatabricksSubmitRunOperator`` does the rest, unmodified: it
    submits, waits, fails with the run's errors and cancels, and in its durable mode keeps the
    run id in the task state store, so a retry reattaches to a run that is still alive or has
    succeeded instead of starting a second one. Deferred, its ``DatabricksExecutionTrigger``
    waits in the triggerer and the provider's ``execute_complete`` judges the run.

    :param task_id: The task the run is for (its run name and the provider's messages).
    :param job: The job name, e.g. ``churn-features``.
    :param job_settings: The lake root and the job settings of this deployment.
    :param mlflow_settings: Where the job's MLflow client points (URIs, request settings).
    :param spark_conf: Spark settings of the job.
    :param cluster: ``{"new_cluster": {...}}`` or ``{"existing_cluster_id": "..."}``; default
        the Variable ``mlops_databricks_cluster`` or ``MLOPS_DATABRICKS_CLUSTER``.
    :param cluster_environment: Extra ``spark_env_vars`` of a new cluster; default the Variable
        ``mlops_databricks_env`` or ``MLOPS_DATABRICKS_ENV`` (JSON).
    :param wheel_dir: Where job wheels go; default the Variable ``mlops_databricks_wheel_dir``
        or ``MLOPS_DATABRICKS_WHEEL_DIR``.
    :param timeout_seconds: The run's ``timeout_seconds``.
    :param submit_arguments: ``DatabricksSubmitRunOperator`` arguments: ``databricks_conn_id``,
        ``polling_period_seconds``, ``databricks_retry_*``, ``durable``.
    """

    def __init__(
        self,
        *,
        task_id: str,
        job: str,
        job_settings: Mapping[str, str],
        mlflow_settings: Mapping[str, str],
        spark_conf: Mapping[str, str] | None = None,
        cluster: Mapping[str, Any] | None = None,
        cluster_environment: Mapping[str, str] | None = None,
        wheel_dir: str | None = None,
        timeout_seconds: int | None = None,
        **submit_arguments: Any,
    ) -> None:
        self.task_id = task_id
        self.job = job
        self.job_settings = dict(job_settings)
        self.mlflow_settings = dict(mlflow_settings)
        self.spark_conf = dict(spark_conf or {})
        self.cluster_argument = cluster
        self.cluster_environment = cluster_environment
        self.wheel_dir = wheel_dir
        self.timeout_seconds = timeout_seconds
        self.submit_arguments = submit_arguments
        self.submit: DatabricksSubmitRunOperator | None = None

    @property
    def durable(self) -> bool:
        return bool(self.submit_arguments.get("durable", True))

    @cached_property
    def hook(self) -> DatabricksJobsHook:
        """The workspace client for the job package (and a deferred run's page)."""
        args = self.submit_arguments
        return DatabricksJobsHook(
            args.get("databricks_conn_id", DatabricksJobsHook.default_conn_name),
            retry_limit=args.get("databricks_retry_limit", 3),
            retry_delay=args.get("databricks_retry_delay", 1),
            retry_args=args.get("databricks_retry_args"),
            caller="SparkJobOperator",
        )

    # -- the request -------------------------------------------------------------------------

    @cached_property
    def cluster(self) -> dict[str, Any]:
        """The configured cluster: ``new_cluster`` or ``existing_cluster_id``."""
        cluster = resolve_json_setting(self.cluster_argument, CLUSTER_VARIABLE, CLUSTER_ENV)
        if not cluster or not ({"new_cluster", "existing_cluster_id"} & set(cluster)):
            raise InvalidParameterError(
                "databricks_cluster needs 'new_cluster' or 'existing_cluster_id' (argument, "
                f"Variable {CLUSTER_VARIABLE} or {CLUSTER_ENV}), got {cluster!r}"
            )
        return dict(cluster)

    def cluster_specification(self) -> dict[str, Any]:
        """The run's cluster: the configured one, the job's ``spark_conf``, its environment."""
        cluster = dict(self.cluster)
        if "new_cluster" in cluster:
            new_cluster = dict(cluster["new_cluster"])
            new_cluster["spark_conf"] = {**new_cluster.get("spark_conf", {}), **self.spark_conf}
            new_cluster["spark_env_vars"] = checked_environment(
                {**new_cluster.get("spark_env_vars", {}), **self.cluster_env_vars()}
            )
            cluster["new_cluster"] = new_cluster
        return cluster

    def cluster_env_vars(self) -> dict[str, str]:
        """``spark_env_vars`` of the run: the job settings, MLflow's URIs and request settings,
        and the configured extras. A value whose name says it is a secret must be a secret
        reference."""
        from mlops_airflow.hooks.mlflow_registry import HTTP_REQUEST_SETTINGS

        extra = resolve_json_setting(
            self.cluster_environment, CLUSTER_ENVIRONMENT_VARIABLE, CLUSTER_ENVIRONMENT_ENV
        )
        passed = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", *HTTP_REQUEST_SETTINGS)
        # A cluster reaches the lake through its own mounts, never the worker's.
        settings = {k: v for k, v in self.job_settings.items() if k != "MLOPS_LAKE_MOUNTS"}
        return checked_environment(
            {
                **settings,
                **{k: v for k, v in self.mlflow_settings.items() if k in passed},
                **{str(k): str(v) for k, v in (extra or {}).items()},
            }
        )

    def command_settings(self) -> list[str]:
        """``--setting KEY=VALUE`` for an existing cluster, whose environment a run cannot set
        (secret references cannot travel this way: configure them on the cluster)."""
        if "new_cluster" in self.cluster:
            return []
        arguments = []
        for name, value in self.cluster_env_vars().items():
            if is_secret_reference(value):
                raise InvalidParameterError(
                    f"cluster environment variable {name} is a secret reference, which an "
                    "existing cluster cannot receive per run; set it in the cluster's "
                    "spark_env_vars instead"
                )
            arguments += ["--setting", f"{name}={value}"]
        return arguments

    def run_specification(
        self, context: Context, arguments: Sequence[str], wheel: str
    ) -> dict[str, Any]:
        """The ``runs/submit`` request of this task instance for the job's ``arguments``."""
        from mlops_jobs.distribution import ENTRY_POINT, PACKAGE

        ti = context["ti"]
        cluster = self.cluster_specification()
        return {
            "run_name": f"{ti.dag_id}.{ti.task_id}.{self.job}",
            "idempotency_token": idempotency_token(context, self.durable),
            "tasks": [
                {
                    "task_key": self.job.replace("-", "_"),
                    "python_wheel_task": {
                        "package_name": PACKAGE,
                        "entry_point": ENTRY_POINT,
                        "parameters": [*self.command_settings(), *arguments],
                    },
                    **cluster,
                    "libraries": [*cluster.get("libraries", []), {"whl": wheel}],
                }
            ],
        }

    def wheel_dir_setting(self) -> str:
        return str(
            self.wheel_dir or setting(WHEEL_DIR_VARIABLE, WHEEL_DIR_ENV, DEFAULT_WHEEL_DIR)
        ).rstrip("/")

    def upload_wheel(self) -> str:
        """Build the job wheel and upload it unless that version is already there."""
        from mlops_jobs.distribution import build_wheel

        with tempfile.TemporaryDirectory() as tmp:
            wheel = build_wheel(Path(tmp))
            return self.hook.upload_job_package(wheel, self.wheel_dir_setting())

    def library_path(self) -> str:
        """Where ``upload_wheel`` puts this code version's wheel, without building it."""
        from mlops_jobs.distribution import wheel_name

        return f"{self.wheel_dir_setting()}/{wheel_name()}"

    # -- the run -------------------------------------------------------------------------------

    def submitter(self, context: Context) -> DatabricksSubmitRunOperator:
        """The provider's operator for this task's run, its run id kept under ``state_key``
        (its request is set by ``prepare``)."""
        submit = DatabricksSubmitRunOperator(
            task_id=self.task_id,
            timeout_seconds=self.timeout_seconds,
            deferrable=False,
            **self.submit_arguments,
        )
        submit.external_id_key = state_key(context)
        self.submit = submit
        return submit

    def earlier_run(
        self, submit: DatabricksSubmitRunOperator, context: Context
    ) -> tuple[int | None, str | None]:
        """The run an earlier try of this task stored (durable only) and its status."""
        store = context.get("task_state_store") if self.durable else None
        earlier = store.get(submit.external_id_key) if store is not None else None
        if not earlier:
            return None, None
        return int(str(earlier)), submit.get_job_status(earlier, context)

    def prepare(
        self,
        submit: DatabricksSubmitRunOperator,
        context: Context,
        arguments: Sequence[str],
        reattaching: bool,
    ) -> None:
        """Set the run's request. The package is built and uploaded only for a run about to be
        submitted: a try that reattaches names this version's wheel, which the try that
        submitted uploaded (should the earlier run fail between this check and the provider's,
        the new run fails on the missing library and the next try uploads it)."""
        wheel = self.library_path() if reattaching else self.upload_wheel()
        submit.json = self.run_specification(context, arguments, wheel)

    def run(self, context: Context, arguments: Sequence[str]) -> None:
        """Submit the run, or reattach to the one an earlier try submitted, and wait for it;
        a run that does not succeed raises the provider's error."""
        submit = self.submitter(context)
        _, status = self.earlier_run(submit, context)
        reattaching = status is not None and (
            submit.is_job_active(status) or submit.is_job_succeeded(status)
        )
        self.prepare(submit, context, arguments, reattaching)
        submit.execute_resumable(context)

    def start(self, operator: BaseOperator, context: Context, arguments: Sequence[str]) -> None:
        """Submit the run (or find an earlier try's), then defer ``operator`` to the provider's
        trigger until it ends (``operator.execute_complete`` resumes). Returns only when an
        earlier try's run has already succeeded."""
        submit = self.submitter(context)
        earlier, status = self.earlier_run(submit, context)
        if earlier is not None and status is not None and submit.is_job_succeeded(status):
            submit.run_id = earlier
            self.log_run(context, earlier)
            return
        if earlier is not None and status is not None and submit.is_job_active(status):
            submit.run_id = earlier
        else:
            self.prepare(submit, context, arguments, reattaching=False)
            submit.run_id = submit.submit_job(context)
            store = context.get("task_state_store") if self.durable else None
            if store is not None:
                store.set(submit.external_id_key, submit.run_id)
        page = self.log_run(context, submit.run_id)
        operator.defer(
            trigger=DatabricksExecutionTrigger(
                run_id=submit.run_id,
                databricks_conn_id=submit.databricks_conn_id,
                polling_period_seconds=submit.polling_period_seconds,
                retry_limit=submit.databricks_retry_limit,
                retry_delay=submit.databricks_retry_delay,
                retry_args=submit.databricks_retry_args,
                run_page_url=page,
            ),
            method_name="execute_complete",
        )

    def log_run(self, context: Context, run_id: int) -> str:
        """Publish the run's id and page (XComs of the "Databricks run" link); the page."""
        page = self.hook.get_run_page_url(run_id)
        context["ti"].xcom_push(key=XCOM_RUN_ID_KEY, value=run_id)
        context["ti"].xcom_push(key=XCOM_RUN_PAGE_URL_KEY, value=page)
        return page

    @property
    def run_id(self) -> int | None:
        return None if self.submit is None else self.submit.run_id

    @staticmethod
    def published_run_page(context: Context) -> str | None:
        """The run page published for this task (looked up when the run started; never a new
        request, the failure may be the API's)."""
        ti = context["ti"]
        try:
            page = ti.xcom_pull(task_ids=ti.task_id, key=XCOM_RUN_PAGE_URL_KEY)
        except Exception:  # only decorates an error message
            return None
        return str(page) if page else None

    def cancel(self) -> None:
        """Cancel the run this task submitted or reattached to, if any."""
        if self.submit is not None and self.submit.run_id is not None:
            self.submit.on_kill()


def complete_run(task_id: str, context: Context, event: dict[str, Any]) -> None:
    """Judge a deferred run by the trigger's ``event`` (the provider's ``execute_complete``); a
    run that failed raises the provider's error."""
    DatabricksSubmitRunOperator(task_id=task_id).execute_complete(dict(context), event)


def checked_environment(env: dict[str, str]) -> dict[str, str]:
    """``env``, or an error when a variable whose name says secret has a plain value."""
    for name, value in env.items():
        words = name.upper().replace("-", "_").split("_")
        secret = any(w in _SECRET_NAME or w.endswith(_SECRET_NAME) for w in words)
        if secret and not is_secret_reference(str(value)):
            raise InvalidParameterError(
                f"cluster environment variable {name} must be a Databricks secret reference "
                "({{secrets/<scope>/<key>}}), not a plain value"
            )
    return env


def is_secret_reference(value: str) -> bool:
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
         f"clear:{clear_number(context)}", submission]
    )  # fmt: skip
    return hashlib.sha256(key.encode()).hexdigest()


def state_key(context: Context) -> str:
    """The task state key of the Databricks run id: per clearing of the DAG run, so a cleared
    task computes again instead of reattaching to the run of before."""
    return f"{DatabricksSubmitRunOperator.external_id_key}.c{clear_number(context)}"


def clear_number(context: Context) -> int:
    return int(getattr(context.get("dag_run"), "clear_number", 0) or 0)
