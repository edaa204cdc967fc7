"""Assets the pipelines publish. URIs are logical (``lake://``): the lake root is configuration."""

from __future__ import annotations

from airflow.sdk import Asset

CHURN_SNAPSHOT = Asset(name="churn_snapshot", uri="lake://churn/snapshots", group="churn")
CHURN_FEATURES = Asset(name="churn_features", uri="lake://churn/features", group="churn")
CHURN_MODEL_CANDIDATE = Asset(
    name="churn_model_candidate", uri="mlflow://models/churn/candidate", group="churn"
)
#: ``churn@champion`` moved (promotion or rollback); the event's extra names the version.
CHURN_MODEL = Asset(name="churn_model", uri="mlflow://models/churn/champion", group="churn")
#: ``ml.churn_predictions``: one partition per scored ``ds``. The Hive provider's URI form
#: (``hive://host/database/table``) with a logical host: the server is configuration.
CHURN_PREDICTIONS = Asset(
    name="churn_predictions", uri="hive://warehouse/ml/churn_predictions", group="churn"
)
