"""Benchmark the Spark feature job against DuckDB on the same snapshot.

For each size (event rows in the snapshot), side by side in one run:
- Spark's fixed start-up (new JVM and session, first trivial query), measured separately;
- the feature computation with the job's tuned settings, cold (first run in the JVM) and warm;
- the same with Spark's default settings (what the tuning buys);
- the same feature logic in DuckDB (the single-machine reference), cold and warm.
Each Spark configuration runs in its own process, so static settings apply and JVMs don't
share a JIT. All variants write their result as Parquet. Prints one JSON line per size, the
last line is one JSON object with everything and the ratios.

Usage: ``python bench/features.py [--sizes 1000000 10000000]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]

from mlops_jobs import lake  # noqa: E402
from mlops_jobs.churn.features import FeatureConfig, build_churn_features  # noqa: E402
from mlops_localstack.demo.generator import DemoSpec  # noqa: E402

DAYS = 120
EVENTS_PER_CUSTOMER = 147.0  # measured mean of the demo generator over 120 days


def make_snapshot(root: Path, events: int) -> tuple[Path, int]:
    from tests.support import write_demo_snapshot

    customers = max(100, round(events / EVENTS_PER_CUSTOMER))
    box = lake.open_box(write_demo_snapshot(root, DemoSpec(customers=customers, days=DAYS, seed=1)))
    return Path(box.location.path), int(box.manifest["tables"]["events"]["rows"])


#: Columns every engine's output is summed over (plus its row count): each feature family
#: (windowed counts and amounts, active days, recency, event types, channels, trends), the
#: attributes as of the label's cutoff, and the label.
CHECKSUMS = (
    "events_90d", "amount_30d", "active_days_30d", "recency_days", "login_30d",
    "support_ticket_90d", "channel_web_30d", "channel_store_30d", "trend_events_7d_30d",
    "tenure_days", "monthly_fee", "is_autopay", "label",
)  # fmt: skip


def checksums(frame: Any) -> dict[str, float]:
    """The row count and the sums of ``CHECKSUMS``, to check every engine computed the same."""
    from pyspark.sql import functions as F

    row = frame.agg(
        F.count(F.lit(1)).alias("rows"), *[F.sum(c).cast("double").alias(c) for c in CHECKSUMS]
    ).first()
    return {k: float(v) for k, v in row.asDict().items()}


def agree(*sums: dict[str, float]) -> bool:
    """Whether every engine's checksums are the same (floats up to summation order)."""
    first, *others = sums
    return all(
        other.keys() == first.keys()
        and all(math.isclose(other[k], first[k], rel_tol=1e-9, abs_tol=1e-6) for k in first)
        for other in others
    )


def spark_worker(snapshot: Path, settings: str, out: Path) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    from mlops_jobs.spark.session import get_spark

    started = time.perf_counter()
    if settings == "tuned":
        spark = get_spark("bench-features")
    else:
        spark = (
            SparkSession.builder.appName("bench-defaults")
            .master("local[2]")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
    spark.range(1).count()
    startup = time.perf_counter() - started
    config = FeatureConfig.load()
    times = []
    for attempt in range(2):
        tables = {
            name: spark.read.parquet(str(snapshot / name))
            for name in ("customers", "events", "churn_labels")
        }
        begin = time.perf_counter()
        features = build_churn_features(
            tables["customers"], tables["events"], tables["churn_labels"], config
        )
        features.write.mode("overwrite").parquet(str(out / f"{settings}-{attempt}"))
        times.append(time.perf_counter() - begin)
    result = checksums(spark.read.parquet(str(out / f"{settings}-1")))
    spark.stop()
    return {"startup_s": startup, "cold_s": times[0], "warm_s": times[1], "checksums": result}


def duckdb_sql(snapshot: Path, config: FeatureConfig, out: Path) -> str:
    """The feature logic of ``build_churn_features`` in DuckDB SQL."""
    windows = config.windows_days
    types = config.event_types
    channels = config.channels
    daily = ",\n".join(
        [
            "count(*) AS n_events",
            "max(event_time) AS last_event_time",
            f"sum(CASE WHEN event_type = '{config.amount_event_type}' THEN amount END) AS amount",
            *[f"sum((event_type = '{t}')::INT) AS n_type_{t}" for t in types],
            *[f"sum((channel = '{c}')::INT) AS n_channel_{c}" for c in channels],
        ]
    )
    feats = ["(epoch(any_value(cutoff)) - epoch(max(last_event_time))) / 86400.0 AS recency_days"]
    for w in windows:
        cond = f"days_before <= {w}"
        feats += [
            f"coalesce(sum(CASE WHEN {cond} THEN n_events END), 0) AS events_{w}d",
            f"sum(({cond})::INT) AS active_days_{w}d",
            f"coalesce(sum(CASE WHEN {cond} THEN amount END), 0)::DOUBLE AS amount_{w}d",
            *[f"coalesce(sum(CASE WHEN {cond} THEN n_type_{t} END), 0) AS {t}_{w}d" for t in types],
        ]
    cw = config.channel_window_days
    feats += [
        f"coalesce(sum(CASE WHEN days_before <= {cw} THEN n_channel_{c} END), 0) "
        f"AS channel_{c}_{cw}d"
        for c in channels
    ]
    trends = [
        f"events_{a}d / {a}.0 - events_{b}d / {b}.0 AS trend_events_{a}d_{b}d"
        for a, b in config.trends
    ]
    event_names = config.event_feature_names()
    fill = ", ".join(
        f"coalesce(f.{n}, {float(config.max_window) if n == 'recency_days' else 0}) AS {n}"
        for n in event_names
    )
    attributes = ", ".join(
        [
            "date_diff('day', c.signup_date, l.ds::DATE) AS tenure_days",
            *[f"c.{a}::DOUBLE AS {a}" for a in config.numeric],
            *[f"c.{a}::INT AS {a}" for a in config.boolean],
            *[f"c.{a} AS {a}" for a in config.categorical],
        ]
    )
    # ``customers`` holds daily snapshots: each label reads the newest one before its day.
    as_of = ", ".join(
        f"s.{a}" for a in ["signup_date", *config.numeric, *config.boolean, *config.categorical]
    )
    return f"""
    COPY (
    WITH labels AS (
        SELECT customer_id, ds, churned::INT AS label, ds::TIMESTAMP AS cutoff
        FROM read_parquet('{snapshot}/churn_labels/*.parquet', hive_partitioning = false)
    ), history AS (
        SELECT e.customer_id, l.ds, l.cutoff, e.event_time, e.event_type, e.channel, e.amount,
               date_diff('day', e.event_time::DATE, l.cutoff::DATE) AS days_before
        FROM read_parquet('{snapshot}/events/*.parquet', hive_partitioning = false) e
        JOIN labels l USING (customer_id)
        WHERE e.event_time < l.cutoff
          AND e.event_time >= l.cutoff - INTERVAL {config.max_window} DAY
    ), daily AS (
        SELECT customer_id, ds, cutoff, days_before, {daily}
        FROM history GROUP BY customer_id, ds, cutoff, days_before
    ), windowed AS (
        SELECT customer_id, ds, {", ".join(feats)} FROM daily GROUP BY customer_id, ds
    ), f AS (SELECT *, {", ".join(trends)} FROM windowed
    ), c AS (
        SELECT l.customer_id, l.ds, {as_of}
        FROM labels l
        JOIN read_parquet('{snapshot}/customers/*.parquet', hive_partitioning = false) s
            ON s.customer_id = l.customer_id AND s.ds < l.ds
        QUALIFY row_number() OVER (PARTITION BY l.customer_id, l.ds ORDER BY s.ds DESC) = 1
    )
    SELECT l.customer_id, l.ds, {fill}, {attributes}, l.label
    FROM labels l
    JOIN c USING (customer_id, ds)
    LEFT JOIN f USING (customer_id, ds)
    ) TO '{out}' (FORMAT parquet)
    """


def duckdb_run(snapshot: Path, out: Path) -> dict[str, Any]:
    import duckdb

    config = FeatureConfig.load()
    times = []
    for attempt in range(2):
        target = out / f"duckdb-{attempt}.parquet"
        connection = duckdb.connect()
        connection.execute("SET threads TO 2")
        begin = time.perf_counter()
        connection.execute(duckdb_sql(snapshot, config, target))
        times.append(time.perf_counter() - begin)
        connection.close()
    sums = ", ".join(f"sum({c})::DOUBLE AS {c}" for c in CHECKSUMS)
    (check,) = duckdb.sql(
        f"SELECT count(*) AS rows, {sums} FROM read_parquet('{out / 'duckdb-1.parquet'}')"
    ).fetchall()
    names = ("rows", *CHECKSUMS)
    return {
        "cold_s": times[0],
        "warm_s": times[1],
        "checksums": {n: float(v) for n, v in zip(names, check, strict=True)},
    }


def run_worker(snapshot: Path, settings: str, out: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])}
    result = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            settings,
            "--snapshot",
            str(snapshot),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{settings} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--worker", choices=["tuned", "default"])
    parser.add_argument("--snapshot", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(spark_worker(args.snapshot, args.worker, args.out)))
        return 0
    results = []
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-features-") as tmp:
            snapshot, events = make_snapshot(Path(tmp) / "lake", size)
            out = Path(tmp) / "out"
            tuned = run_worker(snapshot, "tuned", out)
            default = run_worker(snapshot, "default", out)
            duck = duckdb_run(snapshot, out)
        same = agree(tuned["checksums"], default["checksums"], duck["checksums"])
        entry = {
            "events": events,
            "labelled_customers": tuned["checksums"]["rows"],
            "spark_startup_s": round(tuned["startup_s"], 2),
            "spark_tuned_cold_s": round(tuned["cold_s"], 2),
            "spark_tuned_warm_s": round(tuned["warm_s"], 2),
            "spark_default_cold_s": round(default["cold_s"], 2),
            "spark_default_warm_s": round(default["warm_s"], 2),
            "duckdb_cold_s": round(duck["cold_s"], 2),
            "duckdb_warm_s": round(duck["warm_s"], 2),
            "spark_tuned_warm_events_per_s": round(events / tuned["warm_s"]),
            "ratio_spark_tuned_warm_to_duckdb_warm": round(tuned["warm_s"] / duck["warm_s"], 2),
            "ratio_spark_tuned_cold_to_duckdb_cold": round(tuned["cold_s"] / duck["cold_s"], 2),
            "ratio_spark_default_to_tuned_warm": round(default["warm_s"] / tuned["warm_s"], 2),
            "results_match": same,
        }
        if not same:
            entry["checksums"] = {
                "tuned": tuned["checksums"],
                "default": default["checksums"],
                "duckdb": duck["checksums"],
            }
        results.append(entry)
        print(json.dumps(entry), flush=True)
    print(json.dumps({"benchmark": "features", "cores": os.cpu_count(), "sizes": results}))
    if not all(entry["results_match"] for entry in results):
        print("features: the engines computed different features", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
