"""SparkSession for the jobs, sized for the job rather than left at Spark's cluster defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Settings every job wants: adaptive execution coalesces the few large shuffles these jobs do,
# Arrow makes pandas conversions cheap, and a modest shuffle partition count suits a
# single-machine or small-cluster job (AQE can still split skewed partitions).
JOB_DEFAULTS: dict[str, str] = {
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.skewJoin.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.ui.showConsoleProgress": "false",
}


def shuffle_partitions(cores: int) -> int:
    """A shuffle partition count for ``cores`` task slots: a few waves, never Spark's 200."""
    return max(4, 3 * cores)


def get_spark(app_name: str, conf: Mapping[str, str] | None = None) -> SparkSession:
    """Return a session with the job defaults, ``conf`` overriding them.

    Under spark-submit or on a cluster the session's master and any setting given explicitly
    there (``--conf``, cluster ``spark_conf``) win; a plain Python process builds a local
    session on ``MLOPS_SPARK_MASTER`` (default ``local[2]``).
    """
    from pyspark.sql import SparkSession

    cores = os.cpu_count() or 2
    settings = {
        **JOB_DEFAULTS,
        "spark.sql.shuffle.partitions": str(shuffle_partitions(cores)),
        **(conf or {}),
    }
    launched = "PYSPARK_GATEWAY_PORT" in os.environ or SparkSession.getActiveSession() is not None
    if not launched:
        builder = SparkSession.builder.appName(app_name).master(
            os.environ.get("MLOPS_SPARK_MASTER", "local[2]")
        )
        for key, value in {"spark.ui.enabled": "false", **settings}.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()
    spark = SparkSession.builder.appName(app_name).getOrCreate()
    explicit = spark.sparkContext.getConf()
    for key, value in settings.items():
        if key.startswith("spark.sql.") and not explicit.contains(key):
            spark.conf.set(key, value)
    return spark


def write_sorted_parquet(
    frame: DataFrame, uri: str, sort_by: Sequence[str], partition_by: Sequence[str] = ()
) -> None:
    """Write ``frame`` to ``uri`` as one file per ``partition_by`` value, rows sorted by
    ``sort_by``: the same rows give the same files (and content hash) in every run and on
    every backend."""
    shuffled = frame.repartition(1, *partition_by) if partition_by else frame.repartition(1)
    writer = shuffled.sortWithinPartitions(*sort_by).write.mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.parquet(uri)
