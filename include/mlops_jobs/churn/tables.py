"""The churn pipeline's tables, as contracts (``mlops_jobs.contracts``): which Hive tables it
reads, their columns and types, which partitions one run (``ds``) needs, and where it writes.

The demo generator creates its tables from this contract and the extraction stage checks the live
tables against it, so the two cannot drift apart silently.
"""

from __future__ import annotations

from mlops_jobs.contracts import PartitionWindow, TableContract
from mlops_jobs.hql import TableName

CUSTOMERS = TableContract(
    alias="customers",
    table=TableName("raw", "customers"),
    columns=(
        ("customer_id", "bigint"),
        ("signup_date", "date"),
        ("plan", "string"),
        ("region", "string"),
        ("age", "int"),
        ("monthly_fee", "double"),
        ("is_autopay", "boolean"),
    ),
    # A daily snapshot per ds (the state at the end of that day): attributes are read as of
    # the run's cutoff, so plans or autopay changed on or after the label's day never leak in.
    window=PartitionWindow.AS_OF,
)

EVENTS = TableContract(
    alias="events",
    table=TableName("raw", "events"),
    columns=(
        ("event_id", "bigint"),
        ("customer_id", "bigint"),
        ("event_time", "timestamp"),
        ("event_type", "string"),
        ("channel", "string"),
        ("amount", "double"),
    ),
    window=PartitionWindow.LOOKBACK,
)

CHURN_LABELS = TableContract(
    alias="churn_labels",
    table=TableName("raw", "churn_labels"),
    columns=(("customer_id", "bigint"), ("churned", "int")),
    window=PartitionWindow.CURRENT,
)

CHURN_SOURCES: tuple[TableContract, ...] = (CUSTOMERS, EVENTS, CHURN_LABELS)
#: Days after a label's day before its labels are complete. A label of day ``d`` says whether the
#: customer churned on ``d``; in the demo warehouse it is final at the end of ``d`` (0). Labels
#: that mature later ("churned within 30 days") set the days here or in the DAG's Param, so a
#: run never trains on, or waits for, labels that cannot be complete yet.
LABEL_HORIZON_DAYS = 0
#: Training reads the labels of ``ds - OUT_OF_TIME_DAYS`` to train on and those of ``ds`` to test
#: the model on a later day than it learned from (the run's span, see ``partition_range``).
OUT_OF_TIME_DAYS = 7
#: What batch scoring reads: customers and their events, no labels (they do not exist yet).
CHURN_SCORING_SOURCES: tuple[TableContract, ...] = (CUSTOMERS, EVENTS)

#: Where batch scoring writes: one partition per scored ``ds``.
CHURN_PREDICTIONS = TableContract(
    alias="churn_predictions",
    table=TableName("ml", "churn_predictions"),
    columns=(
        ("customer_id", "bigint"),
        ("churn_probability", "double"),
        ("churn_predicted", "boolean"),
        ("model_version", "string"),
        ("scored_at", "timestamp"),
    ),
    window=PartitionWindow.CURRENT,
)

EVENT_TYPES = ("page_view", "login", "purchase", "support_ticket")
CHANNELS = ("web", "mobile", "store")
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west")
