"""A local HTTP emulator of the Databricks REST API subset the job operator uses.

Endpoints (under ``/api``): Jobs ``2.2/jobs/runs/submit`` (also 2.1), ``runs/get``, ``runs/list``,
``runs/get-output``, ``runs/cancel``; DBFS ``2.0/dbfs/create``/``add-block``/``close``/``put``/
``get-status``; the Files API on Unity Catalog volumes, ``2.0/fs/files{path}`` (PUT, HEAD, GET,
DELETE) and ``2.0/fs/directories{path}`` (PUT, HEAD, GET); and ``/.well-known/databricks-config``,
which databricks-sdk reads when it starts. Every ``/api`` call needs ``Authorization: Bearer
<token>``; errors are ``{"error_code": ..., "message": ...}`` with the public API's status codes.

Storage is plain directories under the emulator's root: ``dbfs_root`` holds ``dbfs:/<path>`` and
``volumes_root`` holds ``/Volumes/<catalog>/<schema>/<volume>/<path>`` (volumes exist implicitly),
so files uploaded through the API and data a job writes are the same files.

Runs go through the documented life cycle (PENDING, RUNNING, TERMINATING, TERMINATED with
SUCCESS/FAILED/CANCELED, or INTERNAL_ERROR) and really execute, as on a job cluster:

* At submit, a ``whl`` library on the DBFS root is refused, as Runtime 15+ does (unless
  ``allow_dbfs_root_libraries``); libraries must exist.
* Cluster start resolves ``{{secrets/<scope>/<key>}}`` values of ``spark_env_vars`` and
  ``spark_conf`` from ``secrets``; an unknown secret fails the run (INTERNAL_ERROR).
* Library installation unpacks the wheels into the run's site directory and checks that their
  ``Requires-Dist`` (markers honoured) are installed in the runtime, the emulator's interpreter:
  nothing is installed from an index, so a missing or incompatible dependency fails the run
  before the job starts, naming the requirement.
* The console-script entry point runs in a fresh process of the runtime interpreter, in the run's
  directory, with only the run specification's environment (``new_cluster.spark_env_vars``, or
  ``cluster_env`` for ``existing_cluster_id``) plus the runtime's own variables: ``PATH``,
  ``HOME``, ``JAVA_HOME`` (when the emulator has one), ``DATABRICKS_RUNTIME_VERSION``,
  ``PYTHONPATH`` (the site directory), ``PYSPARK_PYTHON``, ``PYSPARK_SUBMIT_ARGS`` (local Spark
  with the cluster's ``spark_conf``), ``SPARK_LOCAL_IP``, ``MLOPS_SPARK_MASTER`` and
  ``MLOPS_LAKE_MOUNTS``, which maps ``dbfs:/`` and ``/Volumes/`` to the storage directories
  (the stand-in for the cluster's FUSE mounts). The runtime's variables win over the run's.

Faults can be injected (``faults``): HTTP error responses for the next N matching requests, a
run that fails, an internal error, a slow start that leaves time to cancel.

Usage: ``python -m mlops_localstack.databricks_emulator --port 8765`` then
``AIRFLOW_CONN_DATABRICKS_DEFAULT='{"conn_type": "databricks", "host": "127.0.0.1",
"port": 8765, "schema": "http", "password": "dapi-local"}'``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.utils
import io
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from mlops_jobs.process import ProcessGroup

DEFAULT_TOKEN = "dapi-local"
DEFAULT_RUNTIME_VERSION = "15.4"
WORKSPACE_ID = "1000000000000000"
ACTIVE_STATES = frozenset({"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED"})
RUN_TYPES = frozenset({"JOB_RUN", "WORKFLOW_RUN", "SUBMIT_RUN"})
RUNS_LIST_MAX_LIMIT = 25
DIRECTORY_PAGE_SIZE = 1000
SECRET_REFERENCE = re.compile(r"^\{\{secrets/([^/{}]+)/([^/{}]+)\}\}$")
FILES_PREFIX = "/api/2.0/fs/files"
DIRECTORIES_PREFIX = "/api/2.0/fs/directories"

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


@dataclass
class HttpFault:
    """Answer the next ``count`` requests whose path contains ``path`` with ``status``."""

    path: str
    status: int
    count: int = 1


@dataclass
class Faults:
    http: list[HttpFault] = field(default_factory=list)
    run_result: str | None = None  # "FAILED" or "INTERNAL_ERROR" instead of running the job
    start_delay_seconds: float = 0.0  # RUNNING but not started yet: time to cancel


@dataclass
class Run:
    run_id: int
    task_run_id: int
    request: dict[str, Any]
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = "Waiting for cluster"
    logs: str = ""
    error: str | None = None
    error_trace: str | None = None
    process: ProcessGroup | None = None
    cancelled: bool = False
    start_time: int = field(default_factory=lambda: int(time.time() * 1000))
    end_time: int = 0

    @property
    def task(self) -> dict[str, Any]:
        return self.request["tasks"][0]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle_state,
            "state_message": self.state_message,
            "user_cancelled_or_timedout": self.cancelled,
        }
        if self.result_state:
            state["result_state"] = self.result_state
        return state


@dataclass
class Response:
    status: int = HTTPStatus.OK
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Mapping[str, Any], status: int = HTTPStatus.OK) -> Response:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class LibraryError(Exception):
    """A library cannot be installed on the cluster (the run fails before the job starts)."""


class DatabricksEmulator:
    """
    The emulator's state and HTTP server; ``start()`` serves it on a background thread.

    :param root: Directory of the emulator's storage (``dbfs/``, ``volumes/``) and runs.
    :param host: Interface to listen on.
    :param port: Port to listen on (0: any free port).
    :param token: The bearer token every API call must carry.
    :param pending_seconds: Time a run stays PENDING (the cluster start).
    :param python: The runtime's interpreter, which runs the jobs.
    :param cluster_env: Environment of the ``existing_cluster_id`` cluster (its spark_env_vars).
    :param runtime_version: ``DATABRICKS_RUNTIME_VERSION`` when ``spark_version`` has none.
    :param allow_dbfs_root_libraries: Install libraries from the DBFS root (Runtime 14 and older).
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        pending_seconds: float = 0.5,
        python: str = sys.executable,
        cluster_env: Mapping[str, str] | None = None,
        runtime_version: str = DEFAULT_RUNTIME_VERSION,
        allow_dbfs_root_libraries: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.dbfs_root = self.root / "dbfs"
        self.volumes_root = self.root / "volumes"
        self.dbfs_root.mkdir(parents=True, exist_ok=True)
        self.volumes_root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.pending_seconds = pending_seconds
        self.python = python
        self.cluster_env = dict(cluster_env or {})
        self.runtime_version = runtime_version
        self.allow_dbfs_root_libraries = allow_dbfs_root_libraries
        self.secrets: dict[tuple[str, str], str] = {}
        self.faults = Faults()
        self.runs: dict[int, Run] = {}
        self.requests: list[tuple[str, str]] = []
        self._handles: dict[int, tuple[Path, bytearray]] = {}
        self._tokens: dict[str, int] = {}
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> str:
        """An ``AIRFLOW_CONN_*`` value (JSON) pointing the provider's hook here."""
        return json.dumps(
            {
                "conn_type": "databricks",
                "host": "127.0.0.1",
                "port": self.port,
                "schema": "http",
                "password": self.token,
            }
        )

    def lake_mounts(self) -> dict[str, str]:
        """Path prefixes a job uses and the directories behind them (``MLOPS_LAKE_MOUNTS``)."""
        return {
            "dbfs:/": self.dbfs_root.as_uri() + "/",
            "/Volumes/": self.volumes_root.as_uri() + "/",
        }

    def start(self) -> DatabricksEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for run in list(self.runs.values()):
            self._kill(run)
        self._server.shutdown()
        self._server.server_close()

    # -- request routing -----------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes
    ) -> Response:
        """Answer one request (``headers`` with lower-case names); ApiError is an error reply."""
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults.http:
                if fault.count > 0 and fault.path in path:
                    fault.count -= 1
                    code = (
                        "REQUEST_LIMIT_EXCEEDED"
                        if fault.status == 429
                        else "TEMPORARILY_UNAVAILABLE"
                    )
                    raise ApiError(fault.status, code, f"injected HTTP {fault.status}")
        if method == "GET" and path == "/.well-known/databricks-config":
            metadata = {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": WORKSPACE_ID}
            return Response.json(metadata)
        if headers.get("authorization") != f"Bearer {self.token}":
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")
        if path.startswith(FILES_PREFIX + "/"):
            return self.files(method, unquote(path.removeprefix(FILES_PREFIX)), query, headers, raw)
        if path.startswith(DIRECTORIES_PREFIX + "/"):
            return self.directories(method, unquote(path.removeprefix(DIRECTORIES_PREFIX)), query)
        try:
            body: dict[str, Any] = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            raise ApiError(400, "MALFORMED_REQUEST", "Invalid JSON given in the body") from None
        # The provider sends GET parameters as a query string (sync) or a JSON body (async).
        for key, value in query.items():
            body.setdefault(key, value)
        route = path.removeprefix("/api/").split("/", 1)
        if len(route) != 2 or route[0] not in {"2.0", "2.1", "2.2"}:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no API endpoint {path}")
        handlers = {
            ("POST", "jobs/runs/submit"): self.submit,
            ("GET", "jobs/runs/get"): self.get_run,
            ("GET", "jobs/runs/list"): self.list_runs,
            ("GET", "jobs/runs/get-output"): self.get_output,
            ("POST", "jobs/runs/cancel"): self.cancel,
            ("POST", "dbfs/create"): self.dbfs_create,
            ("POST", "dbfs/add-block"): self.dbfs_add_block,
            ("POST", "dbfs/close"): self.dbfs_close,
            ("POST", "dbfs/put"): self.dbfs_put,
            ("GET", "dbfs/get-status"): self.dbfs_get_status,
        }
        handler = handlers.get((method, route[1]))
        if handler is None:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no API endpoint {method} {path}")
        return Response.json(handler(body))

    # -- jobs ------------------------------------------------------------------------------

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

    # -- storage ---------------------------------------------------------------------------

    def dbfs_file(self, path: str) -> Path:
        """The local file of a DBFS path (``dbfs:/x`` or ``/x``; ``/Volumes/...`` is a volume)."""
        path = "/" + path.removeprefix("dbfs:").lstrip("/")
        if path.startswith("/Volumes/"):
            return self.volume_file(path)
        return _under(self.dbfs_root, path)

    def volume_file(self, path: str) -> Path:
        """The local file of ``/Volumes/<catalog>/<schema>/<volume>/...``."""
        parts = path.split("/")
        if len(parts) < 5 or parts[:2] != ["", "Volumes"] or not all(parts[2:5]):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"Path {path} is not in a volume: "
                "expected /Volumes/<catalog>/<schema>/<volume>/...",
            )
        return _under(self.volumes_root, path.removeprefix("/Volumes"))

    def _under_file(self, path: Path) -> bool:
        """Whether a parent of ``path`` inside the volumes is a file."""
        return any(p.is_file() for p in path.parents if p.is_relative_to(self.volumes_root))

    # -- Files API -------------------------------------------------------------------------

    def files(
        self, method: str, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes
    ) -> Response:
        file = self.volume_file(path)
        if method == "PUT":
            if file.is_dir() or self._under_file(file):
                raise ApiError(409, "ALREADY_EXISTS", f"A directory exists at {path}.")
            if file.exists() and not _flag(query, "overwrite", default=True):
                raise ApiError(409, "ALREADY_EXISTS", f"The file {path} already exists.")
            _write(file, raw)
            return Response(HTTPStatus.NO_CONTENT)
        if method not in {"HEAD", "GET", "DELETE"}:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not supported on files")
        if not file.is_file():
            raise ApiError(404, "NOT_FOUND", f"The file {path} does not exist.")
        if method == "DELETE":
            file.unlink()
            return Response(HTTPStatus.NO_CONTENT)
        data = file.read_bytes()
        response = Response(
            HTTPStatus.OK,
            data,
            {
                "Content-Type": "application/octet-stream",
                "Last-Modified": email.utils.formatdate(file.stat().st_mtime, usegmt=True),
                "Accept-Ranges": "bytes",
            },
        )
        byte_range = re.fullmatch(r"bytes=(\d*)-(\d*)", headers.get("range", ""))
        if byte_range and any(byte_range.groups()) and method == "GET":
            first, last = byte_range.groups()
            if first:
                start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
            else:
                start, end = max(0, len(data) - int(last)), len(data) - 1
            if start >= len(data) or start > end:
                raise ApiError(416, "INVALID_PARAMETER_VALUE", f"Range not satisfiable for {path}")
            response.status = HTTPStatus.PARTIAL_CONTENT
            response.body = data[start : end + 1]
            response.headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return response

    def directories(self, method: str, path: str, query: dict[str, str]) -> Response:
        directory = self.volume_file(path.rstrip("/") or path)
        if method == "PUT":
            if directory.is_file() or self._under_file(directory):
                raise ApiError(409, "ALREADY_EXISTS", f"A file exists at or above {path}.")
            directory.mkdir(parents=True, exist_ok=True)
            return Response(HTTPStatus.NO_CONTENT)
        if method not in {"HEAD", "GET"}:
            raise ApiError(405, "METHOD_NOT_ALLOWED", f"{method} is not supported on directories")
        if not directory.is_dir():
            raise ApiError(404, "NOT_FOUND", f"The directory {path} does not exist.")
        if method == "HEAD":
            return Response(HTTPStatus.OK)
        page_size = min(_integer(query, "page_size", DIRECTORY_PAGE_SIZE), DIRECTORY_PAGE_SIZE)
        if page_size <= 0:
            page_size = DIRECTORY_PAGE_SIZE
        offset = _page_offset(query["page_token"]) if query.get("page_token") else 0
        children = sorted(directory.iterdir())
        entries = []
        for child in children[offset : offset + page_size]:
            stat = child.stat()
            entry: dict[str, Any] = {
                "path": "/Volumes/" + child.relative_to(self.volumes_root).as_posix(),
                "name": child.name,
                "is_directory": child.is_dir(),
                "last_modified": int(stat.st_mtime * 1000),
            }
            if child.is_file():
                entry["file_size"] = stat.st_size
            entries.append(entry)
        payload: dict[str, Any] = {}
        if entries:
            payload["contents"] = entries
        if offset + page_size < len(children):
            payload["next_page_token"] = _page_token(offset + page_size)
        return Response.json(payload)

    # -- DBFS ------------------------------------------------------------------------------

    def dbfs_create(self, body: dict[str, Any]) -> dict[str, Any]:
        path = str(body.get("path", ""))
        file = self.dbfs_file(path)
        if file.exists() and not _flag(body, "overwrite"):
            raise ApiError(
                400,
                "RESOURCE_ALREADY_EXISTS",
                f"A file or directory already exists at the input path {path}.",
            )
        with self._lock:
            handle = next(self._ids)
            self._handles[handle] = (file, bytearray())
        return {"handle": handle}

    def dbfs_add_block(self, body: dict[str, Any]) -> dict[str, Any]:
        handle = self._handles.get(int(body.get("handle", -1)))
        if handle is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "unknown handle")
        block = base64.b64decode(body.get("data", ""))
        if len(block) > 1 << 20:
            raise ApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", "block exceeds 1 MB")
        handle[1].extend(block)
        return {}

    def dbfs_close(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            handle = self._handles.pop(int(body.get("handle", -1)), None)
        if handle is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "unknown handle")
        _write(handle[0], bytes(handle[1]))
        return {}

    def dbfs_put(self, body: dict[str, Any]) -> dict[str, Any]:
        path = str(body.get("path", ""))
        file = self.dbfs_file(path)
        if file.exists() and not _flag(body, "overwrite"):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"file exists at {path}")
        _write(file, base64.b64decode(body.get("contents", "")))
        return {}

    def dbfs_get_status(self, body: dict[str, Any]) -> dict[str, Any]:
        path = "/" + str(body.get("path", "")).removeprefix("dbfs:").lstrip("/")
        file = self.dbfs_file(path)
        if not file.exists():
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}."
            )
        stat = file.stat()
        return {
            "path": path,
            "is_dir": file.is_dir(),
            "file_size": 0 if file.is_dir() else stat.st_size,
            "modification_time": int(stat.st_mtime * 1000),
        }


def _under(root: Path, path: str) -> Path:
    parts = [p for p in path.split("/") if p]
    if any(p in {".", ".."} for p in parts):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Path {path} must be absolute and normal.")
    return root.joinpath(*parts)


def _write(file: Path, data: bytes) -> None:
    """Write ``data`` so that a reader sees the old file or the whole new one."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f".{file.name}.{threading.get_ident()}.partial")
    partial.write_bytes(data)
    partial.replace(file)


def _flag(values: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """A boolean parameter from a JSON body (bool) or a query string ("true"/"false")."""
    value = values.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() == "true"


def _integer(values: Mapping[str, Any], key: str, default: int) -> int:
    value = values.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{key} must be an integer") from None


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _page_offset(token: str) -> int:
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid page_token {token!r}") from None
    if not isinstance(offset, int) or offset < 0:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Invalid page_token {token!r}")
    return offset


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


def _handler(emulator: DatabricksEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers up to the blank line
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _respond(self, method: str, response: Response) -> None:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if response.status != HTTPStatus.NO_CONTENT:
                self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(response.body)

        def _dispatch(self, method: str) -> None:
            parsed = urlparse(self.path)
            raw = self._body()
            query = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
            headers = {key.lower(): value for key, value in self.headers.items()}
            try:
                response = emulator.handle(method, parsed.path, query, headers, raw)
            except ApiError as err:
                response = Response.json({"error_code": err.code, "message": err.message})
                response.status = err.status
            self._respond(method, response)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_HEAD(self) -> None:
            self._dispatch("HEAD")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="databricks-emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument(
        "--allow-dbfs-root-libraries",
        action="store_true",
        help="install libraries from the DBFS root, as Runtime 14 and older do",
    )
    args = parser.parse_args(argv)
    from mlops_localstack.env import local_root

    emulator = DatabricksEmulator(
        args.root or local_root() / "databricks",
        port=args.port,
        allow_dbfs_root_libraries=args.allow_dbfs_root_libraries,
    ).start()
    print(f"Databricks emulator on {emulator.url}; connection: {emulator.connection()}")
    print(f"Storage: dbfs:/ in {emulator.dbfs_root}, /Volumes/ in {emulator.volumes_root}")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
