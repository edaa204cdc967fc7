"""Assets the pipelines read and publish, and the extras their events carry. URIs are logical
(``lake://``, ``hive://warehouse/…``): the lake root and the Hive server are configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset

from mlops_jobs.contracts import TableContract

if TYPE_CHECKING:
    from airflow.sdk import Context


def hive_asset(contract: TableContract) -> Asset:
    """The Asset of a Hive table, in the Hive provider's URI form (``hive://host/db/table``)
    with a logical host."""
    table = contract.table
    return Asset(
        name=str(table), uri=f"hive://warehouse/{table.database}/{table.table}", group="warehouse"
    )


CHURN_SNAPSHOT = Asset(name="churn_snapshot", uri="lake://churn/snapshots", group="churn")
CHURN_FEATURES = Asset(name="churn_features", uri="lake://churn/features", group="churn")
CHURN_MODEL_CANDIDATE = Asset(
    name="churn_model_candidate", uri="mlflow://models/churn/candidate", group="churn"
)
#: ``churn@champion`` moved (promotion or rollback); the event's extra names the version.
CHURN_MODEL = Asset(name="churn_model", uri="mlflow://models/churn/champion", group="churn")
#: ``ml.churn_predictions``: one partition per scored ``ds``.
CHURN_PREDICTIONS = Asset(
    name="churn_predictions", uri="hive://warehouse/ml/churn_predictions", group="churn"
)


def emit_asset_events(
    context: Context, outlets: Sequence[Any], extra: Mapping[str, Any] | None
) -> None:
    """Attach ``extra`` (what a consumer needs: ds, content hash, URI, model version) to the
    events of the task's Asset outlets; unset values are left out."""
    if not extra:
        return
    values = {k: v for k, v in extra.items() if v is not None}
    for outlet in outlets:
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = values
