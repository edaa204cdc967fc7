"""The Databricks emulator, driven by the real clients: the provider's ``DatabricksHook`` and
databricks-sdk's ``WorkspaceClient``.

The runs execute a tiny ``probe`` wheel whose entry point prints the job's environment and
working directory, so no Spark session is started.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import DatabricksHook
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import AlreadyExists, BadRequest, NotFound

from mlops_localstack.databricks_emulator import DatabricksEmulator
from tests.support import databricks_emulator

VOLUME = "/Volumes/main/mlops/artifacts"
NEW_CLUSTER = {"spark_version": "16.4.x-scala2.12", "node_type_id": "i3.xlarge", "num_workers": 1}
PROBE = (
    "import json, os\n"
    "def main():\n"
    "    print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))\n"
)


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabricksEmulator]:
    with databricks_emulator(
        tmp_path / "databricks",
        monkeypatch,
        pending_seconds=0.05,
        cluster_env={"CLUSTER_SETTING": "shared"},
    ) as emulator:
        yield emulator


@pytest.fixture
def hook(emulator: DatabricksEmulator) -> DatabricksHook:
    return DatabricksHook(retry_limit=3, retry_delay=0.1)


@pytest.fixture
def workspace(emulator: DatabricksEmulator) -> WorkspaceClient:
    return WorkspaceClient(host=emulator.url, token=emulator.token)


def probe_wheel(requires: Sequence[str] = ()) -> bytes:
    """A wheel with one console script, ``probe``, that prints its environment as JSON."""
    dist_info = "probe-0.1.dist-info"
    files = {
        "probe.py": PROBE,
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\nName: probe\nVersion: 0.1\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{dist_info}/entry_points.txt": "[console_scripts]\nprobe = probe:main\n",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload_probe(workspace: WorkspaceClient, requires: Sequence[str] = ()) -> str:
    path = f"{VOLUME}/wheels/probe-0.1-py3-none-any.whl"
    workspace.files.upload(path, io.BytesIO(probe_wheel(requires)), overwrite=True)
    return path


def download(workspace: WorkspaceClient, path: str) -> bytes:
    contents = workspace.files.download(path).contents
    assert contents is not None
    return contents.read()


def submit(hook: DatabricksHook, library: str, cluster: dict[str, Any] | None = None) -> int:
    task = {
        "task_key": "probe",
        "python_wheel_task": {"package_name": "probe", "entry_point": "probe"},
        "libraries": [{"whl": library}],
        **(cluster or {"new_cluster": NEW_CLUSTER}),
    }
    return hook.submit_run({"run_name": "probe", "tasks": [task]})


def wait(hook: DatabricksHook, run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = hook.get_run(run_id)
        if run["state"]["life_cycle_state"] in {"TERMINATED", "INTERNAL_ERROR", "SKIPPED"}:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def probe_output(hook: DatabricksHook, run: dict[str, Any]) -> dict[str, Any]:
    assert run["state"].get("result_state") == "SUCCESS", run["state"]
    output = hook.get_run_output(run["tasks"][0]["run_id"])
    result: dict[str, Any] = json.loads(output["logs"].strip().splitlines()[-1])
    return result


# -- Files API and storage --------------------------------------------------------------------


def test_files_api_round_trip_through_the_sdk(
    emulator: DatabricksEmulator, workspace: WorkspaceClient
) -> None:
    path = f"{VOLUME}/reports/2026-03-01/summary.json"
    workspace.files.create_directory(f"{VOLUME}/reports")
    workspace.files.upload(path, io.BytesIO(b'{"rows": 3}'))

    stored = emulator.volumes_root / "main/mlops/artifacts/reports/2026-03-01/summary.json"
    assert stored.read_bytes() == b'{"rows": 3}'
    metadata = workspace.files.get_metadata(path)
    assert metadata.content_length == 11 and metadata.last_modified
    assert download(workspace, path) == b'{"rows": 3}'
    entries = list(workspace.files.list_directory_contents(f"{VOLUME}/reports"))
    assert [(e.path, e.is_directory) for e in entries] == [(f"{VOLUME}/reports/2026-03-01", True)]
    with pytest.raises(AlreadyExists):
        workspace.files.upload(path, io.BytesIO(b"{}"), overwrite=False)

    workspace.files.delete(path)
    with pytest.raises(NotFound):
        workspace.files.get_metadata(path)
    with pytest.raises(NotFound):
        workspace.files.delete(path)
    with pytest.raises(BadRequest, match="not in a volume"):
        workspace.files.upload("/Volumes/main/mlops", io.BytesIO(b"x"))


def test_files_api_needs_the_token(emulator: DatabricksEmulator) -> None:
    intruder = WorkspaceClient(host=emulator.url, token="dapi-wrong")
    with pytest.raises(Exception, match="Invalid access token"):
        intruder.files.upload(f"{VOLUME}/x.txt", io.BytesIO(b"x"))
    assert not (emulator.volumes_root / "main").exists()


# -- runs/list ---------------------------------------------------------------------------------


def test_runs_list_filters_and_pages_newest_first(
    emulator: DatabricksEmulator, hook: DatabricksHook, workspace: WorkspaceClient
) -> None:
    library = upload_probe(workspace)
    finished = []
    for _ in range(3):
        run_id = submit(hook, library)
        wait(hook, run_id)
        finished.append(run_id)
        time.sleep(0.01)  # distinct start times
    emulator.faults.start_delay_seconds = 60
    active = submit(hook, library)

    first = hook._do_api_call(("GET", "2.1/jobs/runs/list"), {"completed_only": "true", "limit": 2})
    assert [r["run_id"] for r in first["runs"]] == finished[:0:-1] and first["has_more"]
    assert first["runs"][0]["state"]["result_state"] == "SUCCESS"
    assert first["runs"][0]["run_type"] == "SUBMIT_RUN" and "tasks" not in first["runs"][0]
    second = hook._do_api_call(
        ("GET", "2.1/jobs/runs/list"), {"completed_only": "true", "limit": 2, "offset": 2}
    )
    assert [r["run_id"] for r in second["runs"]] == finished[:1] and not second["has_more"]

    listed = workspace.jobs.list_runs(completed_only=True, limit=1, expand_tasks=True)
    runs = list(listed)
    assert [r.run_id for r in runs] == finished[::-1]  # three pages through next_page_token
    assert runs[0].tasks and runs[0].tasks[0].task_key == "probe"
    assert [r.run_id for r in workspace.jobs.list_runs(active_only=True)] == [active]

    since = hook.get_run(finished[1])["start_time"]
    recent = hook._do_api_call(("GET", "2.2/jobs/runs/list"), {"start_time_from": since})
    assert [r["run_id"] for r in recent["runs"]] == [active, finished[2], finished[1]]
    assert hook._do_api_call(("GET", "2.2/jobs/runs/list"), {"run_type": "JOB_RUN"}) == {
        "has_more": False
    }
    with pytest.raises(DatabricksApiError, match="cannot both be true"):
        hook._do_api_call(
            ("GET", "2.2/jobs/runs/list"), {"active_only": "true", "completed_only": "true"}
        )
    hook.cancel_run(active)


# -- libraries ---------------------------------------------------------------------------------


def test_library_on_the_dbfs_root_is_refused(
    emulator: DatabricksEmulator, hook: DatabricksHook
) -> None:
    library = "dbfs:/FileStore/wheels/probe-0.1-py3-none-any.whl"
    (emulator.dbfs_root / "FileStore/wheels").mkdir(parents=True)
    (emulator.dbfs_root / "FileStore/wheels/probe-0.1-py3-none-any.whl").write_bytes(probe_wheel())

    with pytest.raises(DatabricksApiError) as refused:
        submit(hook, library)
    assert refused.value.http_status_code == 400
    message = str(refused.value)
    assert "INVALID_PARAMETER_VALUE" in message and library in message
    assert "DBFS root are disabled" in message and "Unity Catalog volume" in message

    emulator.allow_dbfs_root_libraries = True
    assert probe_output(hook, wait(hook, submit(hook, library)))["env"]


def test_missing_volume_library_is_refused(hook: DatabricksHook) -> None:
    with pytest.raises(DatabricksApiError, match="does not exist"):
        submit(hook, f"{VOLUME}/wheels/missing-0.1-py3-none-any.whl")


@pytest.mark.parametrize(
    ("requires", "unmet"),
    [
        (["mlops-no-such-package>=1"], "mlops-no-such-package>=1 (not installed)"),
        (["packaging<1"], "packaging<1 (packaging "),
    ],
)
def test_unmet_dependency_fails_the_run_before_the_job(
    emulator: DatabricksEmulator,
    hook: DatabricksHook,
    workspace: WorkspaceClient,
    requires: list[str],
    unmet: str,
) -> None:
    library = upload_probe(workspace, requires)
    run = wait(hook, submit(hook, library))
    assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"
    assert "Library installation failed" in run["state"]["state_message"]
    assert library in run["state"]["state_message"] and unmet in run["state"]["state_message"]
    assert not (emulator.root / "runs" / str(run["run_id"]) / "stdout").exists()


def test_dependencies_are_checked_with_their_markers(
    hook: DatabricksHook, workspace: WorkspaceClient
) -> None:
    library = upload_probe(
        workspace, ["packaging>=20", "mlops-no-such-package; python_version < '3'"]
    )
    assert probe_output(hook, wait(hook, submit(hook, library)))["env"]


# -- the job's environment ---------------------------------------------------------------------


def test_job_gets_only_the_cluster_environment(
    emulator: DatabricksEmulator,
    hook: DatabricksHook,
    workspace: WorkspaceClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLOPS_CALLER_ONLY", "must not reach the job")
    emulator.secrets[("mlops", "mlflow-token")] = "s3cr3t"
    cluster = {
        **NEW_CLUSTER,
        "spark_env_vars": {
            "MLOPS_SETTING": "from the run",
            "MLFLOW_TRACKING_TOKEN": "{{secrets/mlops/mlflow-token}}",
        },
        "spark_conf": {"spark.mlops.token": "{{secrets/mlops/mlflow-token}}"},
    }
    run = wait(hook, submit(hook, upload_probe(workspace), {"new_cluster": cluster}))
    probe = probe_output(hook, run)
    env = probe["env"]

    run_dir = emulator.root / "runs" / str(run["run_id"])
    runtime = {
        "PATH", "HOME", "DATABRICKS_RUNTIME_VERSION", "PYTHONPATH", "PYSPARK_PYTHON",
        "PYSPARK_SUBMIT_ARGS", "SPARK_LOCAL_IP", "MLOPS_SPARK_MASTER", "MLOPS_LAKE_MOUNTS",
    }  # fmt: skip
    optional = {"JAVA_HOME", "LC_CTYPE"}  # LC_CTYPE: Python's C-locale coercion
    assert runtime | {"MLOPS_SETTING", "MLFLOW_TRACKING_TOKEN"} <= set(env)
    assert set(env) - runtime - optional == {"MLOPS_SETTING", "MLFLOW_TRACKING_TOKEN"}
    assert env["MLOPS_SETTING"] == "from the run" and env["MLFLOW_TRACKING_TOKEN"] == "s3cr3t"
    assert "spark.mlops.token=s3cr3t" in env["PYSPARK_SUBMIT_ARGS"]
    assert env["DATABRICKS_RUNTIME_VERSION"] == "16.4"
    assert Path(env["HOME"]) == Path(probe["cwd"]) == run_dir
    assert env["PYTHONPATH"] == str(run_dir / "site")
    assert json.loads(env["MLOPS_LAKE_MOUNTS"]) == {
        "dbfs:/": emulator.dbfs_root.as_uri() + "/",
        "/Volumes/": emulator.volumes_root.as_uri() + "/",
    }


def test_existing_cluster_runs_get_the_clusters_environment(
    hook: DatabricksHook, workspace: WorkspaceClient
) -> None:
    run = wait(hook, submit(hook, upload_probe(workspace), {"existing_cluster_id": "0101-abc"}))
    env = probe_output(hook, run)["env"]
    assert env["CLUSTER_SETTING"] == "shared" and env["DATABRICKS_RUNTIME_VERSION"] == "15.4"


def test_unknown_secret_fails_the_cluster_start(
    hook: DatabricksHook, workspace: WorkspaceClient
) -> None:
    cluster = {**NEW_CLUSTER, "spark_env_vars": {"TOKEN": "{{secrets/mlops/missing}}"}}
    run = wait(hook, submit(hook, upload_probe(workspace), {"new_cluster": cluster}))
    assert run["state"]["life_cycle_state"] == "INTERNAL_ERROR"
    assert "scope: mlops and key: missing" in run["state"]["state_message"]


def test_job_writes_and_api_uploads_are_the_same_files(
    emulator: DatabricksEmulator, hook: DatabricksHook, workspace: WorkspaceClient
) -> None:
    writer = (
        "import json, os\nfrom pathlib import Path\nfrom urllib.parse import urlparse\n"
        "def main():\n"
        "    volumes = json.loads(os.environ['MLOPS_LAKE_MOUNTS'])['/Volumes/']\n"
        "    out = Path(urlparse(volumes).path) / 'main/mlops/artifacts/out/result.txt'\n"
        "    out.parent.mkdir(parents=True)\n"
        "    out.write_text('written by the job')\n"
    )
    wheel = io.BytesIO(probe_wheel())
    patched = io.BytesIO()
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(patched, "w") as target:
        for name in source.namelist():
            target.writestr(name, writer if name == "probe.py" else source.read(name))
    library = f"{VOLUME}/wheels/writer-0.1-py3-none-any.whl"
    workspace.files.upload(library, io.BytesIO(patched.getvalue()))

    run = wait(hook, submit(hook, library))
    assert run["state"]["result_state"] == "SUCCESS", run["state"]
    assert download(workspace, f"{VOLUME}/out/result.txt") == b"written by the job"
