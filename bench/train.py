"""Benchmark distributed training on one feature set, side by side in one run.

- plain single-process tf-keras ``fit`` of the same model on the same data (no strategy);
- the launcher (Spark barrier stage + MultiWorkerMirroredStrategy) with 1 and with 2 workers;
  throughput is measured inside the workers over the same number of epochs (no early stopping);
- the launcher's fixed overhead: stage wall time minus the workers' training time (1 worker);
- the test AUC of a model trained with the default configuration (2 workers, early stopping)
  against the Bayes-optimal AUC of the same test customers, known from the demo generator.
Prints one JSON line per measurement; the last line is one JSON object with everything.

Usage: ``python bench/train.py [--customers 10000] [--epochs 10] [--max-epochs N]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include"), str(ROOT)]
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from mlops_jobs import lake  # noqa: E402
from mlops_localstack.demo.generator import DemoSpec, bayes_auc, generate  # noqa: E402


def plain_fit(features: str, epochs: int, batch: int) -> dict[str, Any]:
    """Single process, no distribution strategy, all cores: the baseline."""
    import tensorflow as tf

    from mlops_jobs.churn.model import FeatureSet, TrainConfig, build_model

    config = TrainConfig.load(overrides={"epochs": epochs, "per_worker_batch_size": batch})
    tf.keras.utils.set_random_seed(config.seed)
    feature_set = FeatureSet.open(features)
    inputs, labels = feature_set.split("train")
    model = build_model(feature_set, config)
    batch = config.per_worker_batch_size
    steps = len(labels) // batch
    data = (
        tf.data.Dataset.from_tensor_slices((inputs, labels))
        .shuffle(len(labels), seed=config.seed)
        .repeat()
        .batch(batch, drop_remainder=True)
        .prefetch(2)
    )
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)  # build and trace first
    started = time.perf_counter()
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    return {"examples_per_second": epochs * steps * batch / seconds, "train_seconds": seconds}


def launcher(features: str, workers: int, overrides: dict[str, Any]) -> dict[str, Any]:
    from mlops_jobs.spark.session import get_spark
    from mlops_jobs.training.launcher import WorkerSpec, launch

    spark = get_spark("bench-train", {"spark.python.worker.reuse": "false"})
    spec = WorkerSpec(
        module="mlops_jobs.churn.train_worker",
        arguments=("--features", features, "--config", json.dumps(overrides)),
        timeout_seconds=3600,
    )
    started = time.perf_counter()
    results = launch(spark, workers, spec)
    wall = time.perf_counter() - started
    chief = results[0]
    return {
        "workers": workers,
        "examples_per_second": chief["examples_per_second"],
        "train_seconds": chief["train_seconds"],
        "stage_seconds": wall,
        "epochs": chief["epochs"],
        "metrics": chief.get("metrics", {}),
        "same_weights": len({r["weights_digest"] for r in results}) == 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--batch", type=int, default=1024, help="per-worker batch for the throughput runs"
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        help="epochs of the default-configuration run (default: the training config's)",
    )
    parser.add_argument("--plain", metavar="FEATURES", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain_fit(args.plain, args.epochs, args.batch)))
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT)])}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        env[lake.ROOT_ENV] = str(root)
        spec = DemoSpec(customers=args.customers, days=120, seed=7)
        from tests.support import write_demo_snapshot

        snapshot = write_demo_snapshot(root, spec)
        output = lake.box_uri(str(root), "churn/features", spec.end_ds)
        subprocess.run(
            [sys.executable, "-m", "mlops_jobs.cli", "churn-features",
             "--snapshot", snapshot, "--output", output],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
        features = lake.open_box(output).uri
        fixed = {
            "epochs": args.epochs,
            "early_stopping_patience": 10_000,
            "per_worker_batch_size": args.batch,
        }
        plain = json.loads(
            subprocess.run(
                [sys.executable, __file__, "--plain", features, "--epochs", str(args.epochs),
                 "--batch", str(args.batch)],
                check=True, env=env, capture_output=True, text=True,
            ).stdout.strip().splitlines()[-1]
        )  # fmt: skip
        print(json.dumps({"plain_fit": plain}), flush=True)
        one = launcher(features, 1, fixed)
        print(json.dumps({"launcher_1": one}), flush=True)
        two = launcher(features, 2, fixed)
        print(json.dumps({"launcher_2": two}), flush=True)
        quality = launcher(features, 2, {"epochs": args.max_epochs} if args.max_epochs else {})
        print(json.dumps({"default_config_2_workers": quality}), flush=True)

        test = lake.read_parquet(lake.open_box(output).path("split=test"))
        test_ids = set(test.column("customer_id").to_pylist())
        truth = generate(spec).truth
        truth = truth[(truth["ds"] == spec.end_ds) & truth["customer_id"].isin(test_ids)]
        bayes = bayes_auc(truth)
    test_auc = quality["metrics"]["test_auc"]
    summary = {
        "benchmark": "train",
        "cores": os.cpu_count(),
        "customers": args.customers,
        "epochs_for_throughput": args.epochs,
        "per_worker_batch_for_throughput": args.batch,
        "plain_fit_examples_per_second": round(plain["examples_per_second"]),
        "launcher_1_worker_examples_per_second": round(one["examples_per_second"]),
        "launcher_2_workers_examples_per_second": round(two["examples_per_second"]),
        "ratio_2_workers_to_plain_fit": round(
            two["examples_per_second"] / plain["examples_per_second"], 3
        ),
        "ratio_1_worker_to_plain_fit": round(
            one["examples_per_second"] / plain["examples_per_second"], 3
        ),
        "launcher_fixed_overhead_seconds": round(one["stage_seconds"] - one["train_seconds"], 1),
        "two_workers_identical_weights": two["same_weights"] and quality["same_weights"],
        "test_auc": round(test_auc, 4),
        "bayes_optimal_test_auc": round(bayes, 4),
        "ratio_test_auc_to_bayes": round(test_auc / bayes, 4),
        "epochs_run_with_early_stopping": quality["epochs"],
    }
    print(json.dumps(summary))
    if not summary["two_workers_identical_weights"]:
        print("train: the two workers ended with different weights", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
