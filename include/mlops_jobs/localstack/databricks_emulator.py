"""A local HTTP emulator of the Databricks REST API subset the job operator uses.

Endpoints (under ``/api``): ``2.2/jobs/runs/submit`` (also 2.1), ``runs/get``,
``runs/get-output``, ``runs/cancel``, and DBFS ``create``/``add-block``/``close``/``get-status``/
``put``. Runs go through the documented life cycle (PENDING, RUNNING, TERMINATING, TERMINATED with
SUCCESS/FAILED/CANCELED, or INTERNAL_ERROR) and really execute: the uploaded wheel is unpacked
and its console-script entry point is called in a fresh Python process, where pyspark starts a
local Spark when the job asks for a session (the cluster's ``spark_conf`` goes into
``PYSPARK_SUBMIT_ARGS``), as on a Databricks driver.

Faults can be injected (``faults``): HTTP error responses for the next N matching requests, a
run that fails, an internal error, a slow start that leaves time to cancel.

Usage: ``python -m mlops_jobs.localstack.databricks_emulator --port 8765`` then
``AIRFLOW_CONN_DATABRICKS_DEFAULT='{"conn_type": "databricks", "host": "127.0.0.1",
"port": 8765, "schema": "http", "password": "dapi-local"}'``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

DEFAULT_TOKEN = "dapi-local"


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
    process: subprocess.Popen[bytes] | None = None
    cancelled: bool = False
    start_time: int = field(default_factory=lambda: int(time.time() * 1000))

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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class DatabricksEmulator:
    """The emulator's state and HTTP server; ``start()`` serves it on a background thread."""

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = DEFAULT_TOKEN,
        pending_seconds: float = 0.5,
        python: str = sys.executable,
    ) -> None:
        self.root = root
        self.token = token
        self.pending_seconds = pending_seconds
        self.python = python
        self.faults = Faults()
        self.runs: dict[int, Run] = {}
        self.requests: list[tuple[str, str]] = []
        self.dbfs: dict[str, bytes] = {}
        self._handles: dict[int, tuple[str, bytearray]] = {}
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

    def start(self) -> DatabricksEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        for run in list(self.runs.values()):
            self._kill(run)
        self._server.shutdown()
        self._server.server_close()

    # -- request routing -----------------------------------------------------------------

    def handle(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
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
        route = path.removeprefix("/api/").split("/", 1)
        if len(route) != 2 or route[0] not in {"2.0", "2.1", "2.2"}:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", f"no API endpoint {path}")
        handlers = {
            ("POST", "jobs/runs/submit"): self.submit,
            ("GET", "jobs/runs/get"): self.get_run,
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
        return handler(body)

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
            if _dbfs_path(wheel) not in self.dbfs:
                raise ApiError(400, "INVALID_PARAMETER_VALUE", f"library {wheel} does not exist")
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

    def _run(self, body: dict[str, Any], key: str = "run_id") -> Run:
        try:
            run_id = int(body[key])
        except (KeyError, TypeError, ValueError):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"{key} is required") from None
        for run in self.runs.values():
            if run_id in (run.run_id, run.task_run_id):
                return run
        raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")

    def get_run(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        return {
            "job_id": run.run_id,
            "run_id": run.run_id,
            "run_name": run.request.get("run_name", "Untitled"),
            "number_in_job": 1,
            "run_page_url": f"{self.url}/?o=0#job/{run.run_id}/run/1",
            "state": run.state(),
            "start_time": run.start_time,
            "tasks": [
                {
                    "run_id": run.task_run_id,
                    "task_key": run.task.get("task_key", "task"),
                    "state": run.state(),
                    "attempt_number": 0,
                }
            ],
        }

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
        if run.process is not None and run.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGTERM)
            try:
                run.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, signal.SIGKILL)

    def _set(self, run: Run, life_cycle: str, message: str, result: str | None = None) -> None:
        with self._lock:
            if run.cancelled and life_cycle != "TERMINATED":
                return
            run.life_cycle_state, run.state_message, run.result_state = life_cycle, message, result

    def _execute(self, run: Run) -> None:
        time.sleep(self.pending_seconds)
        if run.cancelled:
            return self._finish_cancelled(run)
        if self.faults.run_result == "INTERNAL_ERROR":
            run.error = "Cluster terminated unexpectedly: driver unreachable (injected)"
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
            returncode = self._launch(run)
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

    def _launch(self, run: Run) -> int:
        task = run.task
        run_dir = self.root / "runs" / str(run.run_id)
        site = run_dir / "site"
        site.mkdir(parents=True, exist_ok=True)
        entry_points: dict[str, str] = {}
        for library in task.get("libraries", []):
            if "whl" in library:
                entry_points.update(_install_wheel(self.dbfs[_dbfs_path(library["whl"])], site))
        wheel_task = task["python_wheel_task"]
        target = entry_points.get(wheel_task["entry_point"])
        if target is None:
            raise RuntimeError(f"entry point {wheel_task['entry_point']!r} not found")
        module, function = target.split(":")
        argv = [wheel_task["entry_point"], *wheel_task.get("parameters", [])]
        code = (
            "import importlib, sys; "
            f"sys.argv = {argv!r}; "
            f"sys.exit(getattr(importlib.import_module({module!r}), {function!r})())"
        )
        spark_conf = task.get("new_cluster", {}).get("spark_conf", {})
        submit_args = ["--master", "local[2]", "--conf", "spark.ui.enabled=false"]
        for key, value in spark_conf.items():
            submit_args += ["--conf", f"{key}={value}"]
        env = {
            **os.environ,
            "PYTHONPATH": str(site),
            "PYSPARK_PYTHON": self.python,
            "PYSPARK_SUBMIT_ARGS": " ".join(shlex.quote(a) for a in submit_args) + " pyspark-shell",
            "MLOPS_SPARK_MASTER": "local[2]",
        }
        stdout_path, stderr_path = run_dir / "stdout", run_dir / "stderr"
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            run.process = subprocess.Popen(
                [self.python, "-c", code],
                cwd=run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            returncode = run.process.wait()
        run.logs = stdout_path.read_text(errors="replace")
        run.error_trace = stderr_path.read_text(errors="replace")[-100_000:]
        return returncode

    # -- DBFS ------------------------------------------------------------------------------

    def dbfs_create(self, body: dict[str, Any]) -> dict[str, Any]:
        path = _dbfs_path(body.get("path", ""))
        if path in self.dbfs and not body.get("overwrite", False):
            raise ApiError(
                400,
                "RESOURCE_ALREADY_EXISTS",
                f"A file or directory already exists at the input path {path}.",
            )
        handle = next(self._ids)
        self._handles[handle] = (path, bytearray())
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
        handle = self._handles.pop(int(body.get("handle", -1)), None)
        if handle is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "unknown handle")
        self.dbfs[handle[0]] = bytes(handle[1])
        return {}

    def dbfs_put(self, body: dict[str, Any]) -> dict[str, Any]:
        path = _dbfs_path(body.get("path", ""))
        if path in self.dbfs and not body.get("overwrite", False):
            raise ApiError(400, "RESOURCE_ALREADY_EXISTS", f"file exists at {path}")
        self.dbfs[path] = base64.b64decode(body.get("contents", ""))
        return {}

    def dbfs_get_status(self, body: dict[str, Any]) -> dict[str, Any]:
        path = _dbfs_path(body.get("path", ""))
        if path not in self.dbfs:
            raise ApiError(
                404, "RESOURCE_DOES_NOT_EXIST", f"No file or directory exists on path {path}."
            )
        return {"path": path, "is_dir": False, "file_size": len(self.dbfs[path])}


def _dbfs_path(path: str) -> str:
    return "/" + path.removeprefix("dbfs:").lstrip("/")


def _install_wheel(data: bytes, site: Path) -> dict[str, str]:
    """Unpack a pure-Python wheel into ``site``; return its console-script entry points."""
    import io

    entry_points: dict[str, str] = {}
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
    return entry_points


def _handler(emulator: DatabricksEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

        def _respond(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _dispatch(self, method: str) -> None:
            parsed = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: dict[str, Any] = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                return self._respond(
                    400, {"error_code": "MALFORMED_REQUEST", "message": "bad JSON"}
                )
            # The provider sends GET parameters as a query string (sync) or a JSON body (async).
            for key, values in parse_qs(parsed.query).items():
                body.setdefault(key, values[-1])
            if self.headers.get("Authorization") != f"Bearer {emulator.token}":
                return self._respond(
                    401, {"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}
                )
            try:
                payload = emulator.handle(method, parsed.path, body)
            except ApiError as err:
                return self._respond(err.status, {"error_code": err.code, "message": err.message})
            self._respond(HTTPStatus.OK, payload)

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="databricks-emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    from mlops_jobs.localstack.env import local_root

    emulator = DatabricksEmulator(args.root or local_root() / "databricks", port=args.port).start()
    print(f"Databricks emulator on {emulator.url}; connection: {emulator.connection()}")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
