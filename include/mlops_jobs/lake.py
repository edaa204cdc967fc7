"""The lake: where snapshots and feature sets live, and how they are published atomically.

A box (one snapshot, one feature set) is written into a staging directory beside its final place,
gets its ``manifest.json`` last, and is then moved into place with a rename. A reader therefore sees
the previous box or the new one, never half of one; a directory without a manifest is not a box.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

MANIFEST = "manifest.json"
STAGING = "_staging"


class LakeError(RuntimeError):
    """A lake path is invalid or a box is missing or incomplete."""


def lake_root(explicit: str | None = None) -> Path:
    """The lake's root directory: ``explicit``, else ``MLOPS_LAKE_ROOT``."""
    value = explicit or os.environ.get("MLOPS_LAKE_ROOT")
    if not value:
        raise LakeError("no lake root: pass one or set MLOPS_LAKE_ROOT")
    return to_path(value)


def to_path(uri_or_path: str | Path) -> Path:
    """A local path from a ``file://`` URI or a plain path."""
    text = str(uri_or_path)
    parsed = urlparse(text)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme:
        raise LakeError(f"unsupported lake URI {text!r}: only local paths and file:// URIs")
    return Path(text).absolute()


def path_uri(path: Path) -> str:
    """``file://`` URI of a local path as Hadoop parses it (``=`` stays literal, unlike
    ``Path.as_uri``, which Spark would write to a ``ds%3D…`` directory)."""
    return "file://" + quote(str(path.absolute()), safe="/=-_.~+,:@")


def box_path(root: Path, dataset: str, ds: str) -> Path:
    """Final location of a dataset's box for one ``ds``: ``{root}/{dataset}/ds={ds}``."""
    return root / dataset / f"ds={ds}"


@contextlib.contextmanager
def publishing(final: Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on success move it to ``final`` atomically.

    The caller writes every file, the manifest last. On any exception the staging directory is
    removed and ``final`` is left as it was. An existing ``final`` is replaced as a whole.
    """
    staging_root = final.parent / STAGING
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"{final.name}.{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        yield staging
        if not (staging / MANIFEST).is_file():
            raise LakeError(f"refusing to publish {final}: no {MANIFEST} was written")
        retired = staging_root / f"{final.name}.retired.{uuid.uuid4().hex}"
        if final.exists():
            os.replace(final, retired)
        try:
            os.replace(staging, final)
        except OSError:
            if retired.exists():
                os.replace(retired, final)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_manifest(directory: Path, manifest: Mapping[str, Any]) -> Path:
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a published box; a clear error when the box is missing or incomplete."""
    path = to_path(directory) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LakeError(f"{path.parent} is not a published box: {MANIFEST} is missing") from None


def data_files(directory: Path, suffix: str = ".parquet") -> list[Path]:
    """Data files under ``directory`` (hidden and ``_``-prefixed files, e.g. _SUCCESS, skipped)."""
    found = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith((".", "_")) and path.name != MANIFEST:
            # Hive names Parquet output files without an extension; Spark adds one.
            if suffix and not path.name.endswith(suffix) and not _is_parquet(path):
                continue
            found.append(path)
    return found


def content_hash(files: list[Path]) -> str:
    """SHA-256 over the sorted digests of the files' contents, independent of file names.

    A Parquet file's digest covers its data and schema, not its bytes: Parquet writers do not
    order footer fields deterministically (parquet-mr lists column encodings from a hash set), so
    the same rows written twice can differ byte for byte. Other files are hashed as bytes.
    """
    digests = sorted(_parquet_digest(p) if _is_parquet(p) else _sha256(p) for p in files)
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def _parquet_digest(path: Path) -> str:
    import pandas as pd
    import pyarrow.parquet as pq

    # Batch by batch, so a large export is never held in memory at once. Values are hashed
    # through pandas rather than as Arrow buffers: the bytes under null slots and past the end
    # of a validity bitmap are undefined, so buffers of equal data can differ.
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow.remove_metadata()
    digest = hashlib.sha256(schema.serialize().to_pybytes())
    for batch in parquet.iter_batches(batch_size=65_536):
        rows = pd.util.hash_pandas_object(batch.to_pandas(), index=False)
        digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_parquet(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PAR1"
    except OSError:
        return False
