"""A version's data files: listing, reading, and the content hash that identifies them."""

from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any

from mlops_jobs.lake.paths import MANIFEST, LakeError, Location


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
