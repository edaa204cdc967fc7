"""Lake locations: URIs, the filesystem each is reached through, checked paths and boxes."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

MANIFEST = "manifest.json"


POINTER = "_committed.json"


VERSION_PREFIX = "v="


ROOT_ENV = "MLOPS_LAKE_ROOT"


MOUNTS_ENV = "MLOPS_LAKE_MOUNTS"


KEEP_ENV = "MLOPS_LAKE_KEEP_VERSIONS"


STALE_ENV = "MLOPS_LAKE_STALE_SECONDS"


RESULTS_KEEP_ENV = "MLOPS_LAKE_RESULTS_KEEP_DAYS"


DEFAULT_KEEP_VERSIONS = 3


DEFAULT_STALE_SECONDS = 6 * 3600


DEFAULT_RESULTS_KEEP_DAYS = 7


# Set by the Databricks runtime on every cluster node.
DATABRICKS_RUNTIME_ENV = "DATABRICKS_RUNTIME_VERSION"


VOLUMES = "/Volumes/"


_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


_VERSION = re.compile(r"^v=(\d{8}T\d{6}\d{6}Z)-[0-9a-f]{8}$")


_LOCAL_SCHEMES = {"", "file", "local"}


class LakeError(RuntimeError):
    """A lake path is invalid, or a box is missing, incomplete or cannot be reached."""


class LakeConflictError(LakeError):
    """Another writer got in the way (its sweep removed a draft); trying again may succeed."""


@dataclass(frozen=True)
class Location:
    """One place in the lake.

    :param uri: The logical URI, as manifests and task results name it (the same on the Airflow
        worker and on the cluster).
    :param fs: The fsspec filesystem this process reaches it through.
    :param path: The path within ``fs``.
    :param spark: The URI Spark (and Hive) read and write it as.
    """

    uri: str
    fs: Any = field(repr=False, compare=False)
    path: str
    spark: str

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    def child(self, *parts: str) -> Location:
        """A location below this one; each part is checked (no ``..``, no absolute parts)."""
        for part in parts:
            for segment in str(part).split("/"):
                _check_segment(segment, f"{self.uri}/{part}")
        suffix = "/".join(str(p).strip("/") for p in parts)
        return Location(
            uri=_join(self.uri, suffix),
            fs=self.fs,
            path=_join(self.path, suffix),
            spark=_join(self.spark, suffix),
        )

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def read_text(self) -> str:
        with self.fs.open(self.path, "rb") as handle:
            return handle.read().decode()

    def write_text(self, text: str) -> None:
        """Write a whole file in one request (one PUT on an object store)."""
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        if _is_local(self.fs):
            # A local file appears under its name only when complete.
            temporary = f"{self.path}.{uuid.uuid4().hex}.tmp"
            with open(temporary, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        else:
            self.fs.pipe_file(self.path, text.encode())

    def remove(self) -> None:
        """Remove this directory or file; a missing one is not an error."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)


def locate(uri: str | Path) -> Location:
    """The location of a lake URI or path in this process (mounts applied)."""
    logical = normalize(uri)
    physical = _apply_mounts(logical)
    parsed = urlparse(physical)
    scheme = parsed.scheme.lower()
    if physical.startswith(VOLUMES):
        # A Unity Catalog volume is a local (FUSE) path on a cluster, and nowhere else.
        if os.environ.get(DATABRICKS_RUNTIME_ENV):
            return Location(uri=logical, fs=_local_fs(), path=physical, spark=physical)
        raise LakeError(
            f"{logical} is in a Unity Catalog volume, which this process can reach only on a "
            f"Databricks cluster; map it with {MOUNTS_ENV} or use a lake root on object "
            "storage (s3://, abfss://, gs://) that Airflow, Hive and the cluster all reach"
        )
    if scheme in _LOCAL_SCHEMES:
        path = unquote(parsed.path) if scheme else physical
        return _local(logical, path)
    if scheme == "dbfs":
        if os.environ.get(DATABRICKS_RUNTIME_ENV):
            path = "/dbfs/" + parsed.path.lstrip("/")
            return Location(uri=logical, fs=_local_fs(), path=path, spark=logical)
        raise LakeError(
            f"{logical} is on DBFS, which this process can reach only on a Databricks cluster; "
            f"map it with {MOUNTS_ENV} or use a lake root on object storage (s3://, abfss://, "
            "gs://) that Airflow, Hive and the cluster all reach"
        )
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(physical)
    except (ImportError, ValueError) as err:
        raise LakeError(f"cannot open {logical}: {err}") from None
    spark = physical
    if scheme == "s3" and not os.environ.get(DATABRICKS_RUNTIME_ENV):
        spark = "s3a" + physical[2:]  # open-source Spark and Hive read S3 through S3A
    return Location(uri=logical, fs=fs, path=path, spark=spark)


def normalize(uri: str | Path) -> str:
    """The canonical form of a lake URI: ``file://`` URIs for local paths, no trailing slash.

    ``..`` and ``.`` segments are refused rather than resolved: a templated path that needs them
    is a mistake, and resolving them could leave the lake root.
    """
    text = str(uri).strip()
    if not text:
        raise LakeError("empty lake URI")
    parsed = urlparse(text)
    scheme = parsed.scheme.lower()
    path = unquote(parsed.path) if scheme else text
    segments = [s for s in path.split("/") if s]
    for segment in segments:
        if segment in {".", ".."}:
            raise LakeError(f"lake URI {text!r} contains {segment!r}; give the path without it")
    if scheme in _LOCAL_SCHEMES and path.startswith(VOLUMES):
        return path.rstrip("/")
    if scheme in _LOCAL_SCHEMES:
        if not scheme and not os.path.isabs(path):
            path = os.path.abspath(path)
        return path_uri(Path(path))
    return text.rstrip("/") if len(text.rstrip("/")) > len(f"{scheme}:/") else text


def path_uri(path: Path) -> str:
    """``file://`` URI of a local path as Hadoop parses it (``=`` stays literal, unlike
    ``Path.as_uri``, which Spark would write to a ``ds%3D…`` directory)."""
    return "file://" + quote(str(path.absolute()).rstrip("/") or "/", safe="/=-_.~+,:@")


def lake_root(explicit: str | None = None) -> str:
    """The lake root's canonical URI: ``explicit``, else ``MLOPS_LAKE_ROOT``."""
    value = explicit or os.environ.get(ROOT_ENV)
    if not value:
        raise LakeError(f"no lake root: pass one or set {ROOT_ENV}")
    parsed = urlparse(value.strip())
    relative = (
        not os.path.isabs(value.strip())
        if not parsed.scheme
        else parsed.scheme == "file"
        and (parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"))
    )
    if relative:
        # it would depend on the working directory of whichever process reads it
        raise LakeError(f"lake root {value!r} is a relative path; give an absolute path or a URI")
    return normalize(value)


def join(root: str, *parts: str) -> str:
    """``root/part/…`` with every part checked (no ``..``, no absolute escapes)."""
    base = normalize(root)
    for part in parts:
        for segment in str(part).split("/"):
            _check_segment(segment, f"{base}/{part}")
    return _join(base, "/".join(str(p).strip("/") for p in parts))


def box_uri(root: str, dataset: str, ds: str) -> str:
    """The URI of a dataset's box for one ``ds``: ``{root}/{dataset}/ds={ds}``."""
    try:
        dt.date.fromisoformat(ds)
    except ValueError:
        raise LakeError(f"ds must be a date YYYY-MM-DD, got {ds!r}") from None
    return join(root, dataset, f"ds={ds}")


def ensure_within(uri: str, root: str | None = None) -> str:
    """``uri`` in canonical form, or an error when it does not lie under the lake root
    (``root``, else ``MLOPS_LAKE_ROOT``; nothing to check when neither is set)."""
    target = normalize(uri)
    if root is None and not os.environ.get(ROOT_ENV):
        return target
    base = lake_root(root)
    if target != base and not target.startswith(base.rstrip("/") + "/"):
        raise LakeError(f"{target} lies outside the lake root {base}")
    return target


def _check_segment(segment: str, where: str) -> None:
    if not _SEGMENT.match(segment):
        raise LakeError(
            f"invalid lake path segment {segment!r} in {where!r}: use letters, digits and "
            "_ . = + - (no '..', no empty or absolute parts)"
        )


def _join(base: str, suffix: str) -> str:
    if not suffix:
        return base
    return base.rstrip("/") + "/" + suffix


def _apply_mounts(uri: str) -> str:
    raw = os.environ.get(MOUNTS_ENV)
    if not raw:
        return uri
    try:
        mounts = json.loads(raw)
    except json.JSONDecodeError as err:
        raise LakeError(f"{MOUNTS_ENV} is not valid JSON: {err}") from None
    if not isinstance(mounts, dict):
        raise LakeError(f"{MOUNTS_ENV} must map URI prefixes to URI prefixes")
    for prefix in sorted(mounts, key=len, reverse=True):
        base = prefix.rstrip("/")
        if uri == base or uri.startswith(base + "/"):
            return str(mounts[prefix]).rstrip("/") + "/" + uri[len(base) :].lstrip("/")
    return uri


def _local(logical: str, path: str) -> Location:
    return Location(uri=logical, fs=_local_fs(), path=path, spark=path_uri(Path(path)))


def _local_fs() -> Any:
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def _setting_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise LakeError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise LakeError(f"{name} must be at least {minimum}, got {value}")
    return value
