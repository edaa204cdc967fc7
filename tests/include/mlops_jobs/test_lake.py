"""The lake: URIs, versioned publishing without rename, crash points, retention and bounds."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from mlops_jobs import lake
from mlops_jobs.lake import publish as publish_module

DS = "2026-03-01"


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A lake root on the local disk and one on fsspec's in-memory store, which, like an object
    store, is reached only through the filesystem API."""
    if request.param == "local":
        yield str(tmp_path / "lake")
        return
    name = f"memory://lake-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(name.removeprefix("memory://"), recursive=True)


def publish(box: str, payload: str, root: str) -> lake.Box:
    with lake.publishing(box, root=root) as draft:
        draft.location.child("data", "part-0.txt").write_text(payload)
        return draft.commit({"payload": payload})


def payload(box: str) -> str:
    opened = lake.open_box(box)
    return opened.path("data", "part-0.txt").read_text()


def test_each_publish_is_a_new_version_that_readers_resolve(root: str) -> None:
    box = lake.box_uri(root, "churn/snapshots", DS)
    first = publish(box, "first", root)
    second = publish(box, "second", root)
    assert first.uri != second.uri and second.uri.startswith(box + "/v=")
    assert payload(box) == "second"
    assert lake.open_box(first.uri).manifest["payload"] == "first"  # a version stays readable
    assert lake.read_manifest(box)["content_hash"] == lake.content_hash(second.location)


def test_failed_publish_keeps_the_previous_version_and_leaves_no_draft(root: str) -> None:
    box = lake.box_uri(root, "churn/snapshots", DS)
    good = publish(box, "good", root)
    with (
        pytest.raises(RuntimeError, match="export broke"),
        lake.publishing(box, root=root) as draft,
    ):
        draft.location.child("data", "part-0.txt").write_text("half")
        raise RuntimeError("export broke")
    assert payload(box) == "good"
    assert [v for v, _ in lake.versions(lake.locate(box))] == [good.location.name]


def test_publish_without_commit_is_refused(root: str) -> None:
    box = lake.box_uri(root, "churn/snapshots", DS)
    with pytest.raises(lake.LakeError, match="never committed"), lake.publishing(box, root=root):
        pass
    with pytest.raises(lake.LakeError, match="not a published box"):
        lake.open_box(box)


@pytest.mark.parametrize("crash_point", ["data", "manifest", "pointer"])
def test_a_crash_at_any_point_leaves_the_previous_version_readable(
    root: str, crash_point: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed task never runs cleanup: simulate it by failing a write without the context
    manager's exception handling (the draft stays behind), then check what readers see."""
    box = lake.box_uri(root, "churn/snapshots", DS)
    publish(box, "good", root)
    real_write = lake.Location.write_text

    def crash_on(self: lake.Location, text: str) -> None:
        if self.name == {"manifest": lake.MANIFEST, "pointer": lake.POINTER}.get(crash_point):
            raise KeyboardInterrupt("killed")
        real_write(self, text)

    monkeypatch.setattr(lake.Location, "write_text", crash_on)
    location = lake.locate(box)
    draft = lake.Draft(box=location, location=location.child(publish_module._new_version()))
    draft.location.child("data", "part-0.txt").write_text("new")
    if crash_point != "data":
        with pytest.raises(KeyboardInterrupt):
            draft.commit({"payload": "new"})
    monkeypatch.undo()
    assert payload(box) == "good"
    # The next publish, once the draft is stale, sweeps it.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lake.DEFAULT_STALE_SECONDS + 1)
    assert draft.version in lake.sweep(location, now=later)


def test_a_slow_writer_is_not_swept_by_a_faster_one(root: str) -> None:
    box = lake.box_uri(root, "churn/features", DS)
    location = lake.locate(box)
    slow = lake.Draft(box=location, location=location.child(publish_module._new_version()))
    slow.location.child("data", "part-0.txt").write_text("slow")
    publish(box, "fast", root)  # started later, committed first, then swept
    assert slow.location.child("data", "part-0.txt").exists()
    slow.commit({"payload": "slow"})
    assert payload(box) == "slow"


def test_an_error_after_the_commit_keeps_the_committed_version(root: str) -> None:
    box = lake.box_uri(root, "churn/features", DS)
    with pytest.raises(RuntimeError, match="killed"), lake.publishing(box, root=root) as draft:
        draft.location.child("data", "part-0.txt").write_text("kept")
        draft.commit({"payload": "kept"})
        raise RuntimeError("killed after the commit")
    assert payload(box) == "kept"


def test_an_empty_draft_is_not_committed(root: str) -> None:
    box = lake.box_uri(root, "churn/features", DS)
    with (
        pytest.raises(lake.LakeError, match="holds no data files"),
        lake.publishing(box, root=root) as draft,
    ):
        draft.commit({"payload": "nothing"})


def test_a_half_written_pointer_is_impossible_on_local_disk(tmp_path: Path) -> None:
    target = lake.locate(str(tmp_path / "pointer.json"))
    target.write_text(json.dumps({"version": "x"}))
    assert [p.name for p in tmp_path.iterdir()] == ["pointer.json"]  # no temporary left


def test_retention_keeps_the_newest_versions(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lake.KEEP_ENV, "2")
    box = lake.box_uri(root, "churn/features", DS)
    published = [publish(box, str(i), root).location.name for i in range(4)]
    assert [v for v, _ in lake.versions(lake.locate(box))] == published[-2:]


def test_fresh_drafts_of_a_concurrent_writer_are_not_swept(root: str) -> None:
    box = lake.box_uri(root, "churn/features", DS)
    location = lake.locate(box)
    publish(box, "one", root)
    draft = lake.Draft(box=location, location=location.child(publish_module._new_version()))
    draft.location.child("data", "part-0.txt").write_text("in progress")
    assert lake.sweep(location) == []
    draft.commit({"payload": "late"})
    assert payload(box) == "in progress"


def test_old_job_results_expire_and_fresh_ones_stay(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = lake.locate(lake.join(root, "_results", "churn_training"))
    old = results.child("ds=2026-02-01", "train_model", "a.json")
    fresh = results.child("ds=2026-03-01", "train_model", "b.json")
    old.write_text("{}")
    fresh.write_text("{}")
    # Three days on, both are younger than the default seven days.
    now = publish_module._now()
    monkeypatch.setattr(publish_module, "_now", lambda: now + dt.timedelta(days=3))
    assert lake.expire(results) == []
    monkeypatch.setenv(lake.RESULTS_KEEP_ENV, "2")
    left = [old.path, fresh.path]
    if root.startswith("/"):  # the local disk can backdate a file: only that one goes
        long_ago = (now - dt.timedelta(days=10)).timestamp()
        os.utime(old.path, (long_ago, long_ago))
        monkeypatch.setattr(publish_module, "_now", lambda: now)
        assert lake.expire(results) == [old.path]
        assert not old.exists() and fresh.exists()
        left = [fresh.path]
    monkeypatch.setattr(publish_module, "_now", lambda: now + dt.timedelta(days=3))
    assert sorted(lake.expire(results)) == left
    assert not old.exists() and not fresh.exists()
    assert lake.expire(lake.locate(lake.join(root, "_results", "no_such_dag"))) == []
    monkeypatch.setenv(lake.RESULTS_KEEP_ENV, "0")
    with pytest.raises(lake.LakeError, match="MLOPS_LAKE_RESULTS_KEEP_DAYS must be at least 1"):
        lake.expire(results)


@pytest.mark.parametrize(
    ("parts", "fault"),
    [
        (("churn/../../etc",), r"'\.\.'"),
        (("churn", "/abs"), "invalid lake path segment ''"),
        (("churn//features",), "invalid lake path segment ''"),
        (("churn", "ds=2026 03 01"), "invalid lake path segment 'ds=2026 03 01'"),
    ],
)
def test_paths_are_validated(tmp_path: Path, parts: tuple[str, ...], fault: str) -> None:
    with pytest.raises(lake.LakeError, match=fault):
        lake.join(str(tmp_path), *parts)


def test_outputs_outside_the_lake_root_are_refused(tmp_path: Path) -> None:
    root = str(tmp_path / "lake")
    outside = str(tmp_path / "elsewhere" / "ds=2026-03-01")
    with (
        pytest.raises(lake.LakeError, match="outside the lake root"),
        lake.publishing(outside, root=root),
    ):
        pass
    with pytest.raises(lake.LakeError, match="outside the lake root"):
        lake.ensure_within(str(tmp_path / "lake-other"), root)
    with pytest.raises(lake.LakeError, match=r"'\.\.'"):
        lake.ensure_within(f"{root}/churn/../../x", root)


def test_box_uri_checks_ds(tmp_path: Path) -> None:
    with pytest.raises(lake.LakeError, match="ds must be a date"):
        lake.box_uri(str(tmp_path), "churn/features", "2026-3-1x")


def test_mounts_map_cluster_uris_to_local_directories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(lake.MOUNTS_ENV, json.dumps({"dbfs:/": lake.path_uri(tmp_path) + "/"}))
    box = "dbfs:/mlops/lake/churn/features/ds=2026-03-01"
    committed = publish(box, "mounted", "dbfs:/mlops/lake")
    assert committed.uri.startswith(box + "/v=")  # results name the logical URI
    assert (tmp_path / "mlops/lake/churn/features/ds=2026-03-01" / lake.POINTER).is_file()
    assert lake.locate(box).spark == lake.path_uri(tmp_path / "mlops/lake/churn/features") + (
        "/ds=2026-03-01"
    )


def test_dbfs_on_a_cluster_goes_through_the_fuse_mount(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lake.DATABRICKS_RUNTIME_ENV, "15.4")
    location = lake.locate("dbfs:/mlops/lake")
    assert (location.path, location.spark) == ("/dbfs/mlops/lake", "dbfs:/mlops/lake")
    volume = lake.locate("file:///Volumes/main/ml/lake/churn/")
    assert (volume.uri, volume.path, volume.spark) == (
        "/Volumes/main/ml/lake/churn",
        "/Volumes/main/ml/lake/churn",
        "/Volumes/main/ml/lake/churn",
    )


def test_dbfs_off_a_cluster_without_a_mount_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(lake.DATABRICKS_RUNTIME_ENV, raising=False)
    monkeypatch.delenv(lake.MOUNTS_ENV, raising=False)
    with pytest.raises(lake.LakeError, match=r"dbfs:/mlops/lake is on DBFS.*MLOPS_LAKE_MOUNTS"):
        lake.locate("dbfs:/mlops/lake")
    with pytest.raises(lake.LakeError, match=r"/Volumes/main/ml/lake is in a Unity Catalog"):
        lake.locate("/Volumes/main/ml/lake")


def test_mounts_match_whole_path_segments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lake.MOUNTS_ENV, json.dumps({"dbfs:/mnt/lake": str(tmp_path / "m")}))
    assert lake.locate("dbfs:/mnt/lake/x").path == str(tmp_path / "m" / "x")
    with pytest.raises(lake.LakeError, match="on DBFS"):
        lake.locate("dbfs:/mnt/lake2/x")


def test_object_store_uris_reach_spark_through_s3a(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lake.DATABRICKS_RUNTIME_ENV, raising=False)
    with pytest.raises(lake.LakeError, match="s3://bucket/lake"):
        lake.locate("s3://bucket/lake")  # s3fs is not installed here: the error names the URI


def test_path_uri_keeps_partition_equals_sign(tmp_path: Path) -> None:
    path = tmp_path / "ds=2026-03-01"
    uri = lake.path_uri(path)
    assert uri.endswith("/ds=2026-03-01")
    assert lake.locate(uri).path == str(path)
    assert lake.normalize(str(path)) == uri


def test_data_files_skip_markers_and_checksums(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part-0.crc").write_text("")
    (tmp_path / "part-0.parquet").write_bytes(b"PAR1...")
    (tmp_path / "000000_0").write_bytes(b"PAR1...")  # Hive's extension-less output
    (tmp_path / "notes.txt").write_text("not data")
    files = lake.data_files(lake.locate(str(tmp_path)))
    assert [Path(p).name for p in files] == ["000000_0", "part-0.parquet"]


def test_content_hash_ignores_file_names_but_not_bytes(tmp_path: Path) -> None:
    location = lake.locate(str(tmp_path))
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    c.write_bytes(b"one")
    assert lake.content_hash(location, [str(a), str(b)]) == lake.content_hash(
        location, [str(b), str(c)]
    )
    assert lake.content_hash(location, [str(a)]) != lake.content_hash(location, [str(b)])


def test_parquet_content_hash_covers_data_not_encoding(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    location = lake.locate(str(tmp_path))
    table = pa.table({"customer_id": [1, 2, 3], "amount": [1.5, None, 2.25]})
    pq.write_table(table, tmp_path / "snappy.parquet", compression="snappy")
    pq.write_table(table, tmp_path / "zstd.parquet", compression="zstd")
    pq.write_table(table.slice(0, 2), tmp_path / "fewer.parquet")
    snappy, zstd = str(tmp_path / "snappy.parquet"), str(tmp_path / "zstd.parquet")
    assert Path(snappy).read_bytes() != Path(zstd).read_bytes()
    assert lake.content_hash(location, [snappy]) == lake.content_hash(location, [zstd])
    assert lake.content_hash(location, [snappy]) != lake.content_hash(
        location, [str(tmp_path / "fewer.parquet")]
    )


def test_parquet_content_hash_covers_nested_and_decimal_values_exactly(tmp_path: Path) -> None:
    """Lists, structs and decimals are hashed by their exact values: a long list that differs in
    one element, or a float that differs in its last digit, hashes apart."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    location = lake.locate(str(tmp_path))
    long = [float(i) for i in range(2_000)]
    rows = {
        "scores": [long, None, [0.1, 0.2]],
        "where": [{"plan": "basic", "fee": 9.5}, None, {"plan": None, "fee": 1.0}],
        "amount": [decimal.Decimal("1.10"), None, decimal.Decimal("-3.25")],
    }
    schema = pa.schema([("scores", pa.list_(pa.float64())), ("where", pa.struct([("plan",
        pa.string()), ("fee", pa.float64())])), ("amount", pa.decimal128(9, 2))])  # fmt: skip

    def digest(columns: dict[str, list[Any]], name: str, **options: Any) -> str:
        pq.write_table(pa.table(columns, schema=schema), tmp_path / name, **options)
        return lake.content_hash(location, [str(tmp_path / name)])

    whole = digest(rows, "whole.parquet")
    assert digest(rows, "groups.parquet", row_group_size=1) == whole
    longer = [*long[:1_500], 1_500.5, *long[1_501:]]
    nearer = [0.1, 0.2 + 1e-12]
    for i, (column, value) in enumerate(
        [("scores", longer), ("scores", nearer), ("amount", decimal.Decimal("1.11"))]
    ):
        other = {**rows, column: [value, *rows[column][1:]]}
        assert digest(other, f"other-{i}.parquet") != whole, column


def test_audit_checks_versions_hashed_by_the_current_method_only(root: str) -> None:
    box = lake.box_uri(root, "churn/snapshots", DS)
    committed = publish(box, "first", root)
    assert committed.manifest["content_hash_method"] == lake.CONTENT_HASH_METHOD
    assert lake.audit(root).problems == []
    committed.location.child("data", "part-0.txt").write_text("changed")
    assert lake.audit(root).problems == [
        f"{committed.uri}: data files do not match its content hash"
    ]
    # a version committed before the method was recorded is reported as unverified, not corrupt
    manifest = committed.location.child(lake.MANIFEST)
    older = json.loads(manifest.read_text())
    del older["content_hash_method"]
    manifest.write_text(json.dumps(older))
    report = lake.audit(root)
    assert report.problems == [] and report.unverified == [committed.uri]


def test_parquet_content_hash_covers_rows_not_their_layout(tmp_path: Path) -> None:
    """Row groups and batches split the data anywhere, NULL slots hold any bytes: the hash
    follows the values alone, and tells apart what only looks alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    location = lake.locate(str(tmp_path))
    rows = 150_000  # more than one read batch
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([None if i % 7 == 0 else f"c-{i % 1000}" for i in range(rows)]),
            "fee": pa.array([None if i % 5 == 0 else i / 4 for i in range(rows)]),
            "autopay": pa.array([None if i % 3 == 0 else i % 2 == 0 for i in range(rows)]),
            "day": pa.array([dt.date(2026, 1, 1 + i % 28) for i in range(rows)]),
            "at": pa.array([dt.datetime(2026, 1, 1, i % 24) for i in range(rows)]),
        }
    )

    def digest(data: pa.Table, name: str, **options: Any) -> str:
        pq.write_table(data, tmp_path / name, **options)
        return lake.content_hash(location, [str(tmp_path / name)])

    whole = digest(table, "whole.parquet")
    assert digest(table, "groups.parquet", row_group_size=7_777) == whole
    assert digest(table, "plain.parquet", use_dictionary=False) == whole

    def changed(column: str, values: list[Any]) -> pa.Table:
        index = table.schema.get_field_index(column)
        return table.set_column(index, column, pa.array(values, table.schema.field(column).type))

    names = table.column("name").to_pylist()
    fees = table.column("fee").to_pylist()
    blank_name = changed("name", ["" if v is None else v for v in names])
    zero_fee = changed("fee", [0.0 if v is None else v for v in fees])
    for i, other in enumerate((blank_name, zero_fee)):
        assert digest(other, f"other-{i}.parquet") != whole
    # the same bytes split into other values
    assert digest(changed("name", ["c-1", "c-2c-", *names[2:]]), "a.parquet") != digest(
        changed("name", ["c-1c", "-2c-", *names[2:]]), "b.parquet"
    )
