"""The churn model (tf-keras) and its inputs: configuration, feature-set reading, evaluation.

TensorFlow is imported inside functions: this module is also imported by the launcher's driver,
which must not pay for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from mlops_jobs import lake

CONFIG_PATH = Path(__file__).with_name("train_config.json")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


class TrainConfigError(ValueError):
    """A training parameter is unknown or invalid; the message names it."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of the churn model."""

    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.2
    embedding_dim: int = 4
    learning_rate: float = 0.003
    per_worker_batch_size: int = 256
    epochs: int = 40
    early_stopping_patience: int = 5
    seed: int = 7

    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None
    ) -> TrainConfig:
        raw = json.loads(Path(path or CONFIG_PATH).read_text())
        raw.update(overrides or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TrainConfigError(f"unknown training parameters: {', '.join(unknown)}")
        try:
            config = cls(
                hidden_units=tuple(int(u) for u in raw["hidden_units"]),
                dropout=float(raw["dropout"]),
                embedding_dim=int(raw["embedding_dim"]),
                learning_rate=float(raw["learning_rate"]),
                per_worker_batch_size=int(raw["per_worker_batch_size"]),
                epochs=int(raw["epochs"]),
                early_stopping_patience=int(raw["early_stopping_patience"]),
                seed=int(raw["seed"]),
            )
        except KeyError as err:
            raise TrainConfigError(f"missing training parameter {err}") from None
        except (TypeError, ValueError) as err:
            raise TrainConfigError(f"invalid training parameter value: {err}") from None
        config.validate()
        return config

    def validate(self) -> None:
        checks = {
            "hidden_units": bool(self.hidden_units) and all(u > 0 for u in self.hidden_units),
            "dropout": 0.0 <= self.dropout < 1.0,
            "embedding_dim": self.embedding_dim > 0,
            "learning_rate": self.learning_rate > 0,
            "per_worker_batch_size": self.per_worker_batch_size > 0,
            "epochs": self.epochs > 0,
            "early_stopping_patience": self.early_stopping_patience >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise TrainConfigError(f"invalid {name}: {getattr(self, name)!r}")

    def as_params(self) -> dict[str, Any]:
        params = asdict(self)
        params["hidden_units"] = ",".join(str(u) for u in self.hidden_units)
        return params


@dataclass(frozen=True)
class FeatureSet:
    """A published feature set: its manifest and the arrays of one split."""

    uri: str
    manifest: dict[str, Any]
    box: lake.Box

    @classmethod
    def open(cls, uri: str) -> FeatureSet:
        """The committed version ``uri`` names (a box resolves to its current version)."""
        try:
            box = lake.open_box(uri)
        except lake.LakeError as err:
            raise TrainConfigError(f"feature set {uri}: {err}") from None
        for key in ("features", "categorical", "statistics", "splits", "label"):
            if key not in box.manifest:
                raise TrainConfigError(f"feature set {box.uri}: manifest has no {key!r}")
        return cls(uri=box.uri, manifest=box.manifest, box=box)

    def split_location(self, name: str) -> lake.Location:
        return self.box.path(self.manifest["splits"][name]["path"])

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])

    @property
    def categorical(self) -> list[str]:
        return list(self.manifest["categorical"])

    @property
    def numeric(self) -> list[str]:
        return [f for f in self.features if f not in self.categorical]

    def frame(self, name: str) -> Any:
        """One split as a pandas frame (keys, features, label, split columns), sorted by the
        keys, checked for missing columns and nulls."""
        try:
            frame = lake.read_parquet(self.split_location(name)).to_pandas()
        except lake.LakeError as err:
            raise TrainConfigError(f"feature set {self.uri}: split {name!r}: {err}") from None
        for column in (*self.features, self.manifest["label"]):
            if column not in frame.columns:
                raise TrainConfigError(
                    f"feature set {self.uri}: split {name} lacks column {column}"
                )
            if frame[column].isna().any():
                raise TrainConfigError(
                    f"feature set {self.uri}: split {name} has nulls in column {column}"
                )
        keys = list(self.manifest.get("keys", ["customer_id"]))
        return frame.sort_values(keys).reset_index(drop=True)

    def inputs(self, frame: Any) -> dict[str, np.ndarray]:
        """Model inputs of a frame: one ``(n, 1)`` array per feature."""
        return model_inputs(frame, self.numeric, self.categorical)

    def split(
        self, name: str, shard: int = 0, shards: int = 1
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Inputs (one ``(n, 1)`` array per feature) and labels of a split, or of one shard
        of it (every ``shards``-th row from ``shard``)."""
        frame = self.frame(name).iloc[shard::shards]
        return self.inputs(frame), frame[self.manifest["label"]].to_numpy(np.float32).reshape(-1, 1)

    def rows(self, name: str) -> int:
        """Rows of the split ``name``; 0 when the feature set has no such split."""
        return int(self.manifest["splits"].get(name, {}).get("rows", 0))


def model_inputs(frame: Any, numeric: list[str], categorical: list[str]) -> dict[str, np.ndarray]:
    """The model's input tensors from a frame of features (training, evaluation and scoring
    all go through this one conversion)."""
    inputs = {name: frame[name].to_numpy(np.float32).reshape(-1, 1) for name in numeric}
    inputs.update(
        {name: frame[name].astype(str).to_numpy(object).reshape(-1, 1) for name in categorical}
    )
    return inputs


def predict_probabilities(model: Any, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Churn probabilities, flat, from a loaded pyfunc or tf-keras model."""
    output = model.predict(inputs)
    if isinstance(output, dict):
        output = output.get("churn_probability", next(iter(output.values())))
    if hasattr(output, "to_numpy"):
        output = output.to_numpy()
    return np.asarray(output, dtype=np.float64).reshape(-1)


def build_model(features: FeatureSet, config: TrainConfig) -> Any:
    """Normalization (train-split statistics from the manifest) for numeric inputs, a vocabulary
    lookup and embedding for categorical ones, then a small MLP with dropout. Seeds Python's,
    NumPy's and TensorFlow's generators with ``config.seed`` first, so that the initial weights
    and the shuffling of a single-process fit are the same on every run."""
    import tf_keras as keras

    keras.utils.set_random_seed(config.seed)
    stats = features.manifest["statistics"]
    inputs, encoded = {}, []
    for name in features.numeric:
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
        mean = float(stats[name]["mean"] or 0.0)
        std = float(stats[name]["std"] or 0.0)
        layer = keras.layers.Normalization(
            mean=mean, variance=max(std * std, 1e-6), name=f"norm_{name}"
        )
        encoded.append(layer(inputs[name]))
    for name in features.categorical:
        inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
        vocabulary = sorted(stats[name]["vocabulary"])
        lookup = keras.layers.StringLookup(vocabulary=vocabulary, name=f"lookup_{name}")
        embedding = keras.layers.Embedding(
            len(vocabulary) + 1, config.embedding_dim, name=f"embed_{name}"
        )
        encoded.append(keras.layers.Flatten()(embedding(lookup(inputs[name]))))
    x = keras.layers.Concatenate()(encoded)
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{i}")(x)
        x = keras.layers.Dropout(config.dropout, seed=config.seed + i)(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="churn_probability")(x)
    model = keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def log_churn_model(model: Any, features: FeatureSet) -> Any:
    """Log a churn model to the active MLflow run as ``model``: tf-keras flavor, a tensor
    signature (one ``(-1, 1)`` input per feature), an input example and pinned requirements."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from mlops_jobs.training.tracking import pip_requirements

    inputs, _ = features.split("valid")
    example = {name: values[:5] for name, values in inputs.items()}
    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(
                    np.dtype(np.float32) if name in features.numeric else np.dtype(object),
                    (-1, 1),
                    name,
                )
                for name in features.features
            ]
        ),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1), "churn_probability")]),
    )
    return mlflow.tensorflow.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
    )


def weights_digest(model: Any) -> str:
    """SHA-256 of all weights: equal on every worker after synchronous training."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.ravel(), scores.ravel()))
