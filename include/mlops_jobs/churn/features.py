"""Point-in-time correct churn features from a Hive snapshot (Spark).

Every transform is pure (``DataFrame -> DataFrame``, inputs untouched); ``run`` does the I/O.
A label for day ``ds`` sees only events strictly before its cutoff (``ds`` 00:00 UTC) and within
the longest window, and customer attributes from the newest daily snapshot before the cutoff.
The train/valid/test split is a function of a SHA-256 of the customer id, so it is the same in
every run and every engine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_jobs import lake
from mlops_jobs.hql import validate_identifier

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from mlops_jobs.validation import ValidationReport

CONFIG_PATH = Path(__file__).with_name("feature_config.json")
EXPECTATIONS_PATH = Path(__file__).with_name("expectations.json")
SPLITS = ("train", "valid", "test")
#: Rows of the run's own ``ds`` for customers of the test split, when the model trains on an
#: earlier day: the model is tested on a later day than it learned from.
OUT_OF_TIME = "oot"
KEYS = ("customer_id", "ds")
MICROS_PER_DAY = 86_400_000_000


class FeatureConfigError(ValueError):
    """The feature configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class FeatureConfig:
    """The feature families and windows, from ``feature_config.json``."""

    windows_days: tuple[int, ...]
    event_types: tuple[str, ...]
    channels: tuple[str, ...]
    channel_window_days: int
    trends: tuple[tuple[int, int], ...]
    numeric: tuple[str, ...]
    boolean: tuple[str, ...]
    categorical: tuple[str, ...]
    amount_event_type: str = "purchase"
    label: str = "churned"
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "valid": 0.15, "test": 0.15}
    )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FeatureConfig:
        try:
            attributes = raw["attributes"]
            config = cls(
                windows_days=tuple(int(w) for w in raw["windows_days"]),
                event_types=tuple(raw["event_types"]),
                channels=tuple(raw["channels"]),
                channel_window_days=int(raw["channel_window_days"]),
                trends=tuple((int(a), int(b)) for a, b in raw.get("trends", [])),
                numeric=tuple(attributes.get("numeric", [])),
                boolean=tuple(attributes.get("boolean", [])),
                categorical=tuple(attributes.get("categorical", [])),
                amount_event_type=raw.get("amount_event_type", "purchase"),
                label=raw.get("label", "churned"),
                split=dict(raw.get("split", {"train": 0.7, "valid": 0.15, "test": 0.15})),
            )
        except KeyError as err:
            raise FeatureConfigError(f"feature config is missing the key {err}") from None
        config.validate()
        return config

    @classmethod
    def load(cls, path: str | Path | None = None) -> FeatureConfig:
        return cls.from_dict(json.loads(Path(path or CONFIG_PATH).read_text()))

    def validate(self) -> None:
        if not self.windows_days or any(w < 1 for w in self.windows_days):
            raise FeatureConfigError(f"windows_days must be positive, got {self.windows_days}")
        for a, b in self.trends:
            if a not in self.windows_days or b not in self.windows_days or a >= b:
                raise FeatureConfigError(f"trend ({a}, {b}) needs two windows, shorter first")
        if self.channel_window_days not in self.windows_days:
            raise FeatureConfigError(
                f"channel_window_days {self.channel_window_days} is not one of windows_days"
            )
        if self.amount_event_type not in self.event_types:
            raise FeatureConfigError(f"amount_event_type {self.amount_event_type!r} is unknown")
        if set(self.split) != set(SPLITS) or abs(sum(self.split.values()) - 1.0) > 1e-9:
            raise FeatureConfigError(f"split must give {SPLITS} fractions summing to 1")
        for name in (*self.event_types, *self.channels):
            validate_identifier(name, "event type or channel")

    @property
    def max_window(self) -> int:
        return max(self.windows_days)

    def event_feature_names(self) -> list[str]:
        names = ["recency_days"]
        for w in self.windows_days:
            names += [f"events_{w}d", f"active_days_{w}d", f"amount_{w}d"]
            names += [f"{t}_{w}d" for t in self.event_types]
        names += [f"channel_{c}_{self.channel_window_days}d" for c in self.channels]
        names += [f"trend_events_{a}d_{b}d" for a, b in self.trends]
        return names

    def feature_names(self) -> list[str]:
        return [
            *self.event_feature_names(),
            "tenure_days",
            *self.numeric,
            *self.boolean,
            *self.categorical,
        ]


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


class SnapshotError(ValueError):
    """The input snapshot is missing, incomplete or lacks required columns."""


REQUIRED_COLUMNS = {
    "customers": ("customer_id", "signup_date", "ds"),
    "events": ("customer_id", "event_time", "event_type", "channel", "amount"),
    "churn_labels": ("customer_id", "ds"),
}
INFERENCE_TABLES = ("customers", "events")


def open_snapshot(snapshot: str, needed: tuple[str, ...] = tuple(REQUIRED_COLUMNS)) -> lake.Box:
    """The snapshot's committed version, checked for the ``needed`` tables and the columns the
    job reads."""
    try:
        box = lake.open_box(snapshot)
    except lake.LakeError as err:
        raise SnapshotError(f"snapshot {snapshot}: {err}") from None
    snapshot = box.uri
    tables = box.manifest.get("tables", {})
    for alias in needed:
        required = REQUIRED_COLUMNS[alias]
        if alias not in tables:
            raise SnapshotError(f"snapshot {snapshot} has no table {alias!r}")
        present = {c["name"] for c in tables[alias].get("schema", [])}
        missing = [c for c in required if c not in present]
        if missing:
            raise SnapshotError(f"snapshot {snapshot}: {alias} lacks columns {', '.join(missing)}")
    return box


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


def load_snapshot(
    snapshot: str, config: FeatureConfig, needed: tuple[str, ...]
) -> tuple[lake.Box, dict[str, DataFrame]]:
    """The snapshot's committed version and tables (as Spark DataFrames), checked first."""
    from mlops_jobs.spark.session import get_spark

    box = open_snapshot(snapshot, needed)  # before paying for Spark
    lookback = box.manifest.get("lookback_days")
    if lookback is not None and int(lookback) < config.max_window:
        raise SnapshotError(
            f"snapshot {box.uri} holds {lookback} days of events but the longest feature window "
            f"is {config.max_window} days; extract it with lookback_days >= {config.max_window}"
        )
    spark = get_spark("churn-features")
    tables = {
        alias: spark.read.parquet(box.path(box.manifest["tables"][alias]["path"]).spark)
        for alias in needed
    }
    return box, tables


def previous_snapshot(box: lake.Box) -> lake.Box | None:
    """The committed snapshot of the day before ``box``'s ``ds`` in the same dataset, if any."""
    import datetime as dt

    ds = box.manifest.get("ds")
    version_dir = box.location.uri.rstrip("/")
    box_dir = version_dir.rsplit("/", 1)[0]
    if not ds or not box_dir.endswith(f"/ds={ds}"):
        return None
    day_before = (dt.date.fromisoformat(str(ds)) - dt.timedelta(days=1)).isoformat()
    try:
        return lake.open_box(f"{box_dir.removesuffix(f'ds={ds}')}ds={day_before}")
    except lake.LakeError:
        return None


def validate_snapshot(
    box: lake.Box, tables: dict[str, DataFrame], expectations_path: str | Path | None = None
) -> ValidationReport:
    """Check the snapshot's tables against the ``snapshot`` expectations, comparing row counts
    and distributions with the previous day's snapshot when there is one; print the results
    as a table and raise ``DataValidationError`` when a ``fail`` check fails."""
    from mlops_jobs.spark.session import get_spark
    from mlops_jobs.validation import (
        CheckResult,
        ValidationReport,
        check_table,
        load_expectations,
    )

    raw = json.loads(Path(expectations_path or EXPECTATIONS_PATH).read_text())
    expectations = load_expectations(raw.get("snapshot", {}))
    previous = previous_snapshot(box)
    report = ValidationReport(subject=f"snapshot {box.uri}")
    for alias, df in tables.items():
        if alias not in expectations:
            continue
        before = None
        if previous is not None and alias in previous.manifest.get("tables", {}):
            path = previous.path(previous.manifest["tables"][alias]["path"]).spark
            before = get_spark("churn-features").read.parquet(path)
        table = box.manifest.get("tables", {}).get(alias, {})
        results, drift = check_table(
            df,
            alias,
            _partition_label(box, alias),
            expectations[alias],
            before,
            partition_column=table.get("partition_column") or "ds",
        )
        report.results.extend(results)
        if drift:
            report.drift[alias] = drift
    if previous is None:
        report.results.append(
            CheckResult(
                "previous_snapshot", "*", f"ds={box.manifest.get('ds')}", None, None,
                "the day before's snapshot", "warn", False,
                "none committed: row-count change and drift not checked",
            )
        )  # fmt: skip
    compared = f"compared with {previous.uri}" if previous else "no previous snapshot to compare"
    print(f"data validation of {report.subject} ({compared}):\n{report.table()}", flush=True)
    report.raise_for_failures()
    return report


def validate_features(
    features: DataFrame, ds: str, entry: str, expectations_path: str | Path | None = None
) -> ValidationReport:
    """Check a feature set against the ``entry`` expectations before it is published."""
    from mlops_jobs.validation import ValidationReport, check_table, load_expectations

    raw = json.loads(Path(expectations_path or EXPECTATIONS_PATH).read_text())
    report = ValidationReport(subject=f"churn/{entry} ds={ds}")
    if entry in raw:
        expectation = load_expectations({entry: raw[entry]})[entry]
        results, _ = check_table(features, entry, f"ds={ds}", expectation)
        report.results.extend(results)
    print(f"data validation of {report.subject}:\n{report.table()}", flush=True)
    report.raise_for_failures()
    return report


def _partition_label(box: lake.Box, alias: str) -> str:
    table = box.manifest.get("tables", {}).get(alias, {})
    partitions = table.get("partitions") or {}
    first, last = partitions.get("first"), partitions.get("last")
    if first and last:
        return f"ds={first}" if first == last else f"ds={first}..{last}"
    return f"snapshot ds={box.manifest.get('ds')}"


def _snapshot_reference(box: lake.Box) -> dict[str, Any]:
    return {"uri": box.uri, "content_hash": box.manifest.get("content_hash")}


def run(snapshot: str, output: str, config_path: str | None = None) -> dict[str, Any]:
    """Build the feature set from ``snapshot`` and publish it as a new version of ``output``.

    :return: the committed manifest (its ``uri`` key names the version)
    """
    import datetime as dt

    from pyspark.sql import functions as F

    from mlops_jobs.spark.session import write_sorted_parquet

    config = FeatureConfig.load(config_path)
    snapshot_box, tables = load_snapshot(snapshot, config, tuple(REQUIRED_COLUMNS))
    snapshot_report = validate_snapshot(snapshot_box, tables)
    ds = str(snapshot_box.manifest.get("ds"))
    later_days = int(snapshot_box.manifest.get("span_days") or 0)
    label_ds = (dt.date.fromisoformat(ds) - dt.timedelta(days=later_days)).isoformat()
    out_of_time_ds = ds if later_days else None
    labels = tables["churn_labels"].where(F.col("ds").isin(sorted({label_ds, ds})))
    features = build_churn_features(
        tables["customers"], tables["events"], labels, config, out_of_time_ds
    ).cache()
    splits = (*SPLITS, OUT_OF_TIME) if out_of_time_ds else SPLITS
    try:
        features_report = validate_features(features, ds, "features")
        with lake.publishing(output) as draft:
            write_sorted_parquet(features, draft.location.spark, KEYS, partition_by=("split",))
            counts = {
                r["split"]: int(r["count"]) for r in features.groupBy("split").count().collect()
            }
            if sum(counts.values()) == 0:
                raise SnapshotError(f"snapshot {snapshot_box.uri} yields no labelled rows")
            label_rate = features.agg(F.mean("label")).first()
            schema = [
                {"name": f.name, "type": f.dataType.simpleString()}
                for f in features.schema.fields
                if f.name != "split"
            ]
            box = draft.commit(
                {
                    "format_version": 1,
                    "dataset": "churn/features",
                    "ds": snapshot_box.manifest.get("ds"),
                    "snapshot": _snapshot_reference(snapshot_box),
                    "features": config.feature_names(),
                    "categorical": list(config.categorical),
                    "label": "label",
                    "keys": list(KEYS),
                    "schema": schema,
                    "splits": {s: {"path": f"split={s}", "rows": counts.get(s, 0)} for s in splits},
                    "label_ds": label_ds,
                    "out_of_time": (
                        {"ds": out_of_time_ds, "days_after_training": later_days}
                        if out_of_time_ds
                        else None
                    ),
                    "label_rate": float(label_rate[0])
                    if label_rate and label_rate[0] is not None
                    else None,
                    "statistics": feature_statistics(features, config),
                    "validation": {
                        "snapshot": snapshot_report.as_dict(),
                        "features": features_report.as_dict(),
                    },
                    "config": json.loads(Path(config_path or CONFIG_PATH).read_text()),
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            )
    finally:
        features.unpersist()
    return {**box.manifest, "uri": box.uri}


def run_inference(snapshot: str, output: str, config_path: str | None = None) -> dict[str, Any]:
    """Build the inference features (every active customer as of the snapshot's ``ds``, no
    label) from a snapshot of customers and events, and publish them as a new version of
    ``output``.

    :return: the committed manifest (its ``uri`` key names the version)
    """
    import datetime as dt

    from mlops_jobs.spark.session import write_sorted_parquet

    config = FeatureConfig.load(config_path)
    snapshot_box, tables = load_snapshot(snapshot, config, INFERENCE_TABLES)
    ds = snapshot_box.manifest.get("ds")
    if not ds:
        raise SnapshotError(f"snapshot {snapshot_box.uri} has no ds in its manifest")
    snapshot_report = validate_snapshot(snapshot_box, tables)
    features = build_inference_features(tables["customers"], tables["events"], ds, config).cache()
    try:
        features_report = validate_features(features, str(ds), "inference_features")
        with lake.publishing(output) as draft:
            write_sorted_parquet(features, draft.location.child("data").spark, ("customer_id",))
            rows = features.count()
            if rows == 0:
                raise SnapshotError(
                    f"snapshot {snapshot_box.uri} has no customers to score as of {ds}"
                )
            box = draft.commit(
                {
                    "format_version": 1,
                    "dataset": "churn/inference_features",
                    "ds": ds,
                    "snapshot": _snapshot_reference(snapshot_box),
                    "features": config.feature_names(),
                    "categorical": list(config.categorical),
                    "keys": list(KEYS),
                    "path": "data",
                    "rows": rows,
                    "validation": {
                        "snapshot": snapshot_report.as_dict(),
                        "features": features_report.as_dict(),
                    },
                    "schema": [
                        {"name": f.name, "type": f.dataType.simpleString()}
                        for f in features.schema.fields
                    ],
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            )
    finally:
        features.unpersist()
    return {**box.manifest, "uri": box.uri}
