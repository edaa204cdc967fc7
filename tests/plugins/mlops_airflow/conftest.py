from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlops_airflow.hooks.hive import HiveWarehouseHook


@pytest.fixture
def hive_hook(demo_warehouse: object) -> HiveWarehouseHook:
    return HiveWarehouseHook()


@pytest.fixture
def scratch_database(hive_hook: HiveWarehouseHook) -> Iterator[str]:
    """A database for tables a test creates (bad schemas, empty partitions); dropped after."""
    name = "scratch"
    hive_hook.execute(f"CREATE DATABASE IF NOT EXISTS {name}")
    yield name
    hive_hook.execute(f"DROP DATABASE IF EXISTS {name} CASCADE")
