"""Command-line entry point of the cluster-side jobs: ``mlops-job <job> [options]``.

The same entry point runs under ``spark-submit`` (this file as the application), as a Databricks
``python_wheel_task`` (console script ``mlops-job``) and from a shell. Exit codes: 0 success,
2 bad input (the message names it), 1 any other failure.

A job's machine-readable result (a JSON object) is printed as its last line and, with
``--result-uri``, written to that lake location in one write, where the Airflow task reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def emit(args: argparse.Namespace, result: dict[str, Any]) -> int:
    """Print the job's result and write it to ``--result-uri`` when given; returns EXIT_OK."""
    text = json.dumps(result, sort_keys=True)
    print(text)
    if getattr(args, "result_uri", None):
        from mlops_jobs import lake

        lake.locate(lake.ensure_within(args.result_uri)).write_text(text)
    return EXIT_OK


def refuse(args: argparse.Namespace, err: BaseException) -> int:
    """End a job that refused its input: print the error, and write it as the job's result
    (``{"error": …, "retryable": false}``) so the task fails without retrying. Returns
    EXIT_BAD_INPUT (EXIT_FAILED for a conflict with another writer, which a retry may clear)."""
    from mlops_jobs.lake import LakeConflictError

    if isinstance(err, LakeConflictError):  # another writer got in the way: a retry may succeed
        print(f"error: {args.job}: {err}", file=sys.stderr)
        return EXIT_FAILED
    message = f"{args.job}: {err}"
    print(f"error: {message}", file=sys.stderr)
    if getattr(args, "result_uri", None):
        from mlops_jobs import lake

        with contextlib.suppress(Exception):  # the exit code still says it
            payload = json.dumps({"error": message, "retryable": False})
            lake.locate(lake.ensure_within(args.result_uri)).write_text(payload)
    return EXIT_BAD_INPUT


def churn_features(args: argparse.Namespace) -> int:
    from mlops_jobs.churn.features import FeatureConfigError, SnapshotError, run, run_inference
    from mlops_jobs.lake import LakeError
    from mlops_jobs.validation import DataValidationError, ExpectationError

    build = run_inference if args.mode == "inference" else run
    try:
        manifest = build(args.snapshot, args.output, args.config)
    except (
        SnapshotError,
        FeatureConfigError,
        LakeError,
        DataValidationError,
        ExpectationError,
    ) as err:
        return refuse(args, err)
    if "splits" in manifest:
        rows = ", ".join(f"{s} {v['rows']}" for s, v in manifest["splits"].items()) + " rows"
    else:
        rows = f"{manifest['rows']} customers to score"
    print(f"churn-features: published {manifest['uri']} ({rows})")
    result = {"output": manifest["uri"], "content_hash": manifest["content_hash"]}
    return emit(args, {**result, "ds": manifest.get("ds")})


def churn_train(args: argparse.Namespace) -> int:
    from mlops_jobs.churn.model import TrainConfigError
    from mlops_jobs.churn.train import RegistrationError, TrainRequest, run
    from mlops_jobs.training.launcher import LaunchError

    try:
        overrides = json.loads(args.params)
        if not isinstance(overrides, dict):
            raise TrainConfigError("--params must be a JSON object")
        result = run(
            TrainRequest(
                features=args.features,
                workers=args.workers,
                overrides=overrides,
                registered_model=args.model_name,
                timeout_seconds=args.timeout_seconds,
                retrain=args.retrain,
                **instance_fields(args),
            )
        )
    except (TrainConfigError, json.JSONDecodeError) as err:
        return refuse(args, err)
    except (LaunchError, RegistrationError) as err:
        print(f"error: churn-train: {err}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"churn-train: {'reused' if result.get('reused') else 'registered'} "
        f"{result['model_name']} version {result['model_version']} "
        f"(MLflow run {result['mlflow_run_id']}, metrics {result['metrics']})"
    )
    return emit(args, result)


def churn_evaluate(args: argparse.Namespace) -> int:
    from mlops_jobs.churn.evaluate import EvaluateRequest, EvaluationError, run
    from mlops_jobs.churn.model import TrainConfigError
    from mlops_jobs.evaluation.gate import GateConfigError

    try:
        thresholds = json.loads(args.thresholds)
        if not isinstance(thresholds, dict):
            raise GateConfigError("--thresholds must be a JSON object")
        result = run(
            EvaluateRequest(
                features=args.features,
                candidate_version=args.candidate_version,
                registered_model=args.model_name,
                thresholds=thresholds,
                **instance_fields(args),
            )
        )
    except (EvaluationError, GateConfigError, TrainConfigError, json.JSONDecodeError) as err:
        return refuse(args, err)
    champion = result["champion"]
    print(
        f"churn-evaluate: {result['model_name']} version {result['candidate']['version']} "
        f"against {'champion version ' + champion['version'] if champion else 'no champion'} "
        f"and the baseline on {result['evaluated_on']['rows']} test rows"
    )
    return emit(args, result)


def churn_score(args: argparse.Namespace) -> int:
    from mlops_jobs.churn.score import ScoreRequest, ScoringError, run
    from mlops_jobs.lake import LakeError

    try:
        manifest = run(
            ScoreRequest(
                features=args.features,
                output=args.output,
                registered_model=args.model_name,
                alias=args.alias,
                threshold=args.threshold,
            )
        )
    except (ScoringError, LakeError) as err:
        return refuse(args, err)
    model = manifest["model"]
    print(
        f"churn-score: {model['name']} version {model['version']} scored {manifest['rows']} "
        f"customers ({manifest['predicted_churners']} predicted to churn) into {manifest['uri']}"
    )
    return emit(
        args,
        {
            "output": manifest["uri"],
            "ds": manifest["ds"],
            "rows": manifest["rows"],
            "model_version": model["version"],
            "content_hash": manifest["content_hash"],
        },
    )


def version(args: argparse.Namespace) -> int:
    """Print the package version: a cheap check that a cluster runs the expected code."""
    from mlops_jobs.distribution import source_hash

    return emit(args, {"package": "mlops_jobs", "source_hash": source_hash()})


def add_instance_arguments(parser: argparse.ArgumentParser, task_id: str) -> None:
    """The Airflow task instance a job runs for (tags its MLflow runs and versions)."""
    parser.add_argument("--dag-id", default="adhoc")
    parser.add_argument("--dag-run-id", default="adhoc")
    parser.add_argument("--task-id", default=task_id)
    parser.add_argument("--map-index", type=int, default=-1)
    parser.add_argument("--try-number", type=int, default=1)


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    """``--model-name``: the registered model, checked before any work (a bad name exits 2)."""
    from mlops_jobs.churn import MODEL_NAME
    from mlops_jobs.training.tracking import check_model_name

    def model_name(value: str) -> str:
        try:
            return check_model_name(value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parser.add_argument(
        "--model-name",
        type=model_name,
        default=MODEL_NAME,
        help="registered model: name, or catalog.schema.name in a Unity Catalog registry",
    )


def instance_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The task instance's ids from ``add_instance_arguments``, as request fields."""
    return {
        k: getattr(args, k) for k in ("dag_id", "dag_run_id", "task_id", "map_index", "try_number")
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops-job", description=__doc__)
    parser.add_argument(
        "--result-uri", default=None, help="lake location to write the job's result (JSON) to"
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment setting for the job (for clusters whose environment a run cannot "
        "set); repeatable",
    )
    jobs = parser.add_subparsers(dest="job", required=True)
    features = jobs.add_parser("churn-features", help="build the churn feature set")
    features.add_argument("--snapshot", required=True, help="URI of the input snapshot")
    features.add_argument("--output", required=True, help="URI of the feature set to publish")
    features.add_argument("--config", default=None, help="feature config JSON (default: packaged)")
    features.add_argument(
        "--mode",
        choices=("training", "inference"),
        default="training",
        help="training: labelled rows with a split; inference: every active customer, no label",
    )
    features.set_defaults(handler=churn_features)
    train = jobs.add_parser("churn-train", help="train and register the churn model")
    train.add_argument("--features", required=True, help="URI of the feature set")
    train.add_argument("--workers", type=int, default=2)
    train.add_argument("--params", default="{}", help="training parameter overrides (JSON)")
    add_model_argument(train)
    add_instance_arguments(train, "train_model")
    train.add_argument("--timeout-seconds", type=float, default=1800.0)
    train.add_argument(
        "--retrain",
        action="store_true",
        help="train even if a version was trained on the same inputs (else it is reused)",
    )
    train.set_defaults(handler=churn_train)
    evaluate = jobs.add_parser(
        "churn-evaluate", help="evaluate a candidate against the champion and a baseline"
    )
    evaluate.add_argument("--features", required=True, help="URI of the feature set")
    evaluate.add_argument("--candidate-version", required=True)
    add_model_argument(evaluate)
    evaluate.add_argument("--thresholds", default="{}", help="promotion config overrides (JSON)")
    add_instance_arguments(evaluate, "evaluate_model")
    evaluate.set_defaults(handler=churn_evaluate)
    score = jobs.add_parser("churn-score", help="score inference features with the champion")
    score.add_argument("--features", required=True, help="URI of the inference features")
    score.add_argument("--output", required=True, help="URI of the predictions to publish")
    add_model_argument(score)
    score.add_argument("--alias", default="champion")
    score.add_argument("--threshold", type=float, default=None, help="default: promotion config")
    score.set_defaults(handler=churn_score)
    jobs.add_parser("version", help="print the job package's version").set_defaults(handler=version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from mlops_jobs.lake import LakeError

    parser = build_parser()
    args = parser.parse_args(argv)
    for setting in args.setting:
        name, sep, value = setting.partition("=")
        if not sep or not name:
            parser.error(f"--setting must be NAME=VALUE, got {setting!r}")
        os.environ[name] = value
    try:
        return int(args.handler(args))
    except LakeError as err:  # a lake location given as an argument is invalid or missing
        return refuse(args, err)
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED


def console_main() -> None:
    """Console-script entry point (``mlops-job``), as the packaged wheel declares it."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
