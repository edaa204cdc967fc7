"""MLflow conventions of the jobs: lineage tags, library versions, registry lookups."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# A workspace registry's model name, or Unity Catalog's three-level ``catalog.schema.model``.
_WORKSPACE_MODEL = re.compile(r"[A-Za-z0-9_-]{1,200}")
_UNITY_CATALOG_MODEL = re.compile(r"[A-Za-z0-9_]{1,255}(\.[A-Za-z0-9_]{1,255}){2}")
LIBRARIES = ("tensorflow", "tf-keras", "mlflow", "pyspark", "numpy", "pandas", "scikit-learn")
#: Tags that identify one Airflow task instance, whatever its try.
INSTANCE_TAGS = ("airflow.dag_id", "airflow.dag_run_id", "airflow.task_id", "airflow.map_index")
TRY_TAG = "airflow.try_number"


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def pip_requirements() -> list[str]:
    """What serving the model needs, pinned to what trained it (skips MLflow's slow inference)."""
    versions = library_versions()
    return [
        f"{name}=={versions[name]}"
        for name in ("tensorflow", "tf-keras", "numpy")
        if name in versions
    ]


def instance_tags(
    dag_id: str, dag_run_id: str, task_id: str, map_index: int = -1
) -> dict[str, str]:
    """Tags that identify the Airflow task instance (every try of it) that produced something."""
    return dict(zip(INSTANCE_TAGS, (dag_id, dag_run_id, task_id, str(map_index)), strict=True))


def check_model_name(name: str) -> str:
    """``name`` when it is a registered model name (``churn``, or ``catalog.schema.churn`` in a
    Unity Catalog registry), else a ``ValueError`` naming it."""
    if _WORKSPACE_MODEL.fullmatch(name) or _UNITY_CATALOG_MODEL.fullmatch(name):
        return name
    raise ValueError(
        f"invalid registered model name {name!r}: expected letters, digits, '_' or '-' "
        "(workspace registry), or catalog.schema.model of letters, digits and '_' (Unity Catalog)"
    )


def find_registered_version(client: Any, name: str, mlflow_run_ids: list[str]) -> Any | None:
    """The oldest version of ``name`` registered from one of the runs, if any.

    Searches by run, the one filter both the workspace and the Unity Catalog registry
    support (Unity Catalog's search results carry no tags). Names compare case-insensitively:
    Unity Catalog stores them in lower case.
    """
    found = [
        v
        for mlflow_run_id in mlflow_run_ids
        for v in client.search_model_versions(f"run_id = '{mlflow_run_id}'")
        if v.name.casefold() == name.casefold()
    ]
    return min(found, key=lambda v: int(v.version)) if found else None


def keep_first_version(client: Any, name: str, mlflow_run_id: str) -> Any | None:
    """The oldest version of ``name`` registered from the run, once its later ones are deleted.

    A run registers one version. More mean that the request creating it was sent again after
    its response was lost (MLflow's HTTP client retries every method): the later versions are
    duplicates nobody was given. One that carries an alias was given out, and is kept.
    """
    versions = sorted(
        (
            v
            for v in client.search_model_versions(f"run_id = '{mlflow_run_id}'")
            if v.name.casefold() == name.casefold()
        ),
        key=lambda v: int(v.version),
    )
    for duplicate in versions[1:]:
        if not getattr(duplicate, "aliases", None):
            print(
                f"deleting version {duplicate.version} of {duplicate.name}: a duplicate of "
                f"version {versions[0].version}, registered again from run {mlflow_run_id}"
            )
            client.delete_model_version(duplicate.name, str(duplicate.version))
    return versions[0] if versions else None


def find_runs(client: Any, experiment_id: str, tags: dict[str, str]) -> list[Any]:
    """Runs of an experiment carrying all of ``tags``."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(client.search_runs([experiment_id], filter_string=clauses, max_results=100))


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None when the model or the alias does not
    exist (any other registry error is raised)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
