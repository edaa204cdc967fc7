"""Settings resolved at execute time, never at parse time."""

from __future__ import annotations

import os

from mlops_airflow.exceptions import InvalidParameterError

LAKE_ROOT_VARIABLE = "mlops_lake_root"
LAKE_ROOT_ENV = "MLOPS_LAKE_ROOT"


def resolve_lake_root(explicit: str | None = None) -> str:
    """The lake root: the argument, the Variable ``mlops_lake_root`` or ``MLOPS_LAKE_ROOT``."""
    if explicit:
        return explicit
    from airflow.sdk import Variable

    value = Variable.get(LAKE_ROOT_VARIABLE, default=None) or os.environ.get(LAKE_ROOT_ENV)
    if not value:
        raise InvalidParameterError(
            f"no lake root: pass lake_root, set the Variable {LAKE_ROOT_VARIABLE!r} "
            f"or the environment variable {LAKE_ROOT_ENV}"
        )
    return value


def positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1, or an error naming the parameter."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a whole number, got {value!r}") from None
    if number < 1:
        raise InvalidParameterError(f"{name} must be at least 1, got {number}")
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
