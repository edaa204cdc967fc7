"""The emulator's state: runs, injected faults, responses and the API's errors, and the
parameter helpers every endpoint shares."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

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
