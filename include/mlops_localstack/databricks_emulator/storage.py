"""DBFS and the Files API on Unity Catalog volumes, as plain directories."""

from __future__ import annotations

import base64
import email.parser
import email.utils
import re
from collections.abc import Mapping
from http import HTTPStatus
from pathlib import Path
from typing import Any

from mlops_localstack.databricks_emulator.model import (
    DIRECTORY_PAGE_SIZE,
    ApiError,
    Response,
    _flag,
    _integer,
    _page_offset,
    _page_token,
    _under,
    _write,
)


class StorageApi:
    """``2.0/dbfs/*`` and ``2.0/fs/files``, ``2.0/fs/directories``: ``dbfs:/`` under
    ``dbfs_root``, ``/Volumes/<catalog>/<schema>/<volume>/`` under ``volumes_root``."""

    dbfs_root: Path
    volumes_root: Path
    _handles: dict[int, tuple[Path, bytearray]]
    _ids: Any
    _lock: Any

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
