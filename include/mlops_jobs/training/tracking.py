"""MLflow conventions of the training jobs: lineage tags, library versions, registry lookups."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

REGISTERED_MODEL = "churn"
LIBRARIES = ("tensorflow-cpu", "tf-keras", "mlflow", "pyspark", "numpy", "pandas", "scikit-learn")
TRY_TAGS = ("airflow.dag_id", "airflow.run_id", "airflow.task_id", "airflow.try_number")


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
        for name in ("tensorflow-cpu", "tf-keras", "numpy")
        if name in versions
    ]


def try_tags(dag_id: str, run_id: str, task_id: str, try_number: int) -> dict[str, str]:
    """Tags that identify the Airflow task try that trained a model."""
    return dict(zip(TRY_TAGS, (dag_id, run_id, task_id, str(try_number)), strict=True))


def find_registered_version(client: Any, name: str, tags: dict[str, str]) -> Any | None:
    """The model version of ``name`` registered by the task try with ``tags``, if any."""
    for model_version in client.search_model_versions(f"name = '{name}'"):
        if all(model_version.tags.get(k) == v for k, v in tags.items()):
            return model_version
    return None
