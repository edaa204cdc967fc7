"""Print what local pipeline runs produced: per ``ds`` the snapshot, the feature set, the
candidate with its evaluation and promotion decision; then the registry's aliases, the latest
predictions and where to look further.

Usage: ``python -m mlops_localstack.summary --ds 2026-02-28 --ds 2026-03-01``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from mlops_jobs import lake
from mlops_jobs.churn import MODEL_NAME
from mlops_jobs.training.tracking import check_model_name
from mlops_localstack.env import hiveserver2_port, local_root

MODEL = check_model_name(os.environ.get("MLOPS_MODEL_NAME", "").strip() or MODEL_NAME)


def _auc(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(number) else f"{number:.4f}"


def summarize_day(ds: str, client: Any) -> list[str]:
    root = lake.lake_root()
    lines = [f"ds={ds}"]
    snapshot = lake.box_uri(root, "churn/snapshots", ds)
    try:
        manifest = lake.read_manifest(snapshot)
    except lake.LakeError as err:
        lines.append(f"  snapshot: none ({err})")
    else:
        tables = ", ".join(f"{a} {t['rows']:,}" for a, t in manifest["tables"].items())
        lines.append(f"  snapshot: {tables} rows; content hash {manifest['content_hash'][:12]}…")
    try:
        features = lake.open_box(lake.box_uri(root, "churn/features", ds))
    except lake.LakeError as err:
        lines.append(f"  features: none ({err})")
        return lines
    feature_manifest = features.manifest
    splits = ", ".join(f"{s} {v['rows']:,}" for s, v in feature_manifest["splits"].items())
    lines.append(
        f"  features: {len(feature_manifest['features'])} features; rows: {splits}; "
        f"churn rate {feature_manifest.get('label_rate') or 0:.3f}"
    )
    if client is None:
        return lines
    content = features.manifest.get("content_hash")
    for version in _versions(client):
        run = client.get_run(version.run_id)
        # by content: a version reused for unchanged inputs was trained on an earlier
        # version of the same feature set
        if (
            run.data.tags.get("features.content_hash") != content
            or run.data.tags.get("role") != "training"
        ):
            continue
        m = run.data.metrics
        tags = version.tags
        lines.append(
            f"  candidate: {MODEL} version {version.version} (run {version.run_id[:8]}…, "
            f"{run.data.params.get('workers', '?')} workers), valid AUC "
            f"{_auc(m.get('valid_auc'))}"
        )
        champion = tags.get("validation.champion_version", "none")
        lines.append(
            f"    test ROC AUC: candidate {_auc(m.get('test_roc_auc'))}, "
            + (
                f"champion v{champion} {_auc(m.get('champion_test_roc_auc'))}, "
                if champion != "none"
                else "no champion yet, "
            )
            + f"MLlib baseline {_auc(m.get('baseline_test_roc_auc'))}; "
            f"PR AUC {_auc(m.get('test_pr_auc'))}, log loss {_auc(m.get('test_log_loss'))}, "
            f"Brier {_auc(m.get('test_brier_score'))}"
        )
        if "oot_roc_auc" in m:
            later = features.manifest.get("out_of_time") or {}
            lines.append(
                f"    out of time (trained on ds={features.manifest.get('label_ds')}, tested on "
                f"ds={later.get('ds')}): ROC AUC candidate {_auc(m.get('oot_roc_auc'))}, "
                + (
                    f"champion v{champion} {_auc(m.get('champion_oot_roc_auc'))}, "
                    if champion != "none"
                    else ""
                )
                + f"MLlib baseline {_auc(m.get('baseline_oot_roc_auc'))}"
            )
        status = tags.get("validation_status", "not decided")
        detail = tags.get("validation.failed_checks") or tags.get("validation.checks", "")
        lines.append(f"    decision: {status}" + (f" ({detail})" if detail else ""))
    return lines


def _versions(client: Any) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name = '{MODEL}'")
    except MlflowException:
        return []
    return sorted((v for v in versions if v.run_id), key=lambda v: int(v.version), reverse=True)


def _alias(client: Any, alias: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(MODEL, alias).version)
    except MlflowException:
        return "-"


def _hive_rows(ds: str) -> str:
    try:
        from pyhive import hive

        conn = hive.connect(host="127.0.0.1", port=hiveserver2_port(), auth="NONE")
        cursor = conn.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM ml.churn_predictions WHERE ds = '{ds}'")
        (count,) = cursor.fetchone()
        conn.close()
        return f"{int(count):,} rows"
    except Exception as err:  # the summary reports, it never fails a run
        return f"not readable ({type(err).__name__})"


def summarize(days: list[str]) -> list[str]:
    client = None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        client = mlflow.MlflowClient()
    lines = [f"Local pipeline output (lake: {lake.lake_root()})"]
    for ds in days:
        lines += summarize_day(ds, client)
    if client is not None:
        lines.append(
            f"registry: {MODEL}@champion = version {_alias(client, 'champion')}, "
            f"@previous = version {_alias(client, 'previous')}"
        )
    last = days[-1]
    predictions = lake.box_uri(lake.lake_root(), "churn/predictions", last)
    try:
        manifest = lake.read_manifest(predictions)
    except lake.LakeError:
        lines.append(f"predictions ds={last}: none")
    else:
        lines.append(
            f"predictions ds={last}: {manifest['rows']:,} customers scored by {MODEL} version "
            f"{manifest['model']['version']}, {manifest['predicted_churners']:,} above the "
            f"threshold {manifest['threshold']}; Hive ml.churn_predictions/ds={last}: "
            f"{_hive_rows(last)}"
        )
    truth = local_root() / "demo" / "truth" / "summary.json"
    if truth.is_file():
        demo = json.loads(truth.read_text())
        lines.append(
            f"demo truth: Bayes-optimal AUC {demo['bayes_auc']:.4f}, churn rate "
            f"{demo['churn_rate']:.3f} (never read by the pipeline)"
        )
    lines += [
        "look further: make ui starts the Airflow UI (http://127.0.0.1:8080, login printed at "
        "start-up) and the MLflow UI (http://127.0.0.1:5000; report: the candidate's run, "
        "artifacts/evaluation/)",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="summary", description=__doc__)
    parser.add_argument("--ds", action="append", required=True, help="a day; repeatable")
    args = parser.parse_args(argv)
    print("\n".join(summarize(args.ds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
