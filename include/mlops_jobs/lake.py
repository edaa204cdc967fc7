"""The lake: where snapshots, feature sets and predictions live, and how they are published.

Every access goes through one filesystem layer (`fsspec`), on the Airflow worker and on the
cluster alike, so a lake root may be a local path, ``file://``, ``dbfs:/``, a Unity Catalog
volume (``/Volumes/…``), ``s3://``, ``abfss://`` or ``gs://``.

A *box* is one dataset for one ``ds``: ``{root}/{dataset}/ds={ds}``. Object stores have no
rename, so a box is never replaced in place. Each publish writes a new *version* directory
``{box}/v={id}/`` (data first, ``manifest.json`` last) and then commits it by writing the box's
small pointer file ``_committed.json`` in one write. Readers resolve the pointer, so they see the
previous version or the new one, never half of one; a crash at any point leaves the previous
version readable. Versions the pointer no longer lists, beyond ``MLOPS_LAKE_KEEP_VERSIONS``, and
drafts of killed tasks older than ``MLOPS_LAKE_STALE_SECONDS`` are removed by later publishes.

``MLOPS_LAKE_MOUNTS`` maps URI prefixes to the places a process reaches them, as a cluster's FUSE
mounts do (``{"dbfs:/": "file:///mnt/dbfs/"}``); on a Databricks cluster ``dbfs:/`` is read
through ``/dbfs`` and ``/Volumes`` is a local path.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import posixpath
import re
import uuid
from collections.abc import Iterator, Mapping
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


# -- locations -----------------------------------------------------------------------------


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


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    """A committed version of a box: its manifest and where its files are.

    :param uri: The version's URI (``…/ds=…/v=…``), stable for as long as it is retained.
    :param manifest: The version's ``manifest.json``.
    :param location: The version directory.
    """

    uri: str
    manifest: dict[str, Any]
    location: Location

    def path(self, *parts: str) -> Location:
        return self.location.child(*parts)


def open_box(uri: str | Path) -> Box:
    """The committed version a box URI points to, or the version a version URI names."""
    location = locate(uri)
    if _VERSION.match(location.name):
        version = location
    else:
        pointer = _read_pointer(location)
        if pointer is None:
            raise LakeError(
                f"{location.uri} is not a published box: {POINTER} is missing "
                "(nothing was ever committed there)"
            )
        version = location.child(pointer["version"])
    try:
        manifest = json.loads(version.child(MANIFEST).read_text())
    except FileNotFoundError:
        raise LakeError(f"{version.uri} is not a published box: {MANIFEST} is missing") from None
    return Box(uri=version.uri, manifest=manifest, location=version)


def read_manifest(uri: str | Path) -> dict[str, Any]:
    """The manifest of a box's committed version; a clear error when there is none."""
    return open_box(uri).manifest


def data_files(location: Location, suffix: str = ".parquet") -> list[str]:
    """Data files under ``location`` as paths of its filesystem, sorted (hidden and
    ``_``-prefixed files such as ``_SUCCESS``, and the manifest, skipped)."""
    try:
        found = location.fs.find(location.path)
    except FileNotFoundError:
        return []
    files = []
    for path in sorted(found):
        name = posixpath.basename(path)
        if name.startswith((".", "_")) or name == MANIFEST:
            continue
        # Hive names Parquet output files without an extension; Spark adds one.
        if suffix and not name.endswith(suffix) and not _is_parquet(location.fs, path):
            continue
        files.append(path)
    return files


def parquet_rows(location: Location, files: list[str]) -> int:
    """Rows in Parquet ``files`` (paths of ``location``'s filesystem), from their footers."""
    import pyarrow.parquet as pq

    total = 0
    for path in files:
        with location.fs.open(path, "rb") as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def read_parquet(location: Location) -> Any:
    """All Parquet data under ``location`` as one Arrow table (files in sorted order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for path in data_files(location):
        with location.fs.open(path, "rb") as handle:
            tables.append(pq.read_table(handle))
    if not tables:
        raise LakeError(f"{location.uri} holds no Parquet data files")
    return pa.concat_tables(tables)


#: How ``content_hash`` digests files; committed manifests record it (``content_hash_method``)
#: so that ``audit`` does not mistake a version hashed by an earlier method for a corrupt one.
CONTENT_HASH_METHOD = "arrow-columns-1"


def content_hash(location: Location, files: list[str] | None = None) -> str:
    """SHA-256 over the sorted digests of the files' contents, independent of file names.

    A Parquet file's digest covers its data and schema, not its bytes: Parquet writers do not
    order footer fields deterministically (parquet-mr lists column encodings from a hash set), so
    the same rows written twice can differ byte for byte. Other files are hashed as bytes.
    """
    return combine_digests(file_digests(location, files))


def file_digests(location: Location, files: list[str] | None = None) -> list[str]:
    """The digest of each file (default: every data file under ``location``), as
    ``content_hash`` computes them; parts of a version hashed apart combine, without reading
    them again, into the hash of the whole (``combine_digests``)."""
    fs = location.fs
    paths = data_files(location, suffix="") if files is None else files
    return [_parquet_digest(fs, p) if _is_parquet(fs, p) else _sha256(fs, p) for p in paths]


def combine_digests(digests: list[str]) -> str:
    """The content hash of files with these digests (order does not matter)."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


# -- publishing ----------------------------------------------------------------------------


@dataclass
class Draft:
    """A version being written; ``commit`` makes it the box's current version.

    :param box: The box the version belongs to.
    :param location: The version's directory; write data under it.
    """

    box: Location
    location: Location
    committed: Box | None = None
    pointer_written: bool = False

    @property
    def version(self) -> str:
        return self.location.name

    def commit(self, manifest: Mapping[str, Any]) -> Box:
        """Write the manifest (with the content hash of every data file), then the pointer.

        :return: the committed version
        """
        if self.committed is not None:
            raise LakeError(f"{self.location.uri} is already committed")
        if not data_files(self.location, suffix=""):
            raise LakeConflictError(
                f"refusing to commit {self.location.uri}: it holds no data files (nothing was "
                "written, or another writer's sweep removed it)"
            )
        final = dict(manifest)
        if "content_hash" not in final:  # a writer that hashed its files already gives it
            final["content_hash"] = content_hash(self.location)
        final["content_hash_method"] = CONTENT_HASH_METHOD
        final["version"] = self.version
        self.location.child(MANIFEST).write_text(json.dumps(final, indent=2, sort_keys=True))
        try:
            previous = _read_pointer(self.box)
        except LakeError:
            previous = None  # an unreadable pointer is replaced: the new version is whole
        history = [self.version]
        if previous is not None:
            history += [previous["version"], *previous.get("history", [])]
        keep = _setting_int(KEEP_ENV, DEFAULT_KEEP_VERSIONS, minimum=1)
        pointer = {
            "version": self.version,
            "history": list(dict.fromkeys(history))[:keep],
            "committed_at": _now().isoformat(timespec="seconds"),
        }
        self.pointer_written = True
        self.box.child(POINTER).write_text(json.dumps(pointer, indent=2))
        self.committed = Box(uri=self.location.uri, manifest=final, location=self.location)
        return self.committed


@contextlib.contextmanager
def publishing(box: str | Path, root: str | None = None) -> Iterator[Draft]:
    """Yield a draft version of ``box``; the caller writes its data and calls ``commit``.

    ``box`` must lie under the lake root (``root``, else ``MLOPS_LAKE_ROOT`` when set). On an
    exception, or when the caller never commits, the draft is removed and the box keeps its
    current version. After a commit, versions beyond the retention and stale drafts are removed.
    """
    location = locate(ensure_within(str(box), root))
    if _VERSION.match(location.name):
        raise LakeError(f"{location.uri} is a version; publish to its box instead")
    draft = Draft(box=location, location=location.child(_new_version()))
    try:
        yield draft
    except BaseException:
        if draft.committed is None and not _pointer_may_name(draft):
            draft.location.remove()
        raise
    if draft.committed is None:
        draft.location.remove()
        raise LakeError(f"refusing to publish {location.uri}: the draft was never committed")
    sweep(location)


def sweep(box: Location, now: dt.datetime | None = None) -> list[str]:
    """Remove versions the pointer no longer keeps and drafts older than the stale age.

    :return: the names of the removed version directories
    """
    pointer = _read_pointer(box)
    kept = set(pointer.get("history", [])) | {pointer["version"]} if pointer else set()
    stale = dt.timedelta(seconds=_setting_int(STALE_ENV, DEFAULT_STALE_SECONDS, minimum=0))
    now = now or _now()
    removed = []
    for version, created in versions(box):
        if version in kept:
            continue
        # A version with a manifest was committed and has left the retained history (or lost
        # a race to a newer commit); one without is a draft, maybe of a writer still at work,
        # so it goes only once it is stale.
        committed = box.child(version, MANIFEST).exists()
        older = pointer is not None and created <= _version_time(pointer["version"])
        if (committed and older) or now - created >= stale:
            box.child(version).remove()
            removed.append(version)
    return removed


@dataclass
class Audit:
    """What ``audit`` found under a lake root.

    :param boxes: Published boxes checked.
    :param problems: Anything a reader could see half-written: a pointer that cannot be read
        or names a version without a manifest, a committed version whose files no longer match
        its content hash. Must be empty.
    :param drafts: Versions without a manifest (invisible to readers; a writer at work or one
        that died before its sweep).
    :param unverified: Committed versions whose content hash an earlier method computed (their
        manifest names another ``content_hash_method``, or none): not checked.
    """

    boxes: int = 0
    problems: list[str] = field(default_factory=list)
    drafts: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)


def audit(root: str) -> Audit:
    """Check every box under ``root``: each pointer names a committed version whose data files
    still hash to its manifest's ``content_hash``. Reads every committed version's data."""
    base = locate(root)
    report = Audit()
    try:
        found = base.fs.find(base.path, withdirs=True)
    except FileNotFoundError:
        return report
    directories = {posixpath.dirname(p.rstrip("/")) for p in found if _VERSION.match(
        posixpath.basename(p.rstrip("/")))}  # fmt: skip
    for path in sorted(directories):
        box = base.child(posixpath.relpath(path, base.path.rstrip("/")))
        for version, _ in versions(box):
            if not box.child(version, MANIFEST).exists():
                report.drafts.append(box.child(version).uri)
        try:
            pointer = _read_pointer(box)
        except LakeError as err:
            report.problems.append(str(err))
            continue
        if pointer is None:
            continue
        report.boxes += 1
        try:
            committed = open_box(box.uri)
        except LakeError as err:
            report.problems.append(str(err))
            continue
        expected = committed.manifest.get("content_hash")
        if expected is None:
            continue
        if committed.manifest.get("content_hash_method") != CONTENT_HASH_METHOD:
            report.unverified.append(committed.uri)
        elif content_hash(committed.location) != expected:
            report.problems.append(f"{committed.uri}: data files do not match its content hash")
    return report


def versions(box: Location) -> list[tuple[str, dt.datetime]]:
    """The version directories of a box with their creation times, oldest first."""
    try:
        entries = box.fs.ls(box.path, detail=False)
    except FileNotFoundError:
        return []
    found = []
    for entry in entries:
        name = posixpath.basename(str(entry).rstrip("/"))
        if _VERSION.match(name):
            found.append((name, _version_time(name)))
    return sorted(found, key=lambda item: item[0])


def expire(directory: Location, max_age: dt.timedelta | None = None) -> list[str]:
    """Remove the files under ``directory`` last modified longer than ``max_age`` ago.

    For small bookkeeping files outside boxes (job results), which matter only while their
    task runs; boxes retire their versions through :func:`sweep`. A file system that cannot
    tell modification times keeps everything. Directories stay: one emptied here may be the
    one a concurrent writer has just created.

    :param max_age: Defaults to ``MLOPS_LAKE_RESULTS_KEEP_DAYS`` days (7).
    :return: the paths of the removed files
    """
    if max_age is None:
        days = _setting_int(RESULTS_KEEP_ENV, DEFAULT_RESULTS_KEEP_DAYS, minimum=1)
        max_age = dt.timedelta(days=days)
    cutoff = _now() - max_age
    try:
        files = directory.fs.find(directory.path)
    except FileNotFoundError:
        return []
    removed = []
    for path in files:
        try:
            modified = directory.fs.modified(path)
        except (NotImplementedError, FileNotFoundError):
            continue
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=dt.UTC)
        if modified < cutoff:
            with contextlib.suppress(FileNotFoundError):
                directory.fs.rm_file(path)
                removed.append(path)
    return removed


# -- helpers -------------------------------------------------------------------------------


def _new_version() -> str:
    return f"{VERSION_PREFIX}{_now():%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def _version_time(name: str) -> dt.datetime:
    match = _VERSION.match(name)
    if not match:
        raise LakeError(f"{name!r} is not a version directory name")
    return dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _pointer_may_name(draft: Draft) -> bool:
    """Whether the box's pointer names the draft, or might (its write failed midway)."""
    if not draft.pointer_written:
        return False
    try:
        pointer = _read_pointer(draft.box)
    except (LakeError, OSError):
        return True
    return pointer is None or pointer["version"] == draft.version


def _read_pointer(box: Location) -> dict[str, Any] | None:
    try:
        pointer = json.loads(box.child(POINTER).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise LakeError(f"{box.uri}/{POINTER} is not valid JSON: {err}") from None
    if not isinstance(pointer, dict) or not _VERSION.match(str(pointer.get("version", ""))):
        raise LakeError(f"{box.uri}/{POINTER} names no version")
    return pointer


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


def _parquet_digest(fs: Any, path: str) -> str:
    import pyarrow.parquet as pq

    # Each column is hashed as three streams (null flags, values, value lengths) fed batch by
    # batch, so the digest depends on the rows and not on how the file splits them into row
    # groups or pages. Values are read from Arrow's buffers with NULL slots filled first: the
    # bytes under a NULL are undefined, so equal data could otherwise hash apart.
    with fs.open(path, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow.remove_metadata()
        streams = [[hashlib.sha256() for _ in range(3)] for _ in schema]
        for batch in parquet.iter_batches(batch_size=65_536):
            for (nulls, values, lengths), column in zip(streams, batch.columns, strict=True):
                nulls.update(column.is_null().to_numpy(zero_copy_only=False).view("u1"))
                data, sizes = _column_bytes(column)
                values.update(data)
                lengths.update(sizes)
    digest = hashlib.sha256(schema.serialize().to_pybytes())
    for column_streams in streams:
        for stream in column_streams:
            digest.update(stream.digest())
    return digest.hexdigest()


def _column_bytes(column: Any) -> tuple[Any, bytes]:
    """The values of one Arrow column chunk as bytes defined for every slot (NULLs filled), and
    for variable-width types the length of each value."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.types as pat

    kind = column.type
    variable = pat.is_string(kind) or pat.is_binary(kind)
    wide = pat.is_large_string(kind) or pat.is_large_binary(kind)
    if column.null_count and (blank := _blank(kind)) is not None:
        column = pc.fill_null(column, blank)
    if variable or wide:
        _, offsets_buffer, data = column.buffers()
        offsets = np.frombuffer(offsets_buffer, np.int64 if wide else np.int32)
        offsets = offsets[column.offset : column.offset + len(column) + 1]
        values = memoryview(data)[offsets[0] : offsets[-1]] if data is not None else b""
        return values, np.diff(offsets).astype("<i8").tobytes()
    if pat.is_primitive(kind):
        array = np.ascontiguousarray(column.to_numpy(zero_copy_only=False))
        if array.dtype.kind in "biufMm":
            return array.view("u1"), b""
    # anything else (decimals, lists, structs, maps): each value's exact JSON text (floats as
    # their shortest round-trip repr, decimals and dates as text), and its length
    texts = [json.dumps(v, default=str).encode() for v in column.to_pylist()]
    return b"".join(texts), np.array([len(t) for t in texts], "<i8").tobytes()


def _blank(kind: Any) -> Any:
    """The value NULL slots of an Arrow type are filled with before hashing, or None."""
    import pyarrow as pa
    import pyarrow.types as pat

    if pat.is_string(kind) or pat.is_large_string(kind):
        return pa.scalar("", type=kind)
    if pat.is_binary(kind) or pat.is_large_binary(kind):
        return pa.scalar(b"", type=kind)
    if pat.is_boolean(kind):
        return pa.scalar(False)
    if pat.is_integer(kind) or pat.is_floating(kind) or pat.is_timestamp(kind) or pat.is_date(kind):
        return pa.scalar(0, type=kind)
    return None


def _sha256(fs: Any, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_parquet(fs: Any, path: str) -> bool:
    try:
        with fs.open(path, "rb") as handle:
            return bool(handle.read(4) == b"PAR1")
    except OSError:
        return False
