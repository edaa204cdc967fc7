"""One TensorFlow training worker (a fresh process started by the launcher).

With ``TF_CONFIG`` naming several workers it trains under ``MultiWorkerMirroredStrategy`` (ring
all-reduce), each worker reading its own shard; the chief (worker 0) alone logs to MLflow. Every
worker writes its weights digest to ``--result-file``.

Usage: ``python -m mlops_jobs.churn.train_worker --features URI --config JSON --result-file F
[--mlflow-run-id ID]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _cluster() -> tuple[int, int]:
    """This worker's index and the number of workers, from ``TF_CONFIG``."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0, 1
    spec = json.loads(raw)
    return int(spec["task"]["index"]), len(spec["cluster"]["worker"])


def train(args: argparse.Namespace) -> dict[str, Any]:
    import tensorflow as tf
    import tf_keras as keras

    from mlops_jobs.churn.model import FeatureSet, TrainConfig, build_model, roc_auc, weights_digest

    index, workers = _cluster()
    threads = int(os.environ.get("MLOPS_TRAIN_THREADS", "1"))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    config = TrainConfig.load(overrides=json.loads(args.config))
    keras.utils.set_random_seed(config.seed)
    features = FeatureSet.open(args.features)

    if workers > 1:
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING,
            timeout_seconds=args.collective_timeout,
        )
        strategy: Any = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    else:
        strategy = tf.distribute.get_strategy()

    global_batch = config.per_worker_batch_size * workers
    # Every worker must run the same number of steps: size them on the smallest shard.
    train_shard = features.rows("train") // workers
    steps_per_epoch = max(1, train_shard // config.per_worker_batch_size)
    valid_shard = max(1, features.rows("valid") // workers)

    def train_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        inputs, labels = features.split(
            "train", context.input_pipeline_id, context.num_input_pipelines
        )
        batch = context.get_per_replica_batch_size(global_batch)
        return (
            tf.data.Dataset.from_tensor_slices((inputs, labels))
            .shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True)
            .repeat()
            .batch(batch, drop_remainder=True)
            .prefetch(2)
        )

    def valid_input(context: tf.distribute.InputContext) -> tf.data.Dataset:
        inputs, labels = features.split(
            "valid", context.input_pipeline_id, context.num_input_pipelines
        )
        return (
            tf.data.Dataset.from_tensor_slices((inputs, labels))
            .take(valid_shard)
            .batch(valid_shard)
            .repeat()
        )

    with strategy.scope():
        model = build_model(features, config)
    if workers > 1:
        train_data = strategy.distribute_datasets_from_function(train_input)
        valid_data = strategy.distribute_datasets_from_function(valid_input)
    else:
        context = tf.distribute.InputContext()
        train_data, valid_data = train_input(context), valid_input(context)

    callbacks: list[Any] = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc",
            mode="max",
            patience=config.early_stopping_patience,
            restore_best_weights=True,
        )
    ]
    timer = _EpochTimer()
    callbacks.append(timer)
    chief = index == 0
    if chief and args.mlflow_run_id:
        callbacks.append(_mlflow_epoch_logger(args.mlflow_run_id))
    started = time.perf_counter()
    history = model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=valid_data,
        validation_steps=1,
        callbacks=callbacks,
        verbose=2 if chief else 0,
    )
    seconds = time.perf_counter() - started
    epochs_run = len(history.history["loss"])
    # Throughput in steady state: the first epoch also traces and builds the graph.
    steady = timer.seconds[1:] or timer.seconds
    result: dict[str, Any] = {
        "worker": index,
        "workers": workers,
        "weights_digest": weights_digest(model),
        "epochs": epochs_run,
        "train_seconds": seconds,
        "examples_per_second": len(steady) * steps_per_epoch * global_batch / sum(steady),
    }
    if chief:
        # Evaluate and log with a plain (non-distributed) copy: nothing here may wait on the
        # other workers, which are already at the final barrier.
        local = build_model(features, config)
        local.set_weights(model.get_weights())
        metrics = {}
        for split in ("valid", "test"):
            inputs, labels = features.split(split)
            metrics[f"{split}_auc"] = roc_auc(
                labels, local.predict(inputs, batch_size=4096, verbose=0)
            )
        result["metrics"] = metrics
        if args.mlflow_run_id:
            _log_model(args.mlflow_run_id, local, features, metrics, epochs_run, result)
    if workers > 1:
        # Final rendezvous: a worker that exits early is reported as failed by TensorFlow's
        # coordination service, which then aborts the chief while it is still logging.
        strategy.reduce(
            tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None
        )
    return result


class _EpochTimer:
    """Keras callback recording each epoch's wall time (built lazily: tf_keras is heavy)."""

    def __new__(cls) -> Any:
        import tf_keras as keras

        class EpochTimer(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []
                self._start = 0.0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self._start)

        return EpochTimer()


def _mlflow_epoch_logger(mlflow_run_id: str) -> Any:
    import mlflow
    import tf_keras as keras

    client = mlflow.MlflowClient()

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            timestamp = int(time.time() * 1000)
            metrics = [
                mlflow.entities.Metric(key, float(value), timestamp, epoch)
                for key, value in (logs or {}).items()
            ]
            client.log_batch(mlflow_run_id, metrics=metrics)

    return EpochLogger()


def _log_model(
    mlflow_run_id: str,
    model: Any,
    features: Any,
    metrics: dict[str, float],
    epochs: int,
    result: dict[str, Any],
) -> None:
    import mlflow

    from mlops_jobs.churn.model import log_churn_model

    # The driver ends the run once the model is registered: leaving this block must not mark
    # it FINISHED (the context manager would), so the run is left RUNNING explicitly.
    mlflow.start_run(run_id=mlflow_run_id)
    try:
        mlflow.log_metrics(metrics)
        mlflow.log_metrics(
            {"epochs_run": epochs, "examples_per_second": result["examples_per_second"]}
        )
        log_churn_model(model, features)
    finally:
        mlflow.end_run(status="RUNNING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train-worker", description=__doc__)
    parser.add_argument("--features", required=True)
    parser.add_argument("--config", default="{}", help="training parameters as JSON")
    parser.add_argument("--result-file", type=Path, required=True)
    parser.add_argument("--mlflow-run-id", default=None)
    parser.add_argument("--collective-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    result = train(args)
    args.result_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
