"""Test session setup: an isolated local stack under ``.local/test`` and a test HiveServer2.

The environment is set before anything imports Airflow, so the tests never touch the developer's
own ``.local`` state (Airflow database, lake, Hive warehouse). The test HiveServer2 listens on its
own port (``MLOPS_TEST_HIVESERVER2_PORT``, default 10001) so it can run beside ``make run``'s.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# ``MLOPS_TEST_ROOT`` moves the stores elsewhere (a suite run inside a test, such as the smoke
# size of bench/reliability.py, must not touch the outer session's).
TEST_ROOT = Path(os.environ.get("MLOPS_TEST_ROOT") or PROJECT_ROOT / ".local" / "test")
TEST_PORT = int(os.environ.get("MLOPS_TEST_HIVESERVER2_PORT", "10001"))
HIVE_START_TIMEOUT = float(os.environ.get("MLOPS_TEST_HIVE_START_TIMEOUT", "900"))

os.environ.update(
    {
        "MLOPS_LOCAL_ROOT": str(TEST_ROOT),
        "MLOPS_LAKE_ROOT": str(TEST_ROOT / "lake"),
        "HIVESERVER2_PORT": str(TEST_PORT),
        "AIRFLOW_HOME": str(TEST_ROOT / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{TEST_ROOT / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(TEST_ROOT / "airflow" / "logs"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        # tf-keras models load only when TensorFlow is imported with legacy Keras.
        "TF_USE_LEGACY_KERAS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{TEST_ROOT / 'mlflow' / 'mlflow.db'}",
        "MLOPS_MLFLOW_ARTIFACT_ROOT": str(TEST_ROOT / "mlflow" / "artifacts"),
        "AIRFLOW_CONN_HIVESERVER2_DEFAULT": (
            f"hiveserver2://127.0.0.1:{TEST_PORT}/default?auth_mechanism=NONE"
        ),
        # Spark's Python workers (in-process sessions) run this interpreter and import the jobs.
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT_ROOT / "include"), os.environ.get("PYTHONPATH")])
        ),
    }
)
AIRFLOW_DB = TEST_ROOT / "airflow" / "airflow.db"

# The demo warehouse every Hive test reads: small, and fixed so expectations are stable.
DEMO = {"customers": 150, "days": 100, "end_ds": "2026-03-01", "seed": 11}
LOOKBACK_DAYS = 14


_LAST_HIVE_TEST: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def fresh_stores() -> None:
    """Every session that runs tests starts from empty stores, so no test depends on what an
    earlier session left (collecting alone changes nothing). The Airflow database is copied
    from a migrated template (``airflow_db``): migrating takes a while, a copy does not."""
    for store in ("mlflow", "lake"):
        shutil.rmtree(TEST_ROOT / store, ignore_errors=True)
    AIRFLOW_DB.unlink(missing_ok=True)
    (TEST_ROOT / "airflow").mkdir(parents=True, exist_ok=True)
    (TEST_ROOT / "mlflow").mkdir(parents=True, exist_ok=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that need HiveServer2 first, so the server can stop right after them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("hive") else 1)
    hive = [item.nodeid for item in items if item.get_closest_marker("hive")]
    _LAST_HIVE_TEST[:] = hive[-1:]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the test HiveServer2 (a 2 GB JVM) once no later test needs it."""
    if _LAST_HIVE_TEST and item.nodeid == _LAST_HIVE_TEST[0]:
        from mlops_localstack.hiveserver2 import HiveServer2

        HiveServer2(home=TEST_ROOT / "hive", port=TEST_PORT).stop()


@pytest.fixture(scope="session")
def hiveserver2() -> Iterator[object]:
    from mlops_localstack.hiveserver2 import HiveServer2

    server = HiveServer2(home=TEST_ROOT / "hive", port=TEST_PORT)
    server.stop()
    # A fresh metastore each session: tests create and drop tables freely.
    shutil.rmtree(server.home, ignore_errors=True)
    server.home.mkdir(parents=True)
    server.start(timeout=HIVE_START_TIMEOUT)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def demo_warehouse(hiveserver2: object) -> dict[str, object]:
    """The demo tables loaded once per session; returns the generator's summary."""
    from mlops_localstack.demo.generator import DemoSpec
    from mlops_localstack.demo.warehouse import load_warehouse

    spec = DemoSpec(**DEMO)  # type: ignore[arg-type]
    summary = load_warehouse(spec, "127.0.0.1", TEST_PORT, TEST_ROOT)
    return {"spec": spec, **summary}


@pytest.fixture
def lake_root(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    root.mkdir()
    return root


SNAPSHOT_SPEC = {"customers": 150, "days": 100, "end_ds": "2026-03-01", "seed": 5}


@pytest.fixture(scope="session")
def demo_snapshot(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small published snapshot (no HiveServer2 needed) for the feature job tests."""
    from mlops_localstack.demo.generator import DemoSpec
    from tests.support import write_demo_snapshot

    root = tmp_path_factory.mktemp("snapshot-lake")
    return write_demo_snapshot(root, DemoSpec(**SNAPSHOT_SPEC))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """A fresh test Airflow metadata database (for ``dag.test()``): a copy of an empty database
    migrated once per set of installed Airflow distributions (core and providers, which may
    bring tables of their own) and kept as a template."""
    import hashlib
    import subprocess
    from importlib.metadata import distributions

    installed = sorted(
        f"{name}=={d.version}"
        for d in distributions()
        if (name := (d.metadata["Name"] or "").lower()).startswith("apache-airflow")
    )
    key = hashlib.sha256("\n".join(installed).encode()).hexdigest()[:16]
    template = TEST_ROOT / f"airflow-{key}-migrated.db"
    if not template.exists():
        for stale in TEST_ROOT.glob("airflow-*-migrated.db"):
            stale.unlink()
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        partial = template.with_suffix(".partial")
        shutil.copyfile(AIRFLOW_DB, partial)
        partial.rename(template)
    else:
        shutil.copyfile(template, AIRFLOW_DB)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One small local SparkSession for the tests that run Spark in-process (transforms, the
    feature jobs' entry points); its JVM ends with the session."""
    from mlops_jobs.spark.session import get_spark

    session = get_spark(
        "tests", {"spark.sql.shuffle.partitions": "2", "spark.default.parallelism": "2"}
    )
    yield session
    session.stop()
    gateway = session.sparkContext._gateway  # type: ignore[attr-defined]
    if gateway is not None:
        gateway.shutdown()


TRAINING_SPEC = {"customers": 3000, "days": 100, "end_ds": "2026-03-01", "seed": 21}


@pytest.fixture(scope="session")
def training_features(spark: object, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A published feature set big enough for a clear training signal, built once by the
    feature job's own entry point in this process (the training tests read it, never write)."""
    from mlops_jobs import lake
    from mlops_jobs.churn import features
    from mlops_localstack.demo.generator import DemoSpec
    from tests.support import write_demo_snapshot

    root = tmp_path_factory.mktemp("training-lake")
    spec = DemoSpec(**TRAINING_SPEC)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(lake.ROOT_ENV, str(root))
        snapshot = write_demo_snapshot(root, spec)
        published = features.run(snapshot, lake.box_uri(str(root), "churn/features", spec.end_ds))
    return str(published["uri"])
