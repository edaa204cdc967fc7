"""Errors raised by the project's hooks and operators; each names what is at fault."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class MlopsError(AirflowException):
    """Base class of the project's task failures."""


class InvalidParameterError(MlopsError, AirflowFailException):
    """A task parameter (or DAG Param) has an invalid value; the message names it. Retrying
    cannot help, so the task fails without retries."""


class SchemaContractError(MlopsError, AirflowFailException):
    """Source tables do not match the pipeline's declared contract (fails without retries)."""


class MissingPartitionError(MlopsError):
    """Required partitions are missing or empty."""


class HiveServerUnavailableError(MlopsError):
    """HiveServer2 cannot be reached, or the connection broke during a statement. Transient:
    the task is retried."""


class ReconciliationError(MlopsError):
    """Exported row counts differ from the source's."""


class SparkJobError(MlopsError):
    """A cluster-side job failed; the message carries its error output (and run page URL)."""


class JobInputError(SparkJobError, AirflowFailException):
    """A job refused its input (bad data, a missing or invalid input, a bad argument): the
    message says why. Data does not fix itself, so the task fails without retries."""


class PromotionConflictError(MlopsError, AirflowFailException):
    """``@champion`` moved after the candidate was compared with it: the promotion would
    overwrite another decision. Retrying cannot help; the candidate must be re-evaluated."""
