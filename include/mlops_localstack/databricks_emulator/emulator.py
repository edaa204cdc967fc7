"""The emulator: its state, request routing and faults, over the Jobs and storage APIs."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mlops_localstack.databricks_emulator.http import Server
from mlops_localstack.databricks_emulator.jobs import JobsApi
from mlops_localstack.databricks_emulator.model import (
    DEFAULT_RUNTIME_VERSION,
    DEFAULT_TOKEN,
    DIRECTORIES_PREFIX,
    FILES_PREFIX,
    WORKSPACE_ID,
    ApiError,
    Faults,
    Response,
    Run,
)
from mlops_localstack.databricks_emulator.storage import StorageApi


class DatabricksEmulator(JobsApi, StorageApi):
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
        self._server = Server(self.handle, host, port)

    @property
    def port(self) -> int:
        return self._server.port

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
        self._server.start()
        return self

    def stop(self) -> None:
        for run in list(self.runs.values()):
            self._kill(run)
        self._server.stop()

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
