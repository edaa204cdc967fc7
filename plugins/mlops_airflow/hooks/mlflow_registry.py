"""The MLflow tracking server and model registry, reached through an Airflow connection."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from mlops_airflow.exceptions import InvalidParameterError, PromotionConflictError

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"


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
    ``password`` or user and password in ``login``/``password``. Without the connection the hook
    falls back to ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, so the local stack needs no
    connection at all.

    Alias moves are compare-and-set: MLflow has no atomic one, so the current value is checked
    right before and right after each move; callers serialise moves (an Airflow pool of one
    slot) so that those checks only ever catch a move made outside Airflow.

    :param mlflow_conn_id: Airflow connection to MLflow.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

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
            # MLflow's REST client reads its credentials from the environment.
            if conn.login:
                os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
                os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password
            else:
                os.environ["MLFLOW_TRACKING_TOKEN"] = conn.password
        return host, extra.get("registry_uri")

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
        """The version behind ``name@alias``, or None when the alias is not set."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def get_version(self, name: str, version: str) -> Any:
        """The model version, or an error naming it."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, str(version))
        except MlflowException as err:
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

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def move_champion(self, name: str, version: str, expected: str | None) -> ChampionMove:
        """Make ``version`` the champion if ``@champion`` still is ``expected`` (None: unset).

        The version first gets ``@challenger``; the champion is checked again right before the
        move and right after it; the old champion keeps ``@previous``; ``@challenger`` is removed
        once the move is done. A champion that moved meanwhile raises ``PromotionConflictError``
        naming both versions, and leaves ``@champion`` as the other mover set it.
        """
        version = str(version)
        self.get_version(name, version)
        self._expect(name, version, expected, "before the promotion")
        if expected == version:
            self.log.info("%s version %s already is the champion; nothing to move", name, version)
            return ChampionMove(name, version, self.alias_version(name, PREVIOUS), moved=False)
        self.client.set_registered_model_alias(name, CHALLENGER, version)
        try:
            self._expect(name, version, expected, "right before the move")
            self.client.set_registered_model_alias(name, CHAMPION, version)
            if expected is not None:
                self.client.set_registered_model_alias(name, PREVIOUS, expected)
            current = self.alias_version(name, CHAMPION)
            if current != version:
                raise PromotionConflictError(
                    f"@champion of {name} moved to version {current} while version {version} "
                    f"was being promoted over version {expected}; version {current} stays "
                    "champion"
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

    def _expect(self, name: str, version: str, expected: str | None, when: str) -> None:
        current = self.alias_version(name, CHAMPION)
        if current != expected:
            compared = f"version {expected}" if expected else "no champion"
            raise PromotionConflictError(
                f"@champion of {name} is version {current or '(none)'} {when}, but version "
                f"{version} was compared with {compared}; "
                "not overwriting it (re-evaluate the candidate against the new champion)"
            )
