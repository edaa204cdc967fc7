from __future__ import annotations

from typing import Any

import pytest

from mlops_airflow.hooks.hive import HiveWarehouseHook
from mlops_jobs.hql import TableName


class Session:
    """A HiveServer2 session whose close fails as HiveServer2 fails closing sessions closed
    concurrently (the statement itself ran)."""

    def __init__(self) -> None:
        self.executed: list[str] = []

    def cursor(self) -> Any:
        session = self

        class Cursor:
            description = (("n", "int"),)

            def execute(self, sql: str) -> None:
                session.executed.append(sql)

            def fetchall(self) -> list[tuple[int]]:
                return [(3,)]

            def close(self) -> None:
                pass

        return Cursor()

    def close(self) -> None:
        raise RuntimeError("NoClassDefFoundError: org/apache/hadoop/hive/llap/security/LlapSigner")


def test_a_failed_session_close_after_the_statement_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HIVESERVER2_DEFAULT", "hiveserver2://127.0.0.1:10999/default")
    hook = HiveWarehouseHook()
    session = Session()
    monkeypatch.setattr(hook, "get_conn", lambda *args, **kwargs: session)
    assert hook.fetch_all("SELECT COUNT(*) FROM raw.events") == [(3,)]
    assert session.executed == ["SELECT COUNT(*) FROM raw.events"]
    assert "Closing the HiveServer2 session at 127.0.0.1:10999" in capsys.readouterr().out


@pytest.mark.hive
def test_statements_in_a_session_share_one_connection(
    hive_hook: HiveWarehouseHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[Any] = []
    connect = hive_hook.get_conn

    def counting(*args: Any, **kwargs: Any) -> Any:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(hive_hook, "get_conn", counting)
    events = TableName("raw", "events")
    with hive_hook.session():
        with hive_hook.session():  # a nested use shares the outer session
            assert hive_hook.table_exists(events)
        assert hive_hook.list_partitions(events)
    assert len(opened) == 1
    assert hive_hook.table_exists(events)  # outside a session: a session per statement
    assert len(opened) > 2
