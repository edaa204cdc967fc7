"""Data validation of snapshots and feature sets: bad data is refused early, by name, and
nothing is published; warnings and drift are reported."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlops_jobs import lake
from mlops_jobs.churn import features as churn_features
from mlops_jobs.validation import (
    DRIFT_TOP_VALUES,
    OTHER_BIN,
    DataValidationError,
    ExpectationError,
    ValidationReport,
    check_table,
    distributions,
    load_expectations,
    population_stability,
    top_values,
)
from mlops_localstack.demo.generator import DemoSpec
from tests.support import write_demo_snapshot

SPEC = DemoSpec(customers=150, days=100, end_ds="2026-03-01", seed=5)
DS = SPEC.end_ds


def load(snapshot: str) -> tuple[lake.Box, dict[str, Any]]:
    return churn_features.load_snapshot(
        snapshot, churn_features.FeatureConfig.load(), tuple(churn_features.REQUIRED_COLUMNS)
    )


def bad_data(frames: dict[str, Any]) -> None:
    """A third of the labels NULL, three customers duplicated, an unknown event type."""
    labels = frames["churn_labels"].copy()
    labels["churned"] = labels["churned"].astype("float64")
    labels.loc[labels.index[: len(labels) // 3], "churned"] = np.nan
    frames["churn_labels"] = labels
    customers = frames["customers"]
    frames["customers"] = customers._append(customers.iloc[:3], ignore_index=True)
    events = frames["events"].copy()
    events.loc[events.index[:7], "event_type"] = "refund"
    frames["events"] = events


def test_clean_snapshot_passes_and_drift_needs_the_day_before(tmp_path: Path, spark: Any) -> None:
    snapshot = write_demo_snapshot(tmp_path, SPEC)
    box, tables = load(snapshot)
    report = churn_features.validate_snapshot(box, tables)
    assert report.failures == [] and report.drift == {}
    checks = {(r.check, r.table, r.column) for r in report.results}
    assert ("null_rate", "churn_labels", "churned") in checks
    assert ("duplicate_keys", "customers", "customer_id,ds") in checks
    assert ("outside_partition", "events", "event_time") in checks
    labels = next(r for r in report.results if r.table == "churn_labels")
    assert labels.partition == f"ds={DS}"

    write_demo_snapshot(tmp_path, SPEC, ds="2026-02-28")
    report = churn_features.validate_snapshot(box, tables)
    assert set(report.drift) == {"customers", "events", "churn_labels"}
    assert 0 <= report.drift["customers"]["plan"] < 0.25  # the same customers, a day apart
    assert any(r.check == "row_count_change" for r in report.results)


def test_bad_data_is_refused_by_check_table_partition_and_value(tmp_path: Path, spark: Any) -> None:
    snapshot = write_demo_snapshot(tmp_path, SPEC, tamper=bad_data)
    box, tables = load(snapshot)
    with pytest.raises(DataValidationError) as raised:
        churn_features.validate_snapshot(box, tables)
    message = str(raised.value)
    assert f"data validation of snapshot {box.uri} failed" in message
    null_labels = rf"null_rate of churn_labels\.churned in ds={DS} is 0\.3\d*, expected <= 0"
    assert re.search(null_labels, message)
    assert "duplicate_keys of customers.customer_id,ds in ds=" in message
    assert "is 3, expected 0" in message
    assert "unknown_values of events.event_type" in message and "e.g. 'refund'" in message
    failed = {(r.check, r.table) for r in raised.value.report.failures}
    assert failed == {
        ("null_rate", "churn_labels"),
        ("duplicate_keys", "customers"),
        ("unknown_values", "events"),
    }


def test_the_feature_job_publishes_nothing_from_bad_data(tmp_path: Path, spark: Any) -> None:
    snapshot = write_demo_snapshot(tmp_path, SPEC, tamper=bad_data)
    output = lake.box_uri(str(tmp_path), "churn/features", DS)
    with pytest.raises(DataValidationError):
        churn_features.run(snapshot, output)
    with pytest.raises(lake.LakeError):
        lake.open_box(output)
    assert lake.versions(lake.locate(output)) == []


def test_severity_warn_reports_without_failing(tmp_path: Path, spark: Any) -> None:
    expectations = json.loads(churn_features.EXPECTATIONS_PATH.read_text())
    for table in expectations["snapshot"].values():
        for column in table.get("columns", {}).values():
            column["severity"] = "warn"
        table["key_severity"] = "warn"
    path = tmp_path / "expectations.json"
    path.write_text(json.dumps(expectations))
    box, tables = load(write_demo_snapshot(tmp_path / "lake", SPEC, tamper=bad_data))
    report = churn_features.validate_snapshot(box, tables, path)
    assert report.failures == []
    assert {(r.check, r.table) for r in report.warnings} >= {
        ("null_rate", "churn_labels"),
        ("duplicate_keys", "customers"),
        ("unknown_values", "events"),
    }
    table = report.table()
    assert table.splitlines()[1].startswith("warn")
    assert report.as_dict()["warnings"] == len(report.warnings)


def test_feature_set_checks_labels_and_keys(spark: Any) -> None:
    day = "2026-03-01"
    rows = [(1, day, 1), (1, day, 0), (2, day, None), (3, day, 2), (None, day, 0)]
    frame = spark.createDataFrame(rows, "customer_id long, ds string, label int")
    raw = json.loads(churn_features.EXPECTATIONS_PATH.read_text())
    expectation = load_expectations({"features": raw["features"]})["features"]
    results, _ = check_table(frame, "features", "ds=2026-03-01", expectation)
    report = ValidationReport("features", results)
    failed = {(r.check, r.column): r.observed for r in report.failures}
    assert failed == {
        ("null_keys", "customer_id,ds"): 1,  # not also counted as a duplicate
        ("duplicate_keys", "customer_id,ds"): 1,
        ("null_rate", "label"): 0.2,
        ("unknown_values", "label"): 1,
    }


def test_nan_counts_as_missing_and_days_outside_their_partition_are_found(spark: Any) -> None:
    rows = [
        (1, "2026-03-01 10:00:00", "2026-03-01", 5.0),
        (2, "2026-03-02 00:00:01", "2026-03-01", float("nan")),  # the next day
        (3, None, "2026-03-01", 1.0),  # no time at all
        (4, "2026-03-01 23:59:59", "not-a-day", 2.0),  # an unreadable partition value
    ]
    frame = spark.createDataFrame(rows, "id long, t string, ds string, amount double").selectExpr(
        "id", "to_timestamp(t) AS t", "ds", "amount"
    )
    expectation = load_expectations(
        {"e": {"columns": {"amount": {"max_null_rate": 0}}, "in_partition": {"column": "t"}}}
    )["e"]
    results, _ = check_table(frame, "e", "ds=2026-03-01", expectation)
    failed = {r.check: r.observed for r in results if not r.passed}
    assert failed == {"null_rate": 0.25, "outside_partition": 3}


def test_drift_on_a_column_the_previous_snapshot_lacks_is_a_warning(spark: Any) -> None:
    now = spark.createDataFrame([("a", 1.0), ("b", 2.0)], "plan string, fee double")
    before = spark.createDataFrame([("a",), ("b",)], "plan string")
    expectation = load_expectations({"t": {"drift": {"columns": ["plan", "fee"]}}})["t"]
    results, drift = check_table(now, "t", "ds=2026-03-01", expectation, before)
    assert drift == {"plan": 0.0}
    (missing,) = [r for r in results if r.column == "fee"]
    assert missing.severity == "warn" and not missing.passed
    assert "previous snapshot has no such column" in missing.describe()


def test_population_stability_grows_with_the_shift(spark: Any) -> None:
    rng = np.random.default_rng(3)
    base = spark.createDataFrame([(float(v),) for v in rng.normal(0, 1, 2000)], "x double")
    same = spark.createDataFrame([(float(v),) for v in rng.normal(0, 1, 2000)], "x double")
    moved = spark.createDataFrame([(float(v),) for v in rng.normal(1, 1, 2000)], "x double")
    assert population_stability(same, base, "x") < 0.05
    assert population_stability(moved, base, "x") > 0.25


def test_a_high_cardinality_column_drifts_over_its_top_values_and_the_rest(spark: Any) -> None:
    """An identifier-like column is binned by the reference's most frequent values plus one bin
    for the rest, so its bins stay few however many values it has."""
    rows = [("web",)] * 300 + [("store",)] * 100 + [(f"id-{i}",) for i in range(1000)]
    base = spark.createDataFrame(rows + [(None,)] * 5, "v string")
    top = top_values(base, ["v"])["v"]
    assert len(top) == DRIFT_TOP_VALUES
    # by count, ties broken by value: the same bins whatever the rows' order
    assert top[:4] == ["web", "store", "id-0", "id-1"]
    assert top_values(base.orderBy("v", ascending=False), ["v"]) == {"v": top}
    counts = distributions(base, ["v"], {}, {"v": top})["v"]
    assert len(counts) == DRIFT_TOP_VALUES + 2  # the top values, the rest, NULL
    assert counts[OTHER_BIN] == 1000 - (DRIFT_TOP_VALUES - 2) and counts["<null>"] == 5
    # new identifiers in place of old ones are not drift; a changed share of "web" is
    renamed = spark.createDataFrame(
        [("web",)] * 300 + [("store",)] * 100 + [(f"new-{i}",) for i in range(1000)], "v string"
    )
    assert population_stability(renamed, base, "v") < 0.25
    moved = spark.createDataFrame([("web",)] * 1200 + [("store",)] * 200, "v string")
    assert population_stability(moved, base, "v") > 0.25


@pytest.mark.parametrize(
    ("raw", "fault"),
    [
        ({"t": {"colums": {}}}, "t: unknown expectation(s) colums"),
        ({"t": {"columns": {"c": {"severity": "fatal"}}}}, "t.c: severity must be one of"),
        ({"t": {"columns": {"c": {"max_null_rate": 2}}}}, "t.c.max_null_rate must be within"),
        ({"t": {"drift": {"columns": ["c"], "psi": 1}}}, "t.drift: unknown expectation(s) psi"),
        ({"t": {"columns": {"c": {"allowed": [0, None]}}}}, "t.c.allowed must be a list of values"),
    ],
)
def test_bad_expectations_are_named(raw: dict[str, Any], fault: str) -> None:
    with pytest.raises(ExpectationError, match=re.escape(fault)):
        load_expectations(raw)


def test_a_column_the_table_lacks_is_named(spark: Any) -> None:
    frame = spark.createDataFrame([(1,)], "customer_id long")
    expectation = load_expectations({"t": {"columns": {"plan": {"max_null_rate": 0}}}})["t"]
    with pytest.raises(ExpectationError, match="table t has no column"):
        check_table(frame, "t", "ds=2026-03-01", expectation)
