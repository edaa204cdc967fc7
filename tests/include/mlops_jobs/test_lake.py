from __future__ import annotations

from pathlib import Path

import pytest

from mlops_jobs import lake


def _publish(final: Path, payload: str) -> None:
    with lake.publishing(final) as staging:
        (staging / "data.txt").write_text(payload)
        lake.write_manifest(staging, {"payload": payload})


def test_publish_replaces_the_box_and_leaves_no_staging(tmp_path: Path) -> None:
    final = lake.box_path(tmp_path, "churn/snapshots", "2026-03-01")
    _publish(final, "first")
    _publish(final, "second")
    assert (final / "data.txt").read_text() == "second"
    assert lake.read_manifest(final) == {"payload": "second"}
    assert list((final.parent / lake.STAGING).iterdir()) == []


def test_failed_publish_keeps_the_previous_box(tmp_path: Path) -> None:
    final = lake.box_path(tmp_path, "churn/snapshots", "2026-03-01")
    _publish(final, "good")
    with pytest.raises(RuntimeError, match="export broke"), lake.publishing(final) as staging:
        (staging / "data.txt").write_text("half")
        raise RuntimeError("export broke")
    assert (final / "data.txt").read_text() == "good"
    assert list((final.parent / lake.STAGING).iterdir()) == []


def test_publish_without_manifest_is_refused(tmp_path: Path) -> None:
    final = tmp_path / "box"
    with (
        pytest.raises(lake.LakeError, match=r"no manifest\.json"),
        lake.publishing(final) as staging,
    ):
        (staging / "data.txt").write_text("x")
    assert not final.exists()


def test_read_manifest_of_missing_box_names_it(tmp_path: Path) -> None:
    with pytest.raises(lake.LakeError, match="not a published box"):
        lake.read_manifest(tmp_path / "nothing")


def test_content_hash_ignores_file_names_but_not_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    c.write_bytes(b"one")
    assert lake.content_hash([a, b]) == lake.content_hash([b, c])
    assert lake.content_hash([a]) != lake.content_hash([b])


def test_path_uri_keeps_partition_equals_sign(tmp_path: Path) -> None:
    path = tmp_path / "ds=2026-03-01"
    uri = lake.path_uri(path)
    assert uri.endswith("/ds=2026-03-01")
    assert lake.to_path(uri) == path


def test_data_files_skip_markers_and_checksums(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-0.crc").write_text("")
    (tmp_path / "part-0.parquet").write_bytes(b"PAR1...")
    (tmp_path / "000000_0").write_bytes(b"PAR1...")  # Hive's extension-less output
    (tmp_path / "notes.txt").write_text("not data")
    assert [p.name for p in lake.data_files(tmp_path)] == ["000000_0", "part-0.parquet"]


def test_unsupported_uri_scheme_is_named() -> None:
    with pytest.raises(lake.LakeError, match="s3://bucket"):
        lake.to_path("s3://bucket/lake")


def test_parquet_content_hash_covers_data_not_encoding(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"customer_id": [1, 2, 3], "amount": [1.5, None, 2.25]})
    pq.write_table(table, tmp_path / "snappy.parquet", compression="snappy")
    pq.write_table(table, tmp_path / "zstd.parquet", compression="zstd")
    pq.write_table(table.slice(0, 2), tmp_path / "fewer.parquet")
    snappy, zstd = tmp_path / "snappy.parquet", tmp_path / "zstd.parquet"
    assert snappy.read_bytes() != zstd.read_bytes()
    assert lake.content_hash([snappy]) == lake.content_hash([zstd])
    assert lake.content_hash([snappy]) != lake.content_hash([tmp_path / "fewer.parquet"])
