"""Point-in-time correct churn features: pure transforms (``DataFrame -> DataFrame``, inputs
untouched).

A label for day ``ds`` sees only events strictly before its cutoff (``ds`` 00:00 UTC) and within
the longest window, and customer attributes from the newest daily snapshot before the cutoff.
The train/valid/test split is a function of a SHA-256 of the customer id, so it is the same in
every run and every engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlops_jobs.churn.features.config import KEYS, OUT_OF_TIME, FeatureConfig

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

MICROS_PER_DAY = 86_400_000_000


def with_cutoff(labels: DataFrame) -> DataFrame:
    """Labels with ``cutoff``: the start (UTC) of the label's ``ds``; events must precede it."""
    from pyspark.sql import functions as F

    return labels.withColumn("cutoff", F.to_timestamp(F.col("ds"), "yyyy-MM-dd"))


def event_history(events: DataFrame, labels: DataFrame, config: FeatureConfig) -> DataFrame:
    """Events joined to the labels they may inform: strictly before the label's cutoff and at
    most ``max_window`` days before it, with ``days_before`` (1 for the day before the cutoff).

    Times are compared as epoch microseconds, which is much cheaper per event than date and
    interval arithmetic; with the cutoff at midnight UTC, ``days_before`` is the elapsed time
    rounded up to whole days.
    """
    from pyspark.sql import functions as F

    cutoffs = with_cutoff(labels).select(
        "customer_id", "ds", F.unix_micros("cutoff").alias("cutoff_us")
    )
    history_us = config.max_window * MICROS_PER_DAY
    return (
        events.select(
            "customer_id",
            F.unix_micros("event_time").alias("event_us"),
            "event_type",
            "channel",
            "amount",
        )
        .join(cutoffs, "customer_id")
        .where(
            (F.col("event_us") < F.col("cutoff_us"))
            & (F.col("event_us") >= F.col("cutoff_us") - F.lit(history_us))
        )
        .withColumn(
            "days_before",
            F.expr(f"(cutoff_us - event_us + {MICROS_PER_DAY - 1}) div {MICROS_PER_DAY}"),
        )
    )


def event_features(events: DataFrame, labels: DataFrame, config: FeatureConfig) -> DataFrame:
    """Windowed recency/frequency/monetary features per label, in one aggregation.

    Every window is a conditional sum over the label's history, so the partial aggregation
    before the shuffle already collapses the events to one row per label. Active days use a
    bitmap per label (bit ``d - 1`` set when there was an event ``d`` days before the cutoff,
    in 64-day words), so a window's count of distinct days is a population count.
    """
    from pyspark.sql import functions as F

    history = event_history(events, labels, config)
    words = (config.max_window + 63) // 64
    day_bit = F.col("days_before") - F.lit(1)

    def within(window: int) -> Column:
        return F.col("days_before") <= window

    def count_if(condition: Column, window: int) -> Column:
        return F.sum((within(window) & condition).cast("int")).cast("long")

    aggregates = [
        ((F.first("cutoff_us") - F.max("event_us")) / F.lit(float(MICROS_PER_DAY))).alias(
            "recency_days"
        )
    ]
    aggregates += [
        F.bit_or(
            F.when(
                (day_bit >= 64 * k) & (day_bit < 64 * (k + 1)),
                F.expr(f"shiftleft(1L, CAST(days_before - {1 + 64 * k} AS INT))"),
            ).otherwise(F.lit(0).cast("long"))
        ).alias(f"days_mask_{k}")
        for k in range(words)
    ]
    is_amount = F.col("event_type") == config.amount_event_type
    for w in config.windows_days:
        aggregates += [
            F.sum(within(w).cast("int")).cast("long").alias(f"events_{w}d"),
            F.coalesce(F.sum(F.when(within(w) & is_amount, F.col("amount"))), F.lit(0.0))
            .cast("double")
            .alias(f"amount_{w}d"),
        ]
        aggregates += [
            count_if(F.col("event_type") == t, w).alias(f"{t}_{w}d") for t in config.event_types
        ]
    cw = config.channel_window_days
    aggregates += [
        count_if(F.col("channel") == c, cw).alias(f"channel_{c}_{cw}d") for c in config.channels
    ]
    features = history.groupBy("customer_id", "ds").agg(*aggregates)
    for w in config.windows_days:
        active = F.lit(0)
        for k in range(words):
            bits = min(max(w - 64 * k, 0), 64)
            if bits:
                mask = -1 if bits == 64 else (1 << bits) - 1
                word = F.col(f"days_mask_{k}").bitwiseAND(F.lit(mask).cast("long"))
                active = active + F.bit_count(word)
        features = features.withColumn(f"active_days_{w}d", active.cast("long"))
    for a, b in config.trends:
        features = features.withColumn(
            f"trend_events_{a}d_{b}d",
            F.col(f"events_{a}d") / F.lit(float(a)) - F.col(f"events_{b}d") / F.lit(float(b)),
        )
    return features.drop(*[f"days_mask_{k}" for k in range(words)])


def attributes_as_of(customers: DataFrame, labels: DataFrame) -> DataFrame:
    """Each label's customer row from the newest daily snapshot before the label's ``ds``.

    ``customers`` holds daily snapshots (its ``ds`` is the day whose end the row describes),
    so a snapshot dated ``ds - 1`` is the state at the label's cutoff; rows of the label's own
    day or later (a plan changed because the customer churned) are never used.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    snapshots = customers.withColumnRenamed("ds", "snapshot_ds")
    newest_first = Window.partitionBy("customer_id", "ds").orderBy(F.desc("snapshot_ds"))
    return (
        labels.select("customer_id", "ds")
        .join(snapshots, "customer_id")
        .where(F.col("snapshot_ds") < F.col("ds"))
        .withColumn("_newest", F.row_number().over(newest_first))
        .where(F.col("_newest") == 1)
        .drop("_newest", "snapshot_ds")
    )


def attribute_features(customers: DataFrame, labels: DataFrame, config: FeatureConfig) -> DataFrame:
    """Tenure at the label date and the customer's attributes as of the label's cutoff."""
    from pyspark.sql import functions as F

    columns = [
        F.datediff(F.to_date(F.col("ds")), F.col("signup_date")).cast("long").alias("tenure_days"),
        *[F.col(c).cast("double").alias(c) for c in config.numeric],
        *[F.col(c).cast("int").alias(c) for c in config.boolean],
        *[F.col(c).cast("string").alias(c) for c in config.categorical],
    ]
    return attributes_as_of(customers, labels).select("customer_id", "ds", *columns)


def split_column(fractions: dict[str, float]) -> Column:
    """``train``/``valid``/``test`` from SHA-256 of the customer id (stable across engines)."""
    from pyspark.sql import functions as F

    bucket = F.conv(F.substring(F.sha2(F.col("customer_id").cast("string"), 256), 1, 8), 16, 10)
    position = bucket.cast("double") / F.lit(float(16**8))
    train_end = fractions["train"]
    valid_end = train_end + fractions["valid"]
    return (
        F.when(position < train_end, "train").when(position < valid_end, "valid").otherwise("test")
    )


def feature_rows(
    customers: DataFrame, events: DataFrame, population: DataFrame, config: FeatureConfig
) -> DataFrame:
    """Every feature of each ``(customer_id, ds)`` row of ``population`` (other columns of the
    population, such as a label, are kept). The one implementation behind training and
    inference features.

    Customers without events in the window get zero counts and ``recency_days`` equal to the
    longest window (no activity seen).
    """
    keyed = population.select("customer_id", "ds")
    activity = event_features(events, keyed, config)
    attributes = attribute_features(customers, keyed, config)
    joined = population.join(attributes, list(KEYS), "inner").join(activity, list(KEYS), "left")
    fills: dict[str, Any] = {name: 0 for name in config.event_feature_names()}
    fills["recency_days"] = float(config.max_window)
    return joined.fillna(fills)


def build_churn_features(
    customers: DataFrame,
    events: DataFrame,
    labels: DataFrame,
    config: FeatureConfig,
    out_of_time_ds: str | None = None,
) -> DataFrame:
    """The training feature set: one row per label, features in config order, label and split
    last.

    :param out_of_time_ds: labels of this day form the ``oot`` split instead, and only those of
        customers in the test split (never trained on, and a later day than trained on)
    """
    from pyspark.sql import functions as F

    labelled = labels.select("customer_id", "ds", F.col(config.label).cast("int").alias("label"))
    features = feature_rows(customers, events, labelled, config).select(
        "customer_id",
        "ds",
        *config.feature_names(),
        "label",
        split_column(config.split).alias("split"),
    )
    if out_of_time_ds is None:
        return features
    later = F.col("ds") == F.lit(out_of_time_ds)
    return features.where(~later | (F.col("split") == "test")).withColumn(
        "split", F.when(later, F.lit(OUT_OF_TIME)).otherwise(F.col("split"))
    )


def scoring_population(customers: DataFrame, ds: str) -> DataFrame:
    """The customers to score as of ``ds``: everyone in a snapshot before ``ds`` who signed up
    strictly before it (as for labels), with ``ds`` as their row's date."""
    from pyspark.sql import functions as F

    return (
        customers.where((F.col("ds") < F.lit(ds)) & (F.col("signup_date") < F.to_date(F.lit(ds))))
        .select("customer_id", F.lit(ds).alias("ds"))
        .distinct()
    )


def build_inference_features(
    customers: DataFrame, events: DataFrame, ds: str, config: FeatureConfig
) -> DataFrame:
    """Features of every active customer as of ``ds``, computed exactly as for training."""
    population = scoring_population(customers, ds)
    return feature_rows(customers, events, population, config).select(
        "customer_id", "ds", *config.feature_names()
    )


def feature_statistics(features: DataFrame, config: FeatureConfig) -> dict[str, Any]:
    """Per-feature statistics of the train split (mean, std, min, max, nulls; vocabularies)."""
    from pyspark.sql import functions as F

    train = features.where(F.col("split") == "train")
    numeric = [n for n in config.feature_names() if n not in config.categorical]
    aggregates = []
    for name in numeric:
        column = F.col(name).cast("double")
        aggregates += [
            F.mean(column).alias(f"{name}__mean"),
            F.stddev_pop(column).alias(f"{name}__std"),
            F.min(column).alias(f"{name}__min"),
            F.max(column).alias(f"{name}__max"),
            F.sum(F.col(name).isNull().cast("int")).alias(f"{name}__nulls"),
        ]
    row = train.agg(*aggregates).first()
    values = row.asDict() if row is not None else {}
    stats: dict[str, Any] = {}
    for name in numeric:
        stats[name] = {
            key: (None if values.get(f"{name}__{key}") is None else float(values[f"{name}__{key}"]))
            for key in ("mean", "std", "min", "max", "nulls")
        }
    for name in config.categorical:
        counts = train.groupBy(name).count().orderBy(F.desc("count"), F.asc(name)).collect()
        stats[name] = {"vocabulary": {str(r[name]): int(r["count"]) for r in counts}}
    return stats
