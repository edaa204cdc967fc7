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
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlops_airflow.exceptions import HiveServerUnavailableError, SparkJobError
from mlops_airflow.operators.hive_extract import HiveExtractOperator
from mlops_airflow.operators.train_model import TrainModelOperator
from mlops_jobs import lake
from mlops_jobs.churn.tables import CHURN_SOURCES
from mlops_jobs.process import ProcessGroup
from tests.conftest import DEMO, LOOKBACK_DAYS, TEST_PORT
from tests.support import FakeTI, databricks_emulator, register_version

pytestmark = pytest.mark.faults

END = str(DEMO["end_ds"])
DAY_BEFORE = "2026-02-28"


class Proxy:
    """A TCP proxy to a test server that can cut every connection: once a client sends a
    request containing ``cut_on``, the request is forwarded (so the server performs it) and
    both ends of that connection are closed.

    :param upstream_port: The server's port on 127.0.0.1.
    :param cut_on: Bytes of the request after which to cut; None cuts nothing.
    :param lose_response: Cut when the server answers that request, not once it has passed:
        the request is whole and performed, and the client never hears the outcome.
    :param once: Cut only the first such request; the ones after it pass.
    :param then_down: From the cut on, refuse every connection, as a server that went away.
    """

    def __init__(
        self,
        upstream_port: int,
        cut_on: bytes | None = None,
        *,
        lose_response: bool = False,
        once: bool = False,
        then_down: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_on = cut_on
        self.lose_response = lose_response
        self.once = once
        self.then_down = then_down
        self.cut = threading.Event()
        self.down = threading.Event()
        self.matched = 0  # requests that carried cut_on
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self.sockets += [client, upstream]
            answering = threading.Event()  # the request to cut has passed on this connection
            for pump in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(*pump, answering), daemon=True).start()

    def _pump(
        self,
        source: socket.socket,
        target: socket.socket,
        requests: bool,
        answering: threading.Event,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not requests and answering.is_set():
                    self._cut(source, target)
                    return
                to_cut = requests and self._cuts(data)
                if to_cut:
                    answering.set()  # before the server can answer
                if self.down.is_set():
                    break
                target.sendall(data)
                if to_cut and not self.lose_response:
                    self._cut(source, target)
                    return
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_RDWR)

    def _cuts(self, data: bytes) -> bool:
        if self.cut_on is None or self.cut_on not in data:
            return False
        self.matched += 1
        return not (self.once and self.cut.is_set())

    def _cut(self, *ends: socket.socket) -> None:
        self.cut.set()
        if self.then_down:
            self.close()  # every connection, before the client hears of the cut and resends
            return
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.down.set()
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes accept(): new connections refused
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
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


@dataclass
class MlflowServer:
    """A real MLflow tracking server and registry (``mlflow server``) on a store of its own."""

    port: int
    root: Path
    process: ProcessGroup

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=5),
            ):
                return
            log = (self.root / "server.log").read_text(errors="replace")
            assert self.process.poll() is None, f"mlflow server exited:\n{log[-3000:]}"
            assert time.monotonic() < deadline, f"mlflow server did not answer:\n{log[-3000:]}"
            time.sleep(0.5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Started here, ready once ``wait_ready`` returns (it starts while the features build)."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    with open(root / "server.log", "wb") as log:
        process = ProcessGroup(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--default-artifact-root", str(root / "artifacts"), "--workers", "1"],
            stdout=log,
        )  # fmt: skip
    try:
        yield MlflowServer(port, root, process)
    finally:
        process.terminate(grace=10)


def train_through(
    mlflow_url: str, features: str, ti: FakeTI, model_name: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """One try of the training task (one worker, one epoch) with MLflow at ``mlflow_url``."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
    operator = TrainModelOperator(
        task_id=ti.task_id,
        features=features,
        workers=1,
        epochs=1,
        model_name=model_name,
        backend="local",
        worker_timeout_seconds=300,
    )
    return operator.execute({"ti": ti, "ds": END})  # type: ignore[arg-type]


def assert_one_complete_version(
    registry: Any, model_name: str, ti: FakeTI, version: str, try_number: int
) -> None:
    """``version`` is the only version of ``model_name`` (whose runs all trained on the same
    inputs) and is whole: READY, tagged as the candidate of the try that registered it, its
    run FINISHED with the input key a later run reuses it by; no alias points at anything."""
    from mlops_jobs.churn.train import INPUT_KEY_TAG
    from mlops_jobs.training import tracking

    assert [v.version for v in registry.search_model_versions(f"name = '{model_name}'")] == [
        version
    ]
    registered = registry.get_model_version(model_name, version)
    assert registered.status == "READY"
    assert registered.tags == {
        **tracking.instance_tags(ti.dag_id, ti.run_id, ti.task_id, ti.map_index),
        tracking.TRY_TAG: str(try_number),
        "role": "candidate",
    }
    run = registry.get_run(registered.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[INPUT_KEY_TAG] and run.data.tags["role"] == "training"
    assert registry.get_registered_model(model_name).aliases == {}


REGISTRATION = b"POST /api/2.0/mlflow/model-versions/create "


@pytest.fixture
def registration(
    mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, str, FakeTI]:
    """The registry's client, a registered model name of the test's own (so nothing trained
    by another test is reused) and the training task instance; the job's MLflow client
    retries quickly."""
    import mlflow

    mlflow_server.wait_ready()
    monkeypatch.setenv("MLOPS_MLFLOW_ARTIFACT_ROOT", str(mlflow_server.root / "artifacts"))
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    model_name = f"churn_faults_{uuid.uuid4().hex[:8]}"
    ti = FakeTI(task_id="train_model", run_id=f"manual__{model_name}")
    return mlflow.MlflowClient(tracking_uri=mlflow_server.url), model_name, ti


@pytest.mark.parametrize(
    ("store_down", "client_retries"), [(True, 2), (False, 0)], ids=["store-down", "not-resent"]
)
def test_mlflow_lost_at_registration_fails_retryably_and_the_retry_keeps_the_version(
    store_down: bool,
    client_retries: int,
    mlflow_server: MlflowServer,
    training_features: str,
    registration: tuple[Any, str, FakeTI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry creates the new version but its answer never reaches the training job,
    and the store then goes away (the client's retries are refused) or the client does not
    resend: the try fails retryably naming the request and the server, the version exists
    whole, and the next try returns it and finishes its run, registering nothing new."""
    registry, model_name, ti = registration
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(client_retries))
    proxy = Proxy(
        mlflow_server.port, REGISTRATION, lose_response=True, once=True, then_down=store_down
    )
    try:
        with pytest.raises(SparkJobError) as raised:
            train_through(proxy.url, training_features, ti, model_name, monkeypatch)
    finally:
        proxy.close()
    assert proxy.cut.is_set() and proxy.matched == 1
    assert not isinstance(raised.value, AirflowFailException)  # the store may come back
    assert "registering the model of MLflow run" in str(raised.value)
    assert f"{proxy.url}/api/2.0/mlflow/model-versions/create" in str(raised.value)
    created = registry.search_model_versions(f"name = '{model_name}'")
    assert len(created) == 1  # performed, only its answer lost
    # the store was gone when the try ended the run, or there to mark it FAILED
    ended = registry.get_run(created[0].run_id).info.status
    assert ended == ("RUNNING" if store_down else "FAILED")

    ti.try_number = 2  # the retry, with the store reachable
    result = train_through(mlflow_server.url, training_features, ti, model_name, monkeypatch)
    assert result["model_version"] == created[0].version and not result["reused"]
    assert result["mlflow_run_id"] == created[0].run_id
    assert_one_complete_version(registry, model_name, ti, created[0].version, try_number=1)


def test_a_registration_resent_after_its_answer_was_lost_keeps_the_first_version(
    mlflow_server: MlflowServer,
    training_features: str,
    registration: tuple[Any, str, FakeTI],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow's client resends a request whose answer was lost (by default, whatever the
    method), so the registry creates the version twice: the try succeeds with the first one
    and the duplicate is gone."""
    registry, model_name, ti = registration
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    proxy = Proxy(mlflow_server.port, REGISTRATION, lose_response=True, once=True)
    try:
        result = train_through(proxy.url, training_features, ti, model_name, monkeypatch)
    finally:
        proxy.close()
    assert proxy.cut.is_set() and proxy.matched == 2  # the creation was sent twice
    assert result["model_version"] == "1" and not result["reused"]
    assert_one_complete_version(registry, model_name, ti, "1", try_number=1)


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
