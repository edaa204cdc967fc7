"""Data expectations, checked on Spark DataFrames before anything is built from them.

Expectations live in configuration (for the churn pipeline ``churn/expectations.json``), one
entry per table:

- ``key``: columns that identify a row; duplicates are counted.
- ``columns``: per column ``max_null_rate``, ``allowed`` values, ``min``/``max`` bounds and a
  ``severity``.
- ``in_partition``: a date or timestamp column whose day must be the row's ``ds`` partition.
- ``row_count``: the largest relative change of the row count against the previous snapshot.
- ``drift``: columns whose distribution is compared with the previous snapshot's, as a
  population stability index (PSI), with the largest acceptable value.

Each check has a severity: ``fail`` stops the pipeline with an error that names the check,
the table, the partition and the observed value; ``warn`` is reported only. All checks of a
table are one aggregation over it (plus one per drifting column), so validation costs a few
scans, not one per check. Results are plain data, kept in manifests and logged as a table.

Why not a validation library: pandera's PySpark backend (the light one that fits here) runs a
Spark job per check and reports pass or fail without the observed value, and it has no notion
of severity or of a comparison with the previous snapshot; Deequ needs a JVM package fetched at
run time; Great Expectations and Soda bring far more than these checks need.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SEVERITIES = ("warn", "fail")
#: PSI bins: deciles of the previous snapshot for numbers; for anything else its most frequent
#: values, each a bin, and one bin for every other value (so an identifier-like column never
#: brings millions of bins to the driver).
DRIFT_BINS = 10
DRIFT_TOP_VALUES = 20
OTHER_BIN = "<other>"
NULL_BIN = "<null>"
_EPSILON = 1e-4


class ExpectationError(ValueError):
    """The expectations configuration is invalid; the message names the entry."""


class DataValidationError(ValueError):
    """Data failed a ``fail`` expectation; the message names each failed check, its table,
    partition and observed value. Retrying cannot help."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class ColumnExpectation:
    max_null_rate: float | None = None
    allowed: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    severity: str = "fail"


@dataclass(frozen=True)
class TableExpectation:
    """What one table must satisfy (see the module docstring for the configuration)."""

    key: tuple[str, ...] = ()
    key_severity: str = "fail"
    columns: dict[str, ColumnExpectation] = field(default_factory=dict)
    in_partition: str | None = None
    in_partition_severity: str = "fail"
    max_row_change: float | None = None
    row_change_severity: str = "warn"
    drift_columns: tuple[str, ...] = ()
    max_drift: float = 0.25
    drift_severity: str = "warn"

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str) -> TableExpectation:
        known = {"key", "key_severity", "columns", "in_partition", "row_count", "drift"}
        _no_unknown(raw, known, where)
        columns = {}
        for name, spec in (raw.get("columns") or {}).items():
            _no_unknown(
                spec, {"max_null_rate", "allowed", "min", "max", "severity"}, f"{where}.{name}"
            )
            rate = spec.get("max_null_rate")
            if rate is not None and not 0 <= float(rate) <= 1:
                raise ExpectationError(f"{where}.{name}.max_null_rate must be within [0, 1]")
            allowed = spec.get("allowed")
            if allowed is not None and (
                not isinstance(allowed, list) or any(v is None for v in allowed)
            ):
                raise ExpectationError(
                    f"{where}.{name}.allowed must be a list of values without null "
                    "(max_null_rate limits nulls)"
                )
            columns[name] = ColumnExpectation(
                max_null_rate=None if rate is None else float(rate),
                allowed=None if allowed is None else tuple(allowed),
                min=spec.get("min"),
                max=spec.get("max"),
                severity=_severity(spec.get("severity", "fail"), f"{where}.{name}"),
            )
        in_partition = raw.get("in_partition") or {}
        row_count = raw.get("row_count") or {}
        drift = raw.get("drift") or {}
        _no_unknown(in_partition, {"column", "severity"}, f"{where}.in_partition")
        _no_unknown(row_count, {"max_change", "severity"}, f"{where}.row_count")
        _no_unknown(drift, {"columns", "max_psi", "severity"}, f"{where}.drift")
        return cls(
            key=tuple(raw.get("key") or ()),
            key_severity=_severity(raw.get("key_severity", "fail"), f"{where}.key_severity"),
            columns=columns,
            in_partition=in_partition.get("column"),
            in_partition_severity=_severity(
                in_partition.get("severity", "fail"), f"{where}.in_partition"
            ),
            max_row_change=row_count.get("max_change"),
            row_change_severity=_severity(row_count.get("severity", "warn"), f"{where}.row_count"),
            drift_columns=tuple(drift.get("columns") or ()),
            max_drift=float(drift.get("max_psi", 0.25)),
            drift_severity=_severity(drift.get("severity", "warn"), f"{where}.drift"),
        )


def load_expectations(source: str | Path | dict[str, Any]) -> dict[str, TableExpectation]:
    """Table expectations from a JSON file or a mapping (table alias -> expectation)."""
    raw = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    if not isinstance(raw, dict):
        raise ExpectationError("expectations must be a JSON object of tables")
    return {alias: TableExpectation.from_dict(spec, alias) for alias, spec in raw.items()}


@dataclass(frozen=True)
class CheckResult:
    """One check on one table: what was observed, what was expected, and the outcome."""

    check: str
    table: str
    partition: str
    column: str | None
    observed: float | None
    expected: str
    severity: str
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        observed = "n/a" if self.observed is None else _number(self.observed)
        detail = f" ({self.detail})" if self.detail else ""
        return (
            f"{self.check} of {target} in {self.partition} is {observed}, "
            f"expected {self.expected}{detail}"
        )


@dataclass
class ValidationReport:
    """The results of every check over a set of tables, and drift scores per column."""

    subject: str
    results: list[CheckResult] = field(default_factory=list)
    drift: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "fail"]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "warn"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "passed": not self.failures,
            "failures": len(self.failures),
            "warnings": len(self.warnings),
            "checks": [asdict(r) for r in self.results],
            "drift": self.drift,
        }

    def table(self) -> str:
        """A short fixed-width table of the results, failures and warnings first."""
        order = sorted(self.results, key=lambda r: (r.passed, r.severity != "fail"))
        rows = [("status", "check", "table", "column", "partition", "observed", "expected")]
        for r in order:
            status = "ok" if r.passed else ("FAIL" if r.severity == "fail" else "warn")
            observed = "n/a" if r.observed is None else _number(r.observed)
            rows.append(
                (status, r.check, r.table, r.column or "", r.partition, observed, r.expected)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        )

    def raise_for_failures(self) -> None:
        """Raise ``DataValidationError`` naming every failed ``fail`` check."""
        if self.failures:
            raise DataValidationError(
                f"data validation of {self.subject} failed: "
                + "; ".join(r.describe() for r in self.failures),
                self,
            )


def check_table(
    df: DataFrame,
    table: str,
    partition: str,
    expectation: TableExpectation,
    previous: DataFrame | None = None,
    partition_column: str = "ds",
) -> tuple[list[CheckResult], dict[str, float]]:
    """Check ``df`` (the table ``table`` read from ``partition``) against ``expectation``;
    row-count change and drift need the previous snapshot's table and are skipped without it.
    ``partition_column`` holds each row's partition (for ``in_partition``).

    :return: the results and the drift score (PSI) of each drift column
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, FloatType

    needed = {*expectation.key, *expectation.columns, *expectation.drift_columns}
    if expectation.in_partition:
        needed |= {expectation.in_partition, partition_column}
    missing = sorted(needed - set(df.columns))
    if missing:
        raise ExpectationError(f"table {table} has no column(s) {', '.join(missing)}")
    metrics: dict[str, Any] = {"rows": F.count(F.lit(1))}
    for name, spec in expectation.columns.items():
        column = F.col(name)
        if spec.max_null_rate is not None:
            missing_value = column.isNull()
            if isinstance(df.schema[name].dataType, (DoubleType, FloatType)):
                missing_value = missing_value | F.isnan(column)
            metrics[f"nulls:{name}"] = F.sum(missing_value.cast("long"))
        if spec.allowed is not None:
            unknown = column.isNotNull() & ~column.isin(list(spec.allowed))
            metrics[f"unknown:{name}"] = F.sum(unknown.cast("long"))
        if spec.min is not None or spec.max is not None:
            metrics[f"bounds:{name}"] = F.sum(_outside(column, spec).cast("long"))
    if expectation.key:
        # count(DISTINCT a, b) skips rows with a NULL key: they are counted on their own
        null_key = F.lit(False)
        for key in expectation.key:
            null_key = null_key | F.col(key).isNull()
        metrics["null_keys"] = F.sum(null_key.cast("long"))
        metrics["distinct_keys"] = F.count_distinct(*[F.col(k) for k in expectation.key])
    if expectation.in_partition:
        # a missing or unreadable day or partition value counts as outside
        day = F.to_date(F.col(expectation.in_partition))
        partition_day = F.to_date(
            F.try_to_timestamp(F.col(partition_column).cast("string"), F.lit("yyyy-MM-dd"))
        )
        outside = F.coalesce(day != partition_day, F.lit(True))
        metrics["outside_partition"] = F.sum(outside.cast("long"))
    row = df.agg(*[expr.alias(name) for name, expr in metrics.items()]).first()
    observed = {name: (row[name] if row is not None else None) or 0 for name in metrics}
    rows = int(observed["rows"])

    results: list[CheckResult] = []

    def add(check: str, column: str | None, value: float | None, expected: str, severity: str,
            passed: bool, detail: str = "") -> None:  # fmt: skip
        results.append(
            CheckResult(check, table, partition, column, value, expected, severity, passed, detail)
        )

    add("row_count", None, rows, "> 0", "fail", rows > 0)
    for name, spec in expectation.columns.items():
        if spec.max_null_rate is not None:
            rate = observed[f"nulls:{name}"] / rows if rows else 0.0
            add("null_rate", name, rate, f"<= {_number(spec.max_null_rate)}", spec.severity,
                rate <= spec.max_null_rate)  # fmt: skip
        if spec.allowed is not None:
            count = int(observed[f"unknown:{name}"])
            detail = ""
            if count:
                unknown = F.col(name).isNotNull() & ~F.col(name).isin(list(spec.allowed))
                examples = [
                    r[0] for r in df.filter(unknown).select(name).distinct().limit(5).collect()
                ]
                detail = "e.g. " + ", ".join(repr(v) for v in examples)
            add("unknown_values", name, count, f"0 outside {list(spec.allowed)}", spec.severity,
                count == 0, detail)  # fmt: skip
        if spec.min is not None or spec.max is not None:
            count = int(observed[f"bounds:{name}"])
            low = "-inf" if spec.min is None else _number(spec.min)
            high = "inf" if spec.max is None else _number(spec.max)
            bounds = f"[{low}, {high}]"
            add("out_of_range", name, count, f"0 outside {bounds}", spec.severity, count == 0)
    if expectation.key:
        keys = ",".join(expectation.key)
        null_keys = int(observed["null_keys"])
        add("null_keys", keys, null_keys, "0", expectation.key_severity, null_keys == 0)
        duplicates = rows - null_keys - int(observed["distinct_keys"])
        add("duplicate_keys", keys, duplicates, "0", expectation.key_severity, duplicates == 0)
    if "outside_partition" in observed:
        count = int(observed["outside_partition"])
        add("outside_partition", expectation.in_partition, count,
            f"0 (day = {partition_column})", expectation.in_partition_severity,
            count == 0)  # fmt: skip

    drift: dict[str, float] = {}
    if previous is not None:
        columns = [c for c in expectation.drift_columns if c in previous.columns]
        for name in expectation.drift_columns:
            if name not in columns:
                add("drift_psi", name, None, f"<= {_number(expectation.max_drift)}",
                    expectation.drift_severity, False,
                    "the previous snapshot has no such column")  # fmt: skip
        edges = bin_edges(previous, columns)
        values = top_values(previous, [c for c in columns if c not in edges])
        now = distributions(df, columns, edges, values)
        before = distributions(previous, columns, edges, values)
        if expectation.max_row_change is not None:
            # every column's bins add up to the rows (a table without drift columns counts them)
            before_rows = sum(before[columns[0]].values()) if columns else previous.count()
            change = abs(rows - before_rows) / before_rows if before_rows else None
            add("row_count_change", None, change, f"<= {_number(expectation.max_row_change)}",
                expectation.row_change_severity,
                change is not None and change <= expectation.max_row_change,
                f"{before_rows} -> {rows} rows")  # fmt: skip
        for name in columns:
            score = stability_index(now[name], before[name])
            drift[name] = score
            add("drift_psi", name, score, f"<= {_number(expectation.max_drift)}",
                expectation.drift_severity, score <= expectation.max_drift)  # fmt: skip
    return results, drift


def bin_edges(reference: DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """The deciles of ``reference``'s numeric ``columns`` (one pass): the drift bins."""
    from pyspark.sql.types import NumericType

    numeric = [c for c in columns if isinstance(reference.schema[c].dataType, NumericType)]
    if not numeric:
        return {}
    probabilities = [i / DRIFT_BINS for i in range(1, DRIFT_BINS)]
    quantiles = reference.approxQuantile(numeric, probabilities, 0.001)
    return {c: sorted(set(q)) for c, q in zip(numeric, quantiles, strict=True)}


def top_values(
    reference: DataFrame, columns: list[str], limit: int = DRIFT_TOP_VALUES
) -> dict[str, list[str]]:
    """The ``limit`` most frequent non-NULL values (as strings) of each of ``columns`` in
    ``reference``, in one pass: the drift bins of columns that are not numbers. Ties go to the
    smaller value, so the bins do not depend on how the rows are ordered."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not columns:
        return {}
    value = {c: F.col(c).cast("string").alias("value") for c in columns}
    pairs = F.array(*(F.struct(F.lit(c).alias("column"), value[c]) for c in columns))
    rank = Window.partitionBy("column").orderBy(F.desc("count"), F.asc("value"))
    ranked = (
        reference.select(F.explode(pairs).alias("p"))
        .where(F.col("p.value").isNotNull())
        .groupBy(F.col("p.column").alias("column"), F.col("p.value").alias("value"))
        .count()
        .withColumn("rank", F.row_number().over(rank))
        .where(F.col("rank") <= limit)
        .collect()
    )
    result: dict[str, list[str]] = {c: [] for c in columns}
    for row in sorted(ranked, key=lambda r: (r["column"], r["rank"])):
        result[row["column"]].append(row["value"])
    return result


def distributions(
    df: DataFrame,
    columns: list[str],
    edges: dict[str, list[float]],
    values: dict[str, list[str]] | None = None,
) -> dict[str, dict[str, int]]:
    """Row counts per bin of each column, in one pass over ``df``: numbers are binned by
    ``edges`` (``bin_edges``); anything else by value, those outside ``values`` (``top_values``)
    counted together as ``<other>`` when the column has an entry there; NULL is a bin of its
    own."""
    from pyspark.sql import functions as F

    if not columns:
        return {}
    bins = []
    for column in columns:
        if column in edges:
            bucket = F.lit(len(edges[column]))
            for index, edge in reversed(list(enumerate(edges[column]))):
                bucket = F.when(F.col(column) <= edge, F.lit(index)).otherwise(bucket)
            value = bucket.cast("string")
        else:
            value = F.col(column).cast("string")
            if values is not None and column in values:
                value = F.when(value.isin(values[column]), value).otherwise(F.lit(OTHER_BIN))
        value = F.when(F.col(column).isNull(), F.lit(NULL_BIN)).otherwise(value)
        bins.append(F.struct(F.lit(column).alias("column"), value.alias("bin")))
    counted = (
        df.select(F.explode(F.array(*bins)).alias("b"))
        .groupBy(F.col("b.column").alias("column"), F.col("b.bin").alias("bin"))
        .count()
        .collect()
    )
    result: dict[str, dict[str, int]] = {c: {} for c in columns}
    for row in counted:
        result[row["column"]][row["bin"]] = int(row["count"])
    return result


def stability_index(now: dict[str, int], before: dict[str, int]) -> float:
    """The population stability index (PSI) of two binned distributions: 0 for the same
    shares; above 0.25 is commonly taken as a large shift."""
    total_now, total_before = sum(now.values()), sum(before.values())
    if not total_now or not total_before:
        return 0.0
    score = 0.0
    for key in set(now) | set(before):
        p = max(now.get(key, 0) / total_now, _EPSILON)
        q = max(before.get(key, 0) / total_before, _EPSILON)
        score += (p - q) * math.log(p / q)
    return round(score, 6)


def population_stability(current: DataFrame, previous: DataFrame, column: str) -> float:
    """PSI of ``column`` between two tables (see ``distributions`` and ``stability_index``)."""
    edges = bin_edges(previous, [column])
    values = {} if column in edges else top_values(previous, [column])
    return stability_index(
        distributions(current, [column], edges, values)[column],
        distributions(previous, [column], edges, values)[column],
    )


def _outside(column: Any, spec: ColumnExpectation) -> Any:
    from pyspark.sql import functions as F

    condition = F.lit(False)
    if spec.min is not None:
        condition = condition | (column < spec.min)
    if spec.max is not None:
        condition = condition | (column > spec.max)
    return column.isNotNull() & condition


def _severity(value: Any, where: str) -> str:
    if value not in SEVERITIES:
        raise ExpectationError(f"{where}: severity must be one of {SEVERITIES}, got {value!r}")
    return str(value)


def _no_unknown(raw: Any, known: set[str], where: str) -> None:
    if not isinstance(raw, dict):
        raise ExpectationError(f"{where} must be a JSON object")
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ExpectationError(f"{where}: unknown expectation(s) {', '.join(unknown)}")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}" if math.isfinite(value) else str(value)
    return f"{value:.4g}"
