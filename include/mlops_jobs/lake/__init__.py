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

One module per concern: ``paths`` (locations, checked paths, boxes), ``content`` (data files
and the content hash), ``publish`` (drafts, the commit pointer, readers, retention), ``audit``.
This package exports all of them, so callers write ``lake.open_box``, ``lake.publishing``…
"""

from __future__ import annotations

from mlops_jobs.lake.audit import (
    Audit,
    audit,
)
from mlops_jobs.lake.content import (
    CONTENT_HASH_METHOD,
    combine_digests,
    content_hash,
    data_files,
    file_digests,
    parquet_rows,
    read_parquet,
)
from mlops_jobs.lake.paths import (
    DATABRICKS_RUNTIME_ENV,
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_RESULTS_KEEP_DAYS,
    DEFAULT_STALE_SECONDS,
    KEEP_ENV,
    MANIFEST,
    MOUNTS_ENV,
    POINTER,
    RESULTS_KEEP_ENV,
    ROOT_ENV,
    STALE_ENV,
    VERSION_PREFIX,
    VOLUMES,
    LakeConflictError,
    LakeError,
    Location,
    box_uri,
    ensure_within,
    join,
    lake_root,
    locate,
    normalize,
    path_uri,
)
from mlops_jobs.lake.publish import (
    Box,
    Draft,
    expire,
    open_box,
    publishing,
    read_manifest,
    sweep,
    versions,
)

__all__ = [
    "CONTENT_HASH_METHOD",
    "DATABRICKS_RUNTIME_ENV",
    "DEFAULT_KEEP_VERSIONS",
    "DEFAULT_RESULTS_KEEP_DAYS",
    "DEFAULT_STALE_SECONDS",
    "KEEP_ENV",
    "MANIFEST",
    "MOUNTS_ENV",
    "POINTER",
    "RESULTS_KEEP_ENV",
    "ROOT_ENV",
    "STALE_ENV",
    "VERSION_PREFIX",
    "VOLUMES",
    "Audit",
    "Box",
    "Draft",
    "LakeConflictError",
    "LakeError",
    "Location",
    "audit",
    "box_uri",
    "combine_digests",
    "content_hash",
    "data_files",
    "ensure_within",
    "expire",
    "file_digests",
    "join",
    "lake_root",
    "locate",
    "normalize",
    "open_box",
    "parquet_rows",
    "path_uri",
    "publishing",
    "read_manifest",
    "read_parquet",
    "sweep",
    "versions",
]
