"""The Jobs API: one-time runs through their life cycle, executed as on a job cluster."""

from __future__ import annotations

import email.parser
import email.utils
import io
import json
import os
import re
import shlex
import subprocess
import threading
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_jobs.process import ProcessGroup
from mlops_localstack.databricks_emulator.model import (
    ACTIVE_STATES,
    RUN_TYPES,
    RUNS_LIST_MAX_LIMIT,
    SECRET_REFERENCE,
    ApiError,
    Faults,
    LibraryError,
    Run,
    _flag,
    _integer,
    _page_offset,
    _page_token,
)

# Runs in the runtime interpreter: prints the unmet requirements among argv[1] (a JSON list).
_DEPENDENCY_CHECK = """
import json, sys
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement
unmet = []
for line in json.loads(sys.argv[1]):
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        unmet.append(f"{line} (not installed)")
        continue
    if not requirement.specifier.contains(installed, prereleases=True):
        unmet.append(f"{line} ({requirement.name} {installed} is installed)")
print(json.dumps(unmet))
"""


class JobsApi:
    """``2.x/jobs/runs/*``: submit, get, list, get-output, cancel; each run executes for real
    (cluster environment, library installation, the wheel's entry point in a fresh process)."""

    root: Path
    dbfs_root: Path
    volumes_root: Path
    token: str
    pending_seconds: float
    python: str
    cluster_env: dict[str, str]
    runtime_version: str
    allow_dbfs_root_libraries: bool
    secrets: dict[tuple[str, str], str]
    faults: Faults
    runs: dict[int, Run]
    _tokens: dict[str, int]
    _ids: Any
    _lock: Any

    if TYPE_CHECKING:  # provided by DatabricksEmulator and StorageApi

        @property
        def url(self) -> str: ...

        def lake_mounts(self) -> dict[str, str]: ...

        def dbfs_file(self, path: str) -> Path: ...

        def volume_file(self, path: str) -> Path: ...

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or len(tasks) != 1:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "the emulator runs exactly one task")
        task = tasks[0]
        if "python_wheel_task" not in task:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "only python_wheel_task is emulated")
        if not ({"new_cluster", "existing_cluster_id"} & set(task)):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "task has no cluster specification")
        wheels = [lib["whl"] for lib in task.get("libraries", []) if "whl" in lib]
        if not wheels:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "task has no whl library")
        for wheel in wheels:
            if not self.library_file(wheel).is_file():
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Library {wheel} does not exist.")
        token = body.get("idempotency_token")
        if token is not None and len(token) > 64:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "idempotency_token exceeds 64 chars")
        with self._lock:
            if token and token in self._tokens:
                return {"run_id": self._tokens[token]}
            run = Run(run_id=next(self._ids), task_run_id=next(self._ids), request=body)
            self.runs[run.run_id] = run
            if token:
                self._tokens[token] = run.run_id
        threading.Thread(target=self._execute, args=(run,), daemon=True).start()
        return {"run_id": run.run_id}

    def library_file(self, library: str) -> Path:
        """The file behind a ``whl`` library path; DBFS root libraries are refused (Runtime 15+)."""
        if library.startswith(("/Volumes/", "dbfs:/Volumes/")):
            return self.volume_file(library.removeprefix("dbfs:"))
        if library.startswith("dbfs:/"):
            if not self.allow_dbfs_root_libraries:
                raise ApiError(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"Library {library} is on the DBFS root: libraries on the DBFS root are "
                    "disabled on Databricks Runtime 15 and above. Use a Unity Catalog volume "
                    "(/Volumes/<catalog>/<schema>/<volume>/...) instead.",
                )
            return self.dbfs_file(library)
        raise ApiError(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Library {library}: the emulator installs wheels from /Volumes/... or dbfs:/... only.",
        )

    def _run(self, body: dict[str, Any], key: str = "run_id") -> Run:
        try:
            run_id = int(body[key])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{key} is required") from None
        for run in self.runs.values():
            if run_id in (run.run_id, run.task_run_id):
                return run
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")

    def _run_view(self, run: Run, expand_tasks: bool = True) -> dict[str, Any]:
        view: dict[str, Any] = {
            "job_id": run.run_id,
            "run_id": run.run_id,
            "run_name": run.request.get("run_name", "Untitled"),
            "run_type": "SUBMIT_RUN",
            "number_in_job": 1,
            "run_page_url": f"{self.url}/?o=0#job/{run.run_id}/run/1",
            "state": run.state(),
            "start_time": run.start_time,
            "end_time": run.end_time,
        }
        if expand_tasks:
            view["tasks"] = [
                {
                    "run_id": run.task_run_id,
                    "task_key": run.task.get("task_key", "task"),
                    "state": run.state(),
                    "attempt_number": 0,
                }
            ]
        return view

    def get_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._run_view(self._run(body))

    def list_runs(self, body: dict[str, Any]) -> dict[str, Any]:
        """``runs/list``: newest first, filtered and paged as the public API does."""
        active_only = _flag(body, "active_only")
        completed_only = _flag(body, "completed_only")
        if active_only and completed_only:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "active_only and completed_only cannot both be true",
            )
        run_type = body.get("run_type")
        if run_type is not None and run_type not in RUN_TYPES:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid run_type {run_type!r}")
        limit = _integer(body, "limit", 20) or RUNS_LIST_MAX_LIMIT
        if not 0 < limit <= RUNS_LIST_MAX_LIMIT:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"limit must be between 1 and {RUNS_LIST_MAX_LIMIT}, got {limit}",
            )
        if body.get("page_token"):
            offset = _page_offset(str(body["page_token"]))
        else:
            offset = _integer(body, "offset", 0)
        start_from = _integer(body, "start_time_from", 0)
        start_to = _integer(body, "start_time_to", 0)
        job_id = _integer(body, "job_id", 0)
        with self._lock:
            runs = sorted(self.runs.values(), key=lambda r: (r.start_time, r.run_id), reverse=True)
        selected = [
            run
            for run in runs
            if (run_type in (None, "SUBMIT_RUN"))
            and (not job_id or run.run_id == job_id)
            and (not active_only or run.life_cycle_state in ACTIVE_STATES)
            and (not completed_only or run.life_cycle_state not in ACTIVE_STATES)
            and (not start_from or run.start_time >= start_from)
            and (not start_to or run.start_time <= start_to)
        ]
        page = selected[offset : offset + limit]
        expand = _flag(body, "expand_tasks")
        result: dict[str, Any] = {"has_more": offset + limit < len(selected)}
        if page:  # proto3 JSON leaves out an empty repeated field
            result["runs"] = [self._run_view(run, expand_tasks=expand) for run in page]
        if result["has_more"]:
            result["next_page_token"] = _page_token(offset + limit)
        if offset > 0:
            result["prev_page_token"] = _page_token(max(0, offset - limit))
        return result

    def get_output(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        if int(body["run_id"]) == run.run_id:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead.",
            )
        output: dict[str, Any] = {
            "metadata": {"run_id": run.task_run_id, "state": run.state()},
            "logs": run.logs[-5_000_000:],
            "logs_truncated": len(run.logs) > 5_000_000,
        }
        if run.error is not None:
            output["error"] = run.error
            output["error_trace"] = run.error_trace or ""
        return output

    def cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        with self._lock:
            if run.life_cycle_state in {"TERMINATED", "INTERNAL_ERROR", "SKIPPED"}:
                return {}
            run.cancelled = True
            run.life_cycle_state = "TERMINATING"
            run.state_message = "Run cancellation requested"
        self._kill(run)
        return {}

    def _kill(self, run: Run) -> None:
        if run.process is not None:
            run.process.terminate(grace=20)

    def _set(self, run: Run, life_cycle: str, message: str, result: str | None = None) -> None:
        with self._lock:
            if run.cancelled and life_cycle != "TERMINATED":
                return
            run.life_cycle_state, run.state_message, run.result_state = life_cycle, message, result
            if life_cycle in {"TERMINATED", "INTERNAL_ERROR", "SKIPPED"}:
                run.end_time = int(time.time() * 1000)

    def _execute(self, run: Run) -> None:
        time.sleep(self.pending_seconds)
        if run.cancelled:
            return self._finish_cancelled(run)
        if self.faults.run_result == "INTERNAL_ERROR":
            run.error = "Cluster terminated unexpectedly: driver unreachable (injected)"
            return self._set(run, "INTERNAL_ERROR", run.error, "FAILED")
        run_dir = self.root / "runs" / str(run.run_id)
        try:
            env = self._cluster_environment(run, run_dir)
        except KeyError as err:
            run.error = f"Could not start cluster: {err.args[0]}"
            return self._set(run, "INTERNAL_ERROR", run.error, "FAILED")
        self._set(run, "PENDING", "Installing libraries")
        try:
            entry_points = self._install_libraries(run, run_dir, env)
        except LibraryError as err:
            run.error = str(err)
            return self._set(run, "INTERNAL_ERROR", run.error, "FAILED")
        self._set(run, "RUNNING", "In run")
        deadline = time.monotonic() + self.faults.start_delay_seconds
        while time.monotonic() < deadline and not run.cancelled:
            time.sleep(0.1)
        if run.cancelled:
            return self._finish_cancelled(run)
        if self.faults.run_result == "FAILED":
            run.error = "RuntimeError: injected job failure"
            run.error_trace = (
                "Traceback (most recent call last):\nRuntimeError: injected job failure"
            )
            self._set(run, "TERMINATING", "Run finishing")
            return self._set(run, "TERMINATED", run.error, "FAILED")
        try:
            returncode = self._launch(run, run_dir, env, entry_points)
        except Exception as err:  # an emulator-side problem is an internal error, as on Databricks
            run.error = f"could not start the job: {err}"
            return self._set(run, "INTERNAL_ERROR", run.error, "FAILED")
        if run.cancelled:
            return self._finish_cancelled(run)
        self._set(run, "TERMINATING", "Run finishing")
        if returncode == 0:
            self._set(run, "TERMINATED", "", "SUCCESS")
        else:
            lines = [line for line in (run.error_trace or "").splitlines() if line.strip()]
            run.error = lines[-1] if lines else f"exit code {returncode}"
            self._set(run, "TERMINATED", f"Workload failed: exit code {returncode}", "FAILED")

    def _finish_cancelled(self, run: Run) -> None:
        self._set(run, "TERMINATED", "Run cancelled.", "CANCELED")

    def _resolve_secret(self, value: str) -> str:
        # Databricks resolves a secret reference only when it is the whole value.
        match = SECRET_REFERENCE.match(value)
        if match is None:
            return value
        scope, key = match.groups()
        if (scope, key) not in self.secrets:
            raise KeyError(f"Secret does not exist with scope: {scope} and key: {key}")
        return self.secrets[(scope, key)]

    def _cluster_environment(self, run: Run, run_dir: Path) -> dict[str, str]:
        """The job process's whole environment; KeyError names an unknown secret."""
        cluster = run.task.get("new_cluster")
        if cluster is None:
            user_env, spark_conf, runtime = self.cluster_env, {}, self.runtime_version
        else:
            user_env = cluster.get("spark_env_vars", {})
            spark_conf = cluster.get("spark_conf", {})
            version = re.match(r"^(\d+\.\d+)\.", str(cluster.get("spark_version", "")))
            runtime = version.group(1) if version else self.runtime_version
        submit_args = ["--master", "local[2]", "--conf", "spark.ui.enabled=false"]
        for key, value in spark_conf.items():
            submit_args += ["--conf", f"{key}={self._resolve_secret(str(value))}"]
        env = {key: self._resolve_secret(str(value)) for key, value in user_env.items()}
        env.update(
            {
                "PATH": os.pathsep.join([str(Path(self.python).parent), "/usr/bin", "/bin"]),
                "HOME": str(run_dir),
                "DATABRICKS_RUNTIME_VERSION": runtime,
                "PYTHONPATH": str(run_dir / "site"),
                "PYSPARK_PYTHON": self.python,
                "PYSPARK_SUBMIT_ARGS": " ".join(shlex.quote(a) for a in submit_args)
                + " pyspark-shell",
                "SPARK_LOCAL_IP": "127.0.0.1",
                "MLOPS_SPARK_MASTER": "local[2]",
                "MLOPS_LAKE_MOUNTS": json.dumps(self.lake_mounts()),
            }
        )
        if os.environ.get("JAVA_HOME"):
            env["JAVA_HOME"] = os.environ["JAVA_HOME"]
        return env

    def _install_libraries(self, run: Run, run_dir: Path, env: dict[str, str]) -> dict[str, str]:
        """Unpack the run's wheels and check their dependencies; return their entry points."""
        site = run_dir / "site"
        site.mkdir(parents=True, exist_ok=True)
        entry_points: dict[str, str] = {}
        for library in run.task.get("libraries", []):
            if "whl" not in library:
                continue
            wheel = library["whl"]
            try:
                points, requirements = _install_wheel(self.library_file(wheel).read_bytes(), site)
            except (ApiError, OSError, zipfile.BadZipFile) as err:
                raise LibraryError(_library_failure(wheel, str(err))) from err
            entry_points.update(points)
            unmet = self._unmet_requirements(requirements, run_dir, env)
            if unmet:
                message = "; ".join(f"requirement {r} is not satisfied" for r in unmet)
                raise LibraryError(_library_failure(wheel, message))
        return entry_points

    def _unmet_requirements(
        self, requirements: list[str], run_dir: Path, env: dict[str, str]
    ) -> list[str]:
        if not requirements:
            return []
        result = subprocess.run(
            [self.python, "-c", _DEPENDENCY_CHECK, json.dumps(requirements)],
            cwd=run_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            return [f"(dependency check failed: {result.stderr.strip()[-2000:]})"]
        unmet: list[str] = json.loads(result.stdout)
        return unmet

    def _launch(
        self, run: Run, run_dir: Path, env: dict[str, str], entry_points: dict[str, str]
    ) -> int:
        wheel_task = run.task["python_wheel_task"]
        target = entry_points.get(wheel_task["entry_point"])
        if target is None:
            raise RuntimeError(f"entry point {wheel_task['entry_point']!r} not found")
        module, function = target.split(":")
        argv = [wheel_task["entry_point"], *wheel_task.get("parameters", [])]
        # A script file, as a console script is: code run with ``python -c`` has a __main__
        # without __file__, which some libraries take for a doctest run (pyspark.ml.connect
        # then exits 0 at import).
        script = run_dir / "entry_point.py"
        script.write_text(
            "import importlib, sys\n"
            f"sys.argv = {argv!r}\n"
            f"sys.exit(getattr(importlib.import_module({module!r}), {function!r})())\n"
        )
        stdout_path, stderr_path = run_dir / "stdout", run_dir / "stderr"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            run.process = ProcessGroup(
                [self.python, str(script)], cwd=run_dir, env=env, stdout=stdout, stderr=stderr
            )
            returncode = run.process.wait()
        run.logs = stdout_path.read_text(errors="replace")
        run.error_trace = stderr_path.read_text(errors="replace")[-100_000:]
        return returncode


def _library_failure(wheel: str, message: str) -> str:
    return (
        "Library installation failed for library due to user error for whl: "
        f"{wheel!r}. Error messages: {message}"
    )


def _install_wheel(data: bytes, site: Path) -> tuple[dict[str, str], list[str]]:
    """Unpack a pure-Python wheel into ``site``; return its console scripts and Requires-Dist."""
    entry_points: dict[str, str] = {}
    requirements: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(site)
        for name in archive.namelist():
            if name.endswith(".dist-info/entry_points.txt"):
                section = None
                for line in archive.read(name).decode().splitlines():
                    line = line.strip()
                    if line.startswith("["):
                        section = line.strip("[]")
                    elif "=" in line and section == "console_scripts":
                        key, value = (part.strip() for part in line.split("=", 1))
                        entry_points[key] = value
            elif name.endswith(".dist-info/METADATA"):
                metadata = email.parser.BytesParser().parsebytes(archive.read(name))
                requirements += metadata.get_all("Requires-Dist") or []
    return entry_points, requirements
