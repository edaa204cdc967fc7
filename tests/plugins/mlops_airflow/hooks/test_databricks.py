"""DatabricksJobsHook.upload_job_package against the Databricks emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from mlops_airflow.exceptions import InvalidParameterError
from mlops_airflow.hooks.databricks import DatabricksJobsHook
from mlops_jobs.distribution import ENTRY_POINT, PACKAGE, build_wheel, source_hash
from mlops_localstack.databricks_emulator import DatabricksEmulator, HttpFault
from tests.support import databricks_emulator

WHEEL_DIR = "/Volumes/main/mlops/artifacts/wheels"


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksEmulator]:
    root = tmp_path / "databricks"
    with databricks_emulator(root, monkeypatch, pending_seconds=0.05) as emulator:
        yield emulator


@pytest.fixture
def hook(emulator: DatabricksEmulator) -> DatabricksJobsHook:
    return DatabricksJobsHook(retry_limit=3, retry_delay=0.1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def uploads(emulator: DatabricksEmulator) -> list[tuple[str, str]]:
    return [
        (method, path)
        for method, path in emulator.requests
        if method == "PUT" or path.endswith(("dbfs/create", "dbfs/put"))
    ]


def test_volume_upload_goes_through_the_files_api_once(
    emulator: DatabricksEmulator, hook: DatabricksJobsHook, wheel: Path
) -> None:
    library = hook.upload_job_package(wheel, WHEEL_DIR + "/")

    assert library == f"{WHEEL_DIR}/{wheel.name}"
    stored = emulator.volumes_root / "main/mlops/artifacts/wheels" / wheel.name
    assert stored.read_bytes() == wheel.read_bytes()
    assert uploads(emulator) == [
        ("PUT", f"/api/2.0/fs/directories{WHEEL_DIR}"),
        ("PUT", f"/api/2.0/fs/files{WHEEL_DIR}/{quote(wheel.name)}"),
    ]

    emulator.requests.clear()
    assert hook.upload_job_package(wheel, WHEEL_DIR) == library
    assert uploads(emulator) == []
    assert [method for method, _ in emulator.requests] == ["HEAD"]


def test_volume_file_of_another_size_is_replaced_and_retries_are_made(
    emulator: DatabricksEmulator, hook: DatabricksJobsHook, wheel: Path
) -> None:
    stored = emulator.volumes_root / "main/mlops/artifacts/wheels" / wheel.name
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"a partial upload")
    emulator.faults.http = [HttpFault("/api/2.0/fs/files/", 503, 1)]

    hook.upload_job_package(wheel, WHEEL_DIR)
    assert stored.read_bytes() == wheel.read_bytes()


def test_dbfs_upload_goes_through_the_dbfs_api_once(
    emulator: DatabricksEmulator, hook: DatabricksJobsHook, wheel: Path
) -> None:
    library = hook.upload_job_package(wheel, "dbfs:/FileStore/mlops/wheels")

    assert library == f"dbfs:/FileStore/mlops/wheels/{wheel.name}"
    stored = emulator.dbfs_root / "FileStore/mlops/wheels" / wheel.name
    assert stored.read_bytes() == wheel.read_bytes()
    assert uploads(emulator) == [("POST", "/api/2.0/dbfs/create")]
    hook.upload_job_package(wheel, "dbfs:/FileStore/mlops/wheels")
    assert len(uploads(emulator)) == 1


@pytest.mark.parametrize(
    "wheel_dir", ["s3://bucket/wheels", "/Volumes/main/wheels", "wheels", "/Workspace/wheels"]
)
def test_other_wheel_dirs_are_refused_naming_the_setting(
    emulator: DatabricksEmulator, hook: DatabricksJobsHook, wheel: Path, wheel_dir: str
) -> None:
    with pytest.raises(InvalidParameterError, match="mlops_databricks_wheel_dir") as refused:
        hook.upload_job_package(wheel, wheel_dir)
    assert "/Volumes/<catalog>/<schema>/<volume>" in str(refused.value) and "dbfs:/" in str(
        refused.value
    )
    assert emulator.requests == []


def test_uploaded_job_package_runs_on_the_cluster(
    emulator: DatabricksEmulator, hook: DatabricksJobsHook, wheel: Path
) -> None:
    library = hook.upload_job_package(wheel, WHEEL_DIR)
    task = {
        "task_key": "version",
        "python_wheel_task": {
            "package_name": PACKAGE,
            "entry_point": ENTRY_POINT,
            "parameters": ["version"],
        },
        "libraries": [{"whl": library}],
        "new_cluster": {"spark_version": "16.4.x-scala2.12", "num_workers": 1},
    }
    run_id = hook.submit_run({"run_name": "version", "tasks": [task]})
    deadline = time.monotonic() + 60
    while not hook.get_run_state(run_id).is_terminal and time.monotonic() < deadline:
        time.sleep(0.1)
    run = hook.get_run(run_id)
    assert run["state"].get("result_state") == "SUCCESS", run["state"]
    logs = hook.get_run_output(run["tasks"][0]["run_id"])["logs"]
    assert json.loads(logs.strip().splitlines()[-1]) == {
        "package": PACKAGE,
        "source_hash": source_hash(),
    }
