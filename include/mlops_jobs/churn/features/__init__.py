"""Point-in-time correct churn features from a Hive snapshot (Spark).

Every transform is pure (``DataFrame -> DataFrame``, inputs untouched); ``run`` does the I/O.
A label for day ``ds`` sees only events strictly before its cutoff (``ds`` 00:00 UTC) and within
the longest window, and customer attributes from the newest daily snapshot before the cutoff.
The train/valid/test split is a function of a SHA-256 of the customer id, so it is the same in
every run and every engine.

Modules: ``config`` (the feature definitions), ``transforms`` (the pure Spark transforms),
``jobs`` (the two feature jobs, on one skeleton). This package exports all of them.
"""

from __future__ import annotations

from mlops_jobs.churn.features.config import (
    CONFIG_PATH,
    EXPECTATIONS_PATH,
    KEYS,
    OUT_OF_TIME,
    SPLITS,
    FeatureConfig,
    FeatureConfigError,
)
from mlops_jobs.churn.features.jobs import (
    INFERENCE_TABLES,
    REQUIRED_COLUMNS,
    SnapshotError,
    load_snapshot,
    open_snapshot,
    previous_snapshot,
    publish_features,
    run,
    run_inference,
    validate_features,
    validate_snapshot,
)
from mlops_jobs.churn.features.transforms import (
    MICROS_PER_DAY,
    attribute_features,
    attributes_as_of,
    build_churn_features,
    build_inference_features,
    event_features,
    event_history,
    feature_rows,
    feature_statistics,
    scoring_population,
    split_column,
    with_cutoff,
)

__all__ = [
    "CONFIG_PATH",
    "EXPECTATIONS_PATH",
    "INFERENCE_TABLES",
    "KEYS",
    "MICROS_PER_DAY",
    "OUT_OF_TIME",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "FeatureConfig",
    "FeatureConfigError",
    "SnapshotError",
    "attribute_features",
    "attributes_as_of",
    "build_churn_features",
    "build_inference_features",
    "event_features",
    "event_history",
    "feature_rows",
    "feature_statistics",
    "load_snapshot",
    "open_snapshot",
    "previous_snapshot",
    "publish_features",
    "run",
    "run_inference",
    "scoring_population",
    "split_column",
    "validate_features",
    "validate_snapshot",
    "with_cutoff",
]
