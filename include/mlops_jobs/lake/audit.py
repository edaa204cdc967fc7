"""Checking a lake: every committed version whole and matching its content hash."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field

from mlops_jobs.lake.content import CONTENT_HASH_METHOD, content_hash
from mlops_jobs.lake.paths import _VERSION, MANIFEST, LakeError, locate
from mlops_jobs.lake.publish import _read_pointer, open_box, versions


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
