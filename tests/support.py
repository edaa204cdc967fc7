"""Helpers shared by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_SOURCES
from mlops_jobs.demo.generator import DemoSpec, generate
from mlops_jobs.demo.warehouse import arrow_schema


@dataclass
class FakeTI:
    """The task-instance attributes operators read in ``execute`` (ids and XCom push)."""

    dag_id: str = "churn_training"
    task_id: str = "build_features"
    run_id: str = "manual__2026-03-01T00:00:00+00:00"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def write_demo_snapshot(lake_root: Path, spec: DemoSpec, lookback_days: int = 90) -> Path:
    """A snapshot box as the extraction stage publishes it, written straight from the generator
    (for tests of later stages that should not need HiveServer2)."""
    data = generate(spec)
    labels = data.labels[data.labels["ds"] == spec.end_ds]
    frames = {"customers": data.customers, "events": data.events, "churn_labels": labels}
    final = lake.box_path(lake_root, "churn/snapshots", spec.end_ds)
    with lake.publishing(final) as staging:
        tables = {}
        for contract in CHURN_SOURCES:
            directory = staging / contract.alias
            directory.mkdir()
            table = pa.Table.from_pandas(
                frames[contract.alias], schema=arrow_schema(contract), preserve_index=False
            )
            pq.write_table(table, directory / "part-00000.parquet")
            tables[contract.alias] = {
                "table": str(contract.table),
                "path": contract.alias,
                "rows": table.num_rows,
                "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
            }
        lake.write_manifest(
            staging,
            {
                "ds": spec.end_ds,
                "lookback_days": lookback_days,
                "tables": tables,
                "content_hash": lake.content_hash(lake.data_files(staging)),
            },
        )
    return final
