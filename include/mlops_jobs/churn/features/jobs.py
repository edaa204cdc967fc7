"""The feature jobs' I/O: the snapshot read and validated, features built, validated and
published to the lake. ``run`` (training features) and ``run_inference`` (inference features)
share one skeleton, ``publish_features``; only what they build and write differs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_jobs import lake
from mlops_jobs.churn.features.config import (
    CONFIG_PATH,
    EXPECTATIONS_PATH,
    KEYS,
    OUT_OF_TIME,
    SPLITS,
    FeatureConfig,
)
from mlops_jobs.churn.features.transforms import (
    build_churn_features,
    build_inference_features,
    feature_statistics,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mlops_jobs.validation import ValidationReport


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


#: What a feature job builds from the snapshot's tables, given its ``ds``: the features and the
#: manifest fields of its own.
Build = Callable[
    [lake.Box, dict[str, "DataFrame"], FeatureConfig, str], tuple["DataFrame", dict[str, Any]]
]
#: How a feature job writes its features into the draft version (of features built from the
#: snapshot ``lake.Box``); returns more manifest fields.
Write = Callable[[lake.Draft, "DataFrame", FeatureConfig, lake.Box], dict[str, Any]]


def publish_features(
    snapshot: str,
    output: str,
    config_path: str | None,
    tables: tuple[str, ...],
    entry: str,
    build: Build,
    write: Write,
) -> dict[str, Any]:
    """The skeleton of both feature jobs: read and validate the snapshot's ``tables``, ``build``
    the features, validate them against the ``entry`` expectations, ``write`` them into a new
    version of ``output`` and commit it with the manifest.

    :return: the committed manifest (its ``uri`` key names the version)
    """
    config = FeatureConfig.load(config_path)
    snapshot_box, frames = load_snapshot(snapshot, config, tables)
    ds = snapshot_box.manifest.get("ds")
    if not ds:
        raise SnapshotError(f"snapshot {snapshot_box.uri} has no ds in its manifest")
    snapshot_report = validate_snapshot(snapshot_box, frames)
    built, fields = build(snapshot_box, frames, config, str(ds))
    features = built.cache()
    try:
        features_report = validate_features(features, str(ds), entry)
        with lake.publishing(output) as draft:
            written = write(draft, features, config, snapshot_box)
            box = draft.commit(
                {
                    "format_version": 1,
                    "dataset": f"churn/{entry}",
                    "ds": ds,
                    "snapshot": _snapshot_reference(snapshot_box),
                    "features": config.feature_names(),
                    "categorical": list(config.categorical),
                    "keys": list(KEYS),
                    **fields,
                    **written,
                    "validation": {
                        "snapshot": snapshot_report.as_dict(),
                        "features": features_report.as_dict(),
                    },
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                }
            )
    finally:
        features.unpersist()
    return {**box.manifest, "uri": box.uri}


def run(snapshot: str, output: str, config_path: str | None = None) -> dict[str, Any]:
    """Build the training feature set from ``snapshot`` (labels of ``ds - span_days``, and with
    a span an out-of-time split of ``ds``) and publish it as a new version of ``output``.

    :return: the committed manifest (its ``uri`` key names the version)
    """
    from pyspark.sql import functions as F

    from mlops_jobs.spark.session import write_sorted_parquet

    def build(
        box: lake.Box, frames: dict[str, DataFrame], config: FeatureConfig, ds: str
    ) -> tuple[DataFrame, dict[str, Any]]:
        later_days = int(box.manifest.get("span_days") or 0)
        label_ds = (dt.date.fromisoformat(ds) - dt.timedelta(days=later_days)).isoformat()
        out_of_time_ds = ds if later_days else None
        labels = frames["churn_labels"].where(F.col("ds").isin(sorted({label_ds, ds})))
        features = build_churn_features(
            frames["customers"], frames["events"], labels, config, out_of_time_ds
        )
        return features, {
            "label": "label",
            "label_ds": label_ds,
            "out_of_time": (
                {"ds": out_of_time_ds, "days_after_training": later_days}
                if out_of_time_ds
                else None
            ),
            "config": json.loads(Path(config_path or CONFIG_PATH).read_text()),
        }

    def write(
        draft: lake.Draft, features: DataFrame, config: FeatureConfig, box: lake.Box
    ) -> dict[str, Any]:
        write_sorted_parquet(features, draft.location.spark, KEYS, partition_by=("split",))
        counts = {r["split"]: int(r["count"]) for r in features.groupBy("split").count().collect()}
        if sum(counts.values()) == 0:
            raise SnapshotError(f"snapshot {box.uri} yields no labelled rows")
        label_rate = features.agg(F.mean("label")).first()
        # with a span, the run's own ds is the out-of-time split (listed even when empty)
        splits = (*SPLITS, OUT_OF_TIME) if int(box.manifest.get("span_days") or 0) else SPLITS
        return {
            "schema": [
                {"name": f.name, "type": f.dataType.simpleString()}
                for f in features.schema.fields
                if f.name != "split"
            ],
            "splits": {s: {"path": f"split={s}", "rows": counts.get(s, 0)} for s in splits},
            "label_rate": (
                float(label_rate[0]) if label_rate and label_rate[0] is not None else None
            ),
            "statistics": feature_statistics(features, config),
        }

    return publish_features(
        snapshot, output, config_path, tuple(REQUIRED_COLUMNS), "features", build, write
    )


def run_inference(snapshot: str, output: str, config_path: str | None = None) -> dict[str, Any]:
    """Build the inference features (every active customer as of the snapshot's ``ds``, no
    label) from a snapshot of customers and events, and publish them as a new version of
    ``output``.

    :return: the committed manifest (its ``uri`` key names the version)
    """
    from mlops_jobs.spark.session import write_sorted_parquet

    def build(
        box: lake.Box, frames: dict[str, DataFrame], config: FeatureConfig, ds: str
    ) -> tuple[DataFrame, dict[str, Any]]:
        features = build_inference_features(frames["customers"], frames["events"], ds, config)
        return features, {"path": "data"}

    def write(
        draft: lake.Draft, features: DataFrame, config: FeatureConfig, box: lake.Box
    ) -> dict[str, Any]:
        write_sorted_parquet(features, draft.location.child("data").spark, ("customer_id",))
        rows = features.count()
        if rows == 0:
            raise SnapshotError(
                f"snapshot {box.uri} has no customers to score as of {box.manifest['ds']}"
            )
        return {
            "rows": rows,
            "schema": [
                {"name": f.name, "type": f.dataType.simpleString()} for f in features.schema.fields
            ],
        }

    return publish_features(
        snapshot, output, config_path, INFERENCE_TABLES, "inference_features", build, write
    )
