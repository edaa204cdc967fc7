"""Settings resolved at execute time, never at parse time."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from mlops_airflow.exceptions import InvalidParameterError

LAKE_ROOT_VARIABLE = "mlops_lake_root"
LAKE_ROOT_ENV = "MLOPS_LAKE_ROOT"


def resolve_lake_root(explicit: str | None = None) -> str:
    """The lake root: the argument, the Variable ``mlops_lake_root`` or ``MLOPS_LAKE_ROOT``."""
    value = explicit or setting(LAKE_ROOT_VARIABLE, LAKE_ROOT_ENV)
    if not value:
        raise InvalidParameterError(
            f"no lake root: pass lake_root, set the Variable {LAKE_ROOT_VARIABLE!r} "
            f"or the environment variable {LAKE_ROOT_ENV}"
        )
    return value


def setting(variable: str, env: str, default: str | None = None) -> str | None:
    """A setting resolved at run time: the Variable ``variable``, else the environment ``env``."""
    from airflow.sdk import Variable

    return Variable.get(variable, default=None) or os.environ.get(env) or default


MODEL_NAME_VARIABLE = "mlops_model_name"
MODEL_NAME_ENV = "MLOPS_MODEL_NAME"


def resolve_model_name(explicit: object = None) -> str:
    """The registered model: ``explicit``, else the Variable ``mlops_model_name``, else
    ``MLOPS_MODEL_NAME``, else ``churn``; ``catalog.schema.model`` in a Unity Catalog registry.
    An invalid name is an error naming it."""
    from mlops_jobs.churn import MODEL_NAME
    from mlops_jobs.training.tracking import check_model_name

    # A Variable typed into the UI easily carries a trailing newline.
    name = str(explicit or setting(MODEL_NAME_VARIABLE, MODEL_NAME_ENV, MODEL_NAME)).strip()
    try:
        return check_model_name(name)
    except ValueError as err:
        raise InvalidParameterError(f"model_name: {err}") from None


def positive_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or an error naming the parameter."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise InvalidParameterError(f"{name} must be at least {minimum}, got {number}")
    return number


def optional_number(
    value: object, name: str, kind: type[int] | type[float], minimum: float | None = None
) -> int | float | None:
    """``value`` as an ``int`` or a positive ``float`` (a rendered template included), None when
    unset (None, empty or ``'None'``), or an error naming the parameter."""
    if value is None or str(value).strip() in ("", "None", "null"):
        return None
    try:
        number = kind(str(value).strip())
    except ValueError:
        kind_name = "a whole number" if kind is int else "a number"
        raise InvalidParameterError(f"{name} must be {kind_name}, got {value!r}") from None
    if kind is float and not (0 < number < float("inf")):
        raise InvalidParameterError(f"{name} must be a positive number, got {value!r}")
    if minimum is not None and number < minimum:
        raise InvalidParameterError(f"{name} must be at least {minimum}, got {number}")
    return number


def as_bool(value: object, name: str) -> bool:
    """A bool from a bool or a rendered template ('True'/'false'), or an error naming it."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no", "none", ""}:
        return False
    raise InvalidParameterError(f"{name} must be true or false, got {value!r}")


COMPUTE_BACKEND_VARIABLE = "mlops_compute_backend"
COMPUTE_BACKEND_ENV = "MLOPS_COMPUTE_BACKEND"
COMPUTE_BACKENDS = ("local", "databricks")


def resolve_backend(explicit: str | None = None) -> str:
    """The compute backend: the argument, the Variable ``mlops_compute_backend``,
    ``MLOPS_COMPUTE_BACKEND``, else ``local``."""
    value = explicit or setting(COMPUTE_BACKEND_VARIABLE, COMPUTE_BACKEND_ENV, "local") or ""
    value = value.strip().lower()
    if value not in COMPUTE_BACKENDS:
        raise InvalidParameterError(
            f"unknown compute backend {value!r} (Variable {COMPUTE_BACKEND_VARIABLE} or "
            f"{COMPUTE_BACKEND_ENV}); expected one of {', '.join(COMPUTE_BACKENDS)}"
        )
    return value


def resolve_json_setting(explicit: Any, variable: str, env: str) -> Any:
    """A JSON setting: the argument, else the Variable ``variable``, else the environment."""
    if explicit:
        return explicit
    raw = setting(variable, env)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise InvalidParameterError(f"{variable} / {env} is not valid JSON: {err}") from None


def lake_uri(*parts: str) -> str:
    """URI of a path under the lake root (for templates, rendered at run time); each part is
    checked so a templated value cannot leave the root."""
    from mlops_jobs import lake

    try:
        return lake.join(resolve_lake_root(), *parts)
    except lake.LakeError as err:
        raise InvalidParameterError(str(err)) from None


def json_mapping(value: Mapping[str, Any] | str | None, name: str) -> dict[str, Any]:
    """A mapping from a mapping or its JSON text (a rendered template), or an error naming it."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise InvalidParameterError(f"{name} is not valid JSON: {err}") from None
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"{name} must be a mapping, got {value!r}")
    return dict(value)


def run_ds(dag_run: Any, override: str | None = None) -> str:
    """The ``ds`` a run works on: ``override`` when given (a Param), else the logical date, else
    (runs triggered by an Asset have no logical date) the day the run was due."""
    from mlops_jobs import hql

    if override:
        try:
            return hql.validate_ds(str(override), "ds")
        except hql.InvalidIdentifierError as err:
            raise InvalidParameterError(str(err)) from None
    when = getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)
    if when is None:
        raise InvalidParameterError("the run has neither a logical date nor a run_after date")
    return when.strftime("%Y-%m-%d")


def complete_label_ds(dag_run: Any, override: str | None = None, horizon_days: Any = 0) -> str:
    """The label day a training run works on: ``override`` when given (a Param), else the
    newest day whose labels are complete when the run is due: the day before its logical date
    (or, without one, the day it was due), less the labels' maturity horizon in days.

    A run is due at the start of its logical day, when that day's labels cannot exist yet, and a
    label of day ``d`` is final only ``horizon_days`` after ``d``. The result depends on the
    run's date alone, so a backfill or catch-up run trains on what the original run did.

    A run whose conf names ``ds`` (the label day's Param before it was ``label_ds``) is refused:
    Airflow keeps unknown conf keys, so it would silently train on another day.
    """
    conf = getattr(dag_run, "conf", None) or {}
    if "ds" in conf:
        raise InvalidParameterError(
            f"conf names ds={conf['ds']!r}, which is not a Param of this DAG: the label day "
            "is label_ds"
        )
    if override:
        return run_ds(dag_run, override)
    horizon = positive_int(horizon_days, "label_horizon_days", minimum=0)
    due = dt.date.fromisoformat(run_ds(dag_run))
    return (due - dt.timedelta(days=1 + horizon)).isoformat()


MLFLOW_UI_VARIABLE = "mlops_mlflow_ui_url"
MLFLOW_UI_ENV = "MLOPS_MLFLOW_UI_URL"


def mlflow_run_url(
    experiment_id: str | None, mlflow_run_id: str, base: str | None = None
) -> str | None:
    """The MLflow UI's page of a run, when the UI's URL is configured (``base``, the Variable
    ``mlops_mlflow_ui_url`` or ``MLOPS_MLFLOW_UI_URL``), else None."""
    base = base or setting(MLFLOW_UI_VARIABLE, MLFLOW_UI_ENV)
    if not base or not experiment_id:
        return None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{mlflow_run_id}"


def mlflow_model_version_url(name: str, version: str | int, base: str | None = None) -> str | None:
    """The MLflow UI's page of a registered model version, when the UI's URL is configured
    (as ``mlflow_run_url``), else None."""
    base = base or setting(MLFLOW_UI_VARIABLE, MLFLOW_UI_ENV)
    if not base:
        return None
    return f"{base.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{version}"
