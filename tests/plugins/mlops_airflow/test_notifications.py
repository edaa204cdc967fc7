"""Alerts: nothing without the connection; with it, a real e-mail to an SMTP server on
loopback, through the provider's SMTP hook."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import warnings
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_airflow.notifications import AlertNotifier, task_failed_alert

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import asyncore
    import smtpd


class Sink(smtpd.SMTPServer):
    """Keeps every message it receives."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), None, decode_data=False)
        self.messages: list[tuple[list[str], Message]] = []

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    def process_message(
        self, peer: Any, mailfrom: str, rcpttos: list[str], data: Any, **kw: Any
    ) -> None:
        self.messages.append((rcpttos, message_from_bytes(data)))


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    thread = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.1}, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(timeout=5)


def alerts_connection(monkeypatch: pytest.MonkeyPatch, port: int, **extra: Any) -> None:
    connection = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 1, **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLOPS_ALERTS", json.dumps(connection))


def failed_task_context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="churn_training",
        task_id="extract_snapshot",
        try_number=2,
        log_url="http://localhost:8080/dags/churn_training/runs/r1/tasks/extract_snapshot",
    )
    return {"ti": ti, "run_id": "scheduled__2026-03-02", "exception": "raw.events: <missing>"}


def test_without_the_connection_alerts_are_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_MLOPS_ALERTS", raising=False)
    notifier = task_failed_alert()
    notifier(failed_task_context())  # what Airflow calls: renders, then notifies
    assert "Alerts are off (no connection 'mlops_alerts')" in capsys.readouterr().out


def test_a_failed_task_mails_the_connection_recipients(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    alerts_connection(
        monkeypatch, sink.port, to=["oncall@example.com"], from_email="airflow@example.com"
    )
    task_failed_alert()(failed_task_context())
    ((recipients, message),) = sink.messages
    assert recipients == ["oncall@example.com"]
    assert message["Subject"] == (
        "[airflow] churn_training.extract_snapshot failed (run scheduled__2026-03-02, try 2)"
    )
    body = str(message.get_payload(0).get_payload(decode=True), "utf-8")  # type: ignore[union-attr]
    assert "raw.events: &lt;missing&gt;" in body  # escaped
    assert "/dags/churn_training/runs/r1/tasks/extract_snapshot" in body


def test_a_deadline_alert_is_awaited_in_the_triggerer(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the triggerer's callback trigger does with a deadline's callback: build the
    notifier with its kwargs and the context, and await it."""
    alerts_connection(monkeypatch, sink.port, to="oncall@example.com", from_email="a@example.com")

    async def missed() -> None:
        await AlertNotifier(subject="[airflow] churn_training is late", context={})

    asyncio.run(missed())
    ((_, message),) = sink.messages
    assert message["Subject"] == "[airflow] churn_training is late"


def test_a_connection_without_recipients_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        alerts_connection(monkeypatch, sock.getsockname()[1])
    with pytest.raises(ValueError, match="connection 'mlops_alerts' has no 'to'"):
        AlertNotifier(subject="x").notify({})  # type: ignore[arg-type]
