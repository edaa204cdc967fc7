"""Faults injected into real local runs: each test breaks one thing (a server, the network, the
lake, the registry, a concurrent writer) while a stage runs, and checks what the design
promises: the task fails retryably (or without retries, for what cannot heal) with an error
that names the cause, nothing partial is visible in the lake (``lake.audit``), the registry's
aliases are untouched, and a later try succeeds.

Run alone with ``pytest -m faults`` (``bench/reliability.py`` does, and prints the summary).
The other fault cases of the suite carry the same marker: a killed local job and training
worker, Databricks runs that fail, end in INTERNAL_ERROR, meet 429/5xx storms or refused
connections (``tests/plugins/mlops_airflow/operators``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlops_airflow.exceptions import HiveServerUnavailableError
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_SOURCES
from tests.conftest import DEMO, LOOKBACK_DAYS, TEST_PORT
from tests.support import databricks_emulator, register_version

pytestmark = pytest.mark.faults

END = str(DEMO["end_ds"])
DAY_BEFORE = "2026-02-28"


class Proxy:
    """A TCP proxy to the test HiveServer2 that can cut every connection: once a client sends
    a request containing ``cut_on`` (the request is forwarded first, so the server runs it),
    both ends of that connection are closed."""

    def __init__(self, upstream_port: int, cut_on: bytes | None = None) -> None:
        self.upstream_port = upstream_port
        self.cut_on = cut_on
        self.cut = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
                if requests and self.cut_on is not None and self.cut_on in data:
                    self.cut.set()
                    for end in (source, target):
                        end.shutdown(socket.SHUT_RDWR)
                    return
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def hive_through(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``connect(port)`` points the connection ``hiveserver2_faults`` at ``port``."""

    def connect(port: int) -> str:
        monkeypatch.setenv(
            "AIRFLOW_CONN_HIVESERVER2_FAULTS",
            f"hiveserver2://127.0.0.1:{port}/default?auth_mechanism=NONE",
        )
        return "hiveserver2_faults"

    yield connect


def extract(lake_root: Path | str, conn_id: str = "hiveserver2_default", ds: str = END) -> str:
    return HiveExtractOperator(
        task_id="extract_snapshot",
        sources=CHURN_SOURCES,
        dataset="churn/snapshots",
        ds=ds,
        lookback_days=LOOKBACK_DAYS,
        lake_root=str(lake_root),
        hiveserver2_conn_id=conn_id,
    ).execute({})  # type: ignore[arg-type]


def assert_whole(lake_root: Path | str) -> lake.Audit:
    """Nothing a reader can see under ``lake_root`` is half-written."""
    report = lake.audit(lake.normalize(lake_root))
    assert report.problems == []
    return report


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.hive
def test_hiveserver2_down_before_extraction_is_retryable_and_named(
    demo_warehouse: object, hive_through: Any, lake_root: Path
) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(HiveServerUnavailableError) as raised:
        extract(lake_root, hive_through(port))
    assert f"HiveServer2 127.0.0.1:{port} (connection hiveserver2_faults) is unreachable" in str(
        raised.value
    )
    assert not isinstance(raised.value, AirflowFailException)  # a retry may find it up
    assert not (lake_root / "churn").exists()


@pytest.mark.hive
def test_connection_lost_during_the_export_publishes_nothing_and_a_retry_succeeds(
    demo_warehouse: object, hive_through: Any, lake_root: Path
) -> None:
    before = extract(lake_root, ds=DAY_BEFORE)
    proxy = Proxy(TEST_PORT, cut_on=b"INSERT OVERWRITE DIRECTORY")
    try:
        with pytest.raises(HiveServerUnavailableError) as raised:
            extract(lake_root, hive_through(proxy.port))
    finally:
        proxy.close()
    assert proxy.cut.is_set()
    assert "lost the connection to HiveServer2" in str(raised.value)
    assert "INSERT OVERWRITE DIRECTORY" in str(raised.value)
    with pytest.raises(lake.LakeError):  # nothing published for the day
        lake.open_box(lake.box_uri(str(lake_root), "churn/snapshots", END))
    assert lake.open_box(lake.box_uri(str(lake_root), "churn/snapshots", DAY_BEFORE)).uri == before
    assert_whole(lake_root)

    retried = extract(lake_root)  # the next try, with the server reachable
    assert lake.open_box(lake.box_uri(str(lake_root), "churn/snapshots", END)).uri == retried
    assert_whole(lake_root)


@pytest.mark.hive
def test_a_lake_that_cannot_be_written_fails_naming_it(
    demo_warehouse: object, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the lake should be")
    with pytest.raises(OSError) as raised:
        extract(blocker / "lake")
    assert str(blocker) in str(raised.value)
    assert blocker.read_text() == "a file where the lake should be"


@pytest.mark.parametrize("failing", [lake.MANIFEST, lake.POINTER])
def test_a_write_error_mid_publish_keeps_the_previous_version(
    failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails (ENOSPC) while the new version's manifest, or the pointer that makes it
    current, is written: the commit fails, readers still see the previous version whole, and
    the next try publishes."""
    import errno

    box = lake.box_uri(str(tmp_path), "churn/features", END)
    with lake.publishing(box, root=str(tmp_path)) as draft:
        draft.location.child("data.csv").write_text("a,b\n1,2\n")
        previous = draft.commit({"ds": END}).uri
    write_text = lake.Location.write_text

    def full_disk(self: lake.Location, text: str) -> None:
        if self.name == failing:
            raise OSError(errno.ENOSPC, "No space left on device", self.path)
        write_text(self, text)

    with monkeypatch.context() as patch:
        patch.setattr(lake.Location, "write_text", full_disk)
        with (
            pytest.raises(OSError, match="No space left"),
            lake.publishing(box, root=str(tmp_path)) as draft,
        ):
            draft.location.child("data.csv").write_text("a,b\n3,4\n")
            draft.commit({"ds": END})
    assert lake.open_box(box).uri == previous
    assert_whole(tmp_path)
    with lake.publishing(box, root=str(tmp_path)) as draft:
        draft.location.child("data.csv").write_text("a,b\n3,4\n")
        retried = draft.commit({"ds": END}).uri
    assert lake.open_box(box).uri == retried != previous
    assert_whole(tmp_path)


@pytest.mark.hive
def test_two_runs_for_different_days_at_once_both_publish_whole(
    demo_warehouse: object, lake_root: Path
) -> None:
    results: dict[str, Any] = {}

    def run(ds: str) -> None:
        try:
            results[ds] = extract(lake_root, ds=ds)
        except BaseException as err:  # reported below
            results[ds] = err

    threads = [threading.Thread(target=run, args=(ds,)) for ds in (DAY_BEFORE, END)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    for ds in (DAY_BEFORE, END):
        assert isinstance(results[ds], str), results[ds]
        box = lake.open_box(lake.box_uri(str(lake_root), "churn/snapshots", ds))
        assert box.uri == results[ds] and box.manifest["ds"] == ds
        events = box.manifest["tables"]["events"]["partitions"]
        assert events["last"] < ds
    assert assert_whole(lake_root).boxes == 2


def test_mlflow_unreachable_at_promotion_fails_retryably_and_moves_no_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    from tests.plugins.mlops_airflow.operators.test_promotion import auto_approve, gate, promote
    from tests.support import evaluation_result

    client = mlflow.MlflowClient()
    name = f"churn_faults_{uuid.uuid4().hex[:8]}"
    champion = register_version(client, name)
    client.set_registered_model_alias(name, "champion", champion)
    candidate = register_version(client, name)
    store: dict[tuple[str, str], Any] = {}
    evaluation = evaluation_result(client, name, candidate, 0.85, 0.78, champion, 0.80)
    assert gate(evaluation, store) == "approve_promotion"
    auto_approve(store)
    with monkeypatch.context() as unreachable:
        unreachable.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
        unreachable.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        with pytest.raises(Exception) as raised:
            promote(store)
    assert not isinstance(raised.value, AirflowFailException)  # the store may come back
    assert "127.0.0.1" in str(raised.value)
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(name, "challenger")
    # the retry, with the store back, promotes
    assert promote(store)["version"] == candidate
    assert str(client.get_model_version_by_alias(name, "champion").version) == candidate


def test_a_databricks_run_cancelled_from_outside_fails_the_task_and_publishes_nothing(
    demo_snapshot: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_airflow.operators.spark_job import SparkJobOperator
    from tests.support import FakeTI

    output = lake.box_uri(str(tmp_path), "churn/features", END)
    monkeypatch.setenv(lake.ROOT_ENV, str(tmp_path))
    with databricks_emulator(tmp_path / "databricks", monkeypatch, pending_seconds=2) as emulator:
        ti = FakeTI(task_id="build_features")
        operator = SparkJobOperator(
            task_id="build_features",
            job="churn-features",
            arguments=["--snapshot", demo_snapshot, "--output", output],
            backend="databricks",
            databricks_cluster={"new_cluster": {"num_workers": 1}},
            polling_period_seconds=1,
        )

        def cancel_when_submitted() -> None:
            for _ in range(600):
                if emulator.runs:  # what the Jobs API's runs/cancel does for another client
                    emulator.cancel({"run_id": next(iter(emulator.runs))})
                    return
                threading.Event().wait(0.1)

        canceller = threading.Thread(target=cancel_when_submitted)
        canceller.start()
        with pytest.raises(AirflowException) as raised:
            operator.execute({"ti": ti, "ds": END})  # type: ignore[arg-type]
        canceller.join()
    # the provider's error: the task, the terminal state and the run's state message
    assert "build_features failed with terminal state" in str(raised.value)
    assert "CANCELED" in str(raised.value) and "Run cancelled." in str(raised.value)
    (run_id,) = emulator.runs  # the error says where to look
    assert f"Run page: {emulator.url}/?o=0#job/{run_id}/run/1" in str(raised.value)
    assert not isinstance(raised.value, AirflowFailException)
    with pytest.raises(lake.LakeError):
        lake.open_box(output)
    assert_whole(tmp_path)
