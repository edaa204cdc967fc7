from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One small local SparkSession for the transform tests; its JVM ends with the session."""
    from mlops_jobs.spark.session import get_spark

    session = get_spark(
        "tests", {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"}
    )
    yield session
    session.stop()
    gateway = session.sparkContext._gateway  # type: ignore[attr-defined]
    if gateway is not None:
        gateway.shutdown()
