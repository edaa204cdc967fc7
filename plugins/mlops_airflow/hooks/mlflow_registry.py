"""The MLflow tracking server and model registry, reached through an Airflow connection."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from mlops_airflow.exceptions import InvalidParameterError, PromotionConflictError

CHAMPION = "champion"
LOCK_SUFFIX = "__alias_lock"
CHALLENGER = "challenger"
PREVIOUS = "previous"
# How MLflow's client retries and times out its HTTP requests.
HTTP_REQUEST_SETTINGS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
)


@dataclass(frozen=True)
class ChampionMove:
    """What a compare-and-set move of ``@champion`` did."""

    model_name: str
    version: str
    previous: str | None
    moved: bool


class MlflowRegistryHook(BaseHook):
    """
    A client for one MLflow deployment (tracking server and model registry).

    The connection (type ``mlflow``) gives the tracking URI in ``host`` (``http://mlflow:5000``,
    ``databricks``, ``sqlite:///…``; a bare host name is completed with ``schema`` and ``port``),
    an optional ``registry_uri`` in its extra (``databricks-uc`` for Unity Catalog), a token in
    ``password`` (with ``databricks_host`` in the extra for a Databricks workspace) or user and
    password in ``login``/``password``. Without the connection the hook
    falls back to ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, so the local stack needs no
    connection at all.

    Alias moves are compare-and-set under a lock held in the registry itself (see
    ``alias_lock``): two moves never interleave, whichever Airflow deployment or person starts
    them, and the second one finds the champion it was compared with gone. Airflow's pool
    ``mlflow_registry`` keeps the tasks that move aliases from even queueing on the lock.

    :param mlflow_conn_id: Airflow connection to MLflow.
    :param lock_wait_seconds: How long a move waits for the alias lock.
    :param lock_ttl_seconds: Age after which a lock is taken to be a crashed holder's.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(
        self,
        mlflow_conn_id: str = default_conn_name,
        lock_wait_seconds: float = 120.0,
        lock_ttl_seconds: float = 600.0,
    ) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.lock_wait_seconds = lock_wait_seconds
        self.lock_ttl_seconds = lock_ttl_seconds

    @cached_property
    def uris(self) -> tuple[str, str | None]:
        """Tracking and registry URI: from the connection, else from the environment."""
        from airflow.providers.common.compat.sdk import AirflowNotFoundException

        try:
            conn = self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            conn = None
        if conn is None:
            tracking = os.environ.get("MLFLOW_TRACKING_URI")
            if not tracking:
                raise InvalidParameterError(
                    f"no MLflow: create the connection {self.mlflow_conn_id!r} or set "
                    "MLFLOW_TRACKING_URI"
                )
            return tracking, os.environ.get("MLFLOW_REGISTRY_URI")
        extra = conn.extra_dejson
        host = extra.get("tracking_uri") or conn.host or ""
        if not host:
            raise InvalidParameterError(
                f"connection {self.mlflow_conn_id!r} has no host (the MLflow tracking URI)"
            )
        if "://" not in host and host not in ("databricks", "databricks-uc"):
            scheme = conn.schema or "http"
            host = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
        if conn.password:
            # MLflow's clients read their credentials from the environment.
            if host.startswith("databricks"):
                os.environ["DATABRICKS_TOKEN"] = conn.password
                if extra.get("databricks_host"):
                    os.environ["DATABRICKS_HOST"] = extra["databricks_host"]
            elif conn.login:
                os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
                os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password
            else:
                os.environ["MLFLOW_TRACKING_TOKEN"] = conn.password
        return host, extra.get("registry_uri")

    def job_environment(self) -> dict[str, str]:
        """``MLFLOW_*`` variables that point a job's MLflow client where this hook points, so
        the jobs and the promotion tasks always use the same tracking server and registry, and
        retry their requests alike (``MLFLOW_HTTP_REQUEST_*``)."""
        tracking, registry = self.uris
        env = {"MLFLOW_TRACKING_URI": tracking}
        if registry:
            env["MLFLOW_REGISTRY_URI"] = registry
        for key in (
            "MLFLOW_TRACKING_TOKEN",
            "MLFLOW_TRACKING_USERNAME",
            "MLFLOW_TRACKING_PASSWORD",
            "DATABRICKS_HOST",
            "DATABRICKS_TOKEN",
            *HTTP_REQUEST_SETTINGS,
        ):
            if os.environ.get(key):
                env[key] = os.environ[key]
        return env

    def get_conn(self) -> Any:
        """An ``MlflowClient`` for the connection's tracking server and registry."""
        return self.client

    @cached_property
    def client(self) -> Any:
        import mlflow

        tracking, registry = self.uris
        return mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry)

    # -- registry --------------------------------------------------------------------------

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version number behind ``name@alias``, or None when the alias is not set."""
        from mlops_jobs.training.tracking import alias_version

        version = alias_version(self.client, name, alias)
        return None if version is None else str(version.version)

    def get_version(self, name: str, version: str) -> Any:
        """The model version, or an error naming it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise  # a server or permission error is not a bad parameter: let it retry
            raise InvalidParameterError(
                f"version {version} of model {name!r} does not exist: {err.message}"
            ) from None

    def set_version_tags(self, name: str, version: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(name, str(version), key, str(value))

    def append_description(self, name: str, version: str, text: str) -> None:
        current = self.get_version(name, version).description or ""
        combined = f"{current}\n\n{text}".strip() if current else text
        self.client.update_model_version(name, str(version), description=combined)

    def log_text(self, mlflow_run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(mlflow_run_id, text, artifact_file)

    @contextlib.contextmanager
    def alias_lock(self, name: str) -> Iterator[None]:
        """Hold the registry lock of ``name`` while its aliases move.

        MLflow has no atomic alias update, but creating a registered model is atomic on every
        backend (the name is unique), so the lock is a registered model ``<name>__alias_lock``
        that exists while held. A lock older than ``lock_ttl_seconds`` (a crashed holder) is
        broken; waiting longer than ``lock_wait_seconds`` raises ``PromotionConflictError``.
        """
        from mlflow.exceptions import MlflowException

        lock = f"{name}{LOCK_SUFFIX}"
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_wait_seconds
        while True:
            try:
                self.client.create_registered_model(
                    lock,
                    tags={"holder": token, "acquired_at": f"{time.time():.3f}"},
                    description=f"Held while the aliases of {name} move; deleted after.",
                )
                break
            except MlflowException as err:
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            held = self._lock_holder(lock)
            if held is not None and time.time() - held[1] > self.lock_ttl_seconds:
                self.log.warning("Breaking the stale lock %s (holder %s)", lock, held[0])
                self._release(lock, held[0])
                continue
            if time.monotonic() > deadline:
                raise PromotionConflictError(
                    f"the aliases of {name} are locked by another move ({lock}, holder "
                    f"{held[0] if held else '?'}) for longer than {self.lock_wait_seconds:.0f} s"
                )
            time.sleep(0.2)
        try:
            yield
        finally:
            self._release(lock, token)

    def _lock_holder(self, lock: str) -> tuple[str, float] | None:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(lock).tags
        except MlflowException:
            return None  # released meanwhile
        return tags.get("holder", ""), float(tags.get("acquired_at", "0") or 0)

    def _release(self, lock: str, token: str) -> None:
        from mlflow.exceptions import MlflowException

        held = self._lock_holder(lock)
        if held is not None and held[0] == token:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model(lock)

    def move_champion(self, name: str, version: str, expected: str | None) -> ChampionMove:
        """Make ``version`` the champion if ``@champion`` still is ``expected`` (None: unset).

        Under the alias lock: the champion is checked; the version gets ``@challenger``; the
        old champion gets ``@previous`` (before the move, so a crash never leaves a stale
        rollback target); ``@champion`` moves and is read back; ``@challenger`` is removed. A
        champion that moved since the comparison raises ``PromotionConflictError`` naming both
        versions and leaves the registry as it was. Repeating a move that already happened
        (a retry after a crash) changes nothing and succeeds.
        """
        version = str(version)
        self.get_version(name, version)
        with self.alias_lock(name):
            current = self.alias_version(name, CHAMPION)
            previous = self.alias_version(name, PREVIOUS)
            if current == version and (expected == version or previous == expected):
                self.log.info(
                    "%s version %s already is the champion; nothing to move", name, version
                )
                return ChampionMove(name, version, previous, moved=False)
            self._expect(name, version, expected, current)
            self.client.set_registered_model_alias(name, CHALLENGER, version)
            try:
                if expected is not None:
                    self.client.set_registered_model_alias(name, PREVIOUS, expected)
                self.client.set_registered_model_alias(name, CHAMPION, version)
                moved_to = self.alias_version(name, CHAMPION)
                if moved_to != version:
                    raise PromotionConflictError(
                        f"@champion of {name} moved to version {moved_to} while version "
                        f"{version} was being promoted over version {expected} (a move outside "
                        "the lock, e.g. by hand); not overwriting it"
                    )
            finally:
                if self.alias_version(name, CHALLENGER) == version:
                    self.client.delete_registered_model_alias(name, CHALLENGER)
        self.log.info(
            "%s@champion: version %s -> version %s (@previous %s)",
            name,
            expected,
            version,
            expected,
        )
        return ChampionMove(name, version, expected, moved=True)

    def _expect(self, name: str, version: str, expected: str | None, current: str | None) -> None:
        if current != expected:
            compared = f"version {expected}" if expected else "no champion"
            raise PromotionConflictError(
                f"@champion of {name} is version {current or '(none)'}, but version "
                f"{version} was compared with {compared}; "
                "not overwriting it (re-evaluate the candidate against the new champion)"
            )
