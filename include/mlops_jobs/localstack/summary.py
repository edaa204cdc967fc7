"""Print what a local pipeline run produced for one ``ds``.

Usage: ``python -m mlops_jobs.localstack.summary --ds 2026-03-01``
"""

from __future__ import annotations

import argparse
import json
import sys

from mlops_jobs import lake
from mlops_jobs.localstack.env import local_root


def summarize(ds: str) -> list[str]:
    root = lake.lake_root()
    lines = [f"Local pipeline output for ds={ds} (lake: {root})"]
    snapshot = lake.box_path(root, "churn/snapshots", ds)
    try:
        manifest = lake.read_manifest(snapshot)
    except lake.LakeError as err:
        lines.append(f"  snapshot: none ({err})")
    else:
        lines.append(f"  snapshot: {lake.path_uri(snapshot)}")
        lines.append(f"    content hash {manifest['content_hash'][:16]}…")
        for alias, table in manifest["tables"].items():
            window = table.get("partitions")
            span = f", ds {window['first']}..{window['last']}" if window else ""
            lines.append(f"    {alias:<13} {table['rows']:>9,} rows from {table['table']}{span}")
    features = lake.box_path(root, "churn/features", ds)
    try:
        feature_manifest = lake.read_manifest(features)
    except lake.LakeError as err:
        lines.append(f"  features: none ({err})")
    else:
        splits = ", ".join(f"{s} {v['rows']:,}" for s, v in feature_manifest["splits"].items())
        lines.append(f"  features: {lake.path_uri(features)}")
        lines.append(
            f"    {len(feature_manifest['features'])} features; rows: {splits}; "
            f"churn rate {feature_manifest.get('label_rate') or 0:.3f}"
        )
    lines += _registered_models(lake.path_uri(features))
    truth = local_root() / "demo" / "truth" / "summary.json"
    if truth.is_file():
        demo = json.loads(truth.read_text())
        lines.append(
            f"  demo truth: Bayes-optimal AUC {demo['bayes_auc']:.4f}, "
            f"churn rate {demo['churn_rate']:.3f} (never read by the pipeline)"
        )
    return lines


def _registered_models(features_uri: str) -> list[str]:
    """Versions of ``churn`` trained on this feature set, newest first."""
    import os

    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return ["  models: MLFLOW_TRACKING_URI is not set"]
    import mlflow

    client = mlflow.MlflowClient()
    lines = []
    try:
        versions = client.search_model_versions("name = 'churn'")
    except mlflow.exceptions.MlflowException as err:
        return [f"  models: none ({err.message})"]
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        if not version.run_id:
            continue
        run = client.get_run(version.run_id)
        if run.data.tags.get("features.uri") != features_uri:
            continue
        metrics = run.data.metrics
        lines.append(
            f"  model: churn version {version.version} ({version.tags.get('role', '-')}), "
            f"run {version.run_id}, valid AUC {metrics.get('valid_auc', float('nan')):.4f}, "
            f"test AUC {metrics.get('test_auc', float('nan')):.4f}, "
            f"{run.data.params.get('workers', '?')} workers"
        )
    return lines or ["  models: none registered from this feature set"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="summary", description=__doc__)
    parser.add_argument("--ds", required=True)
    args = parser.parse_args(argv)
    print("\n".join(summarize(args.ds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
