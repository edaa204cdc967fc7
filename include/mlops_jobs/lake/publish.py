"""Publishing a box atomically: draft versions, the commit pointer, readers, retention."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import posixpath
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_jobs.lake.content import CONTENT_HASH_METHOD, content_hash, data_files
from mlops_jobs.lake.paths import (
    _VERSION,
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_RESULTS_KEEP_DAYS,
    DEFAULT_STALE_SECONDS,
    KEEP_ENV,
    MANIFEST,
    POINTER,
    RESULTS_KEEP_ENV,
    STALE_ENV,
    VERSION_PREFIX,
    LakeConflictError,
    LakeError,
    Location,
    _setting_int,
    ensure_within,
    locate,
)


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
