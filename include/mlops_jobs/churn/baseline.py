"""The Spark MLlib baseline the candidate must beat: a regularised logistic regression on the
same features (categoricals one-hot encoded, numerics standardised), trained on the train split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame

    from mlops_jobs.churn.model import FeatureSet

BASELINE_PARAMS = {"regParam": 0.01, "elasticNetParam": 0.0, "maxIter": 100}
PROBABILITY = "churn_probability"


def baseline_pipeline(numeric: list[str], categorical: list[str]) -> Any:
    """Unfitted pipeline: index and one-hot categoricals, assemble, standardise, fit LR."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler

    indexed = [f"{c}__index" for c in categorical]
    encoded = [f"{c}__onehot" for c in categorical]
    stages: list[Any] = []
    if categorical:
        stages += [
            StringIndexer(
                inputCols=categorical,
                outputCols=indexed,
                handleInvalid="keep",
                stringOrderType="alphabetAsc",
            ),
            OneHotEncoder(inputCols=indexed, outputCols=encoded, handleInvalid="keep"),
        ]
    stages += [
        VectorAssembler(inputCols=[*numeric, *encoded], outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True),
        LogisticRegression(featuresCol="features", labelCol="label", **BASELINE_PARAMS),
    ]
    return Pipeline(stages=stages)


def prepare(frame: DataFrame, features: FeatureSet) -> DataFrame:
    """Numerics as doubles, categoricals as strings, the label as a double."""
    from pyspark.sql import functions as F

    columns = [
        *[F.col(c).cast("double").alias(c) for c in features.numeric],
        *[F.col(c).cast("string").alias(c) for c in features.categorical],
    ]
    keys = [k for k in features.manifest.get("keys", ["customer_id"]) if k in frame.columns]
    label = features.manifest["label"]
    return frame.select(*keys, *columns, F.col(label).cast("double").alias("label"))


def fit_baseline(train: DataFrame, features: FeatureSet) -> PipelineModel:
    return baseline_pipeline(features.numeric, features.categorical).fit(prepare(train, features))


def predict_baseline(model: PipelineModel, frame: DataFrame, features: FeatureSet) -> DataFrame:
    """Keys and the positive-class probability (``churn_probability``)."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    keys = [k for k in features.manifest.get("keys", ["customer_id"]) if k in frame.columns]
    scored = model.transform(prepare(frame, features))
    return scored.select(*keys, vector_to_array(F.col("probability"))[1].alias(PROBABILITY))
