"""Evaluation of a candidate model against the champion and a Spark MLlib baseline."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.operators.spark_job import SparkJobOperator, instance_arguments
from mlops_airflow.utils import json_mapping, resolve_model_name

if TYPE_CHECKING:
    from airflow.sdk import Context


class EvaluateModelOperator(SparkJobOperator):
    """
    Evaluate a registered candidate (``mlops-job churn-evaluate``) on the configured compute
    backend: the candidate, the current ``@champion`` and an MLlib baseline trained in the same
    job score the feature set's frozen test split; metrics (overall and by segment) and the
    report go to MLflow.

    Returns the evaluation (metrics of the three models, the champion version compared with,
    the baseline run, per-segment figures), which ``ModelGateOperator`` decides on.

    :param features: URI of the feature set. (templated)
    :param candidate_version: Registered version to evaluate. (templated)
    :param model_name: Registered model; default as ``TrainModelOperator``'s. (templated)
    :param thresholds: Overrides of ``promotion_config.json`` (operating threshold, segments).
        (templated)
    """

    template_fields: Sequence[str] = (
        *SparkJobOperator.template_fields,
        "features",
        "candidate_version",
        "model_name",
        "thresholds",
    )

    def __init__(
        self,
        *,
        features: str,
        candidate_version: str | int,
        model_name: str | None = None,
        thresholds: Mapping[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("job", "churn-evaluate")
        super().__init__(**kwargs)
        self.features = features
        self.candidate_version = candidate_version
        self.model_name = model_name
        self.thresholds = thresholds

    def job_arguments(self, context: Context) -> list[str]:
        return [
            *super().job_arguments(context),
            "--features", str(self.features),
            "--candidate-version", str(self.candidate_version),
            "--model-name", resolve_model_name(self.model_name),
            "--thresholds", json.dumps(json_mapping(self.thresholds, "thresholds")),
            *instance_arguments(context),
        ]  # fmt: skip

    def process_result(self, context: Context, result: Any) -> Any:
        if not isinstance(result, dict) or "candidate" not in result:
            raise InvalidParameterError(f"evaluation job returned no evaluation: {result!r}")
        return result
