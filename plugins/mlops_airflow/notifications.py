"""Alerts for failed tasks and late runs, by e-mail through an Airflow connection.

Deployments turn alerts on by defining the SMTP connection ``mlops_alerts`` (host, port, login,
password; its extra gives ``to`` and, unless the connection sets it, ``from_email``). Without
that connection nothing is sent: the local stack stays quiet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.notifier import BaseNotifier

if TYPE_CHECKING:
    from airflow.sdk import Context

ALERTS_CONN_ID = "mlops_alerts"


class AlertNotifier(BaseNotifier):
    """
    Send an alert through the provider's ``SmtpNotifier`` when the connection ``conn_id``
    exists; otherwise log that alerts are off.

    Usable as a task or DAG callback (``on_failure_callback=AlertNotifier(...)``) and as a
    deadline alert's ``AsyncCallback`` (it is awaitable; the e-mail is sent off the event loop).

    :param subject: The e-mail's subject. (templated)
    :param message: Its HTML body; default the provider's template (task, run, try, log link).
        (templated)
    :param conn_id: The SMTP connection; its extra holds ``to`` (an address or a list).
    """

    template_fields: Sequence[str] = ("subject", "message")

    def __init__(
        self,
        subject: str,
        message: str | None = None,
        conn_id: str = ALERTS_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.message = message
        self.conn_id = conn_id

    def recipients(self) -> tuple[list[str], str | None] | None:
        """``(to, from_email)`` from the connection, or None when it is not defined."""
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            connection = BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None
        extra = connection.extra_dejson
        to = extra.get("to")
        if not to:
            raise ValueError(f"connection {self.conn_id!r} has no 'to' address in its extra")
        return ([to] if isinstance(to, str) else list(to)), extra.get("from_email")

    def notify(self, context: Context) -> None:
        found = self.recipients()
        if found is None:
            self.log.info("Alerts are off (no connection %r): %s", self.conn_id, self.subject)
            return
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        to, from_email = found
        SmtpNotifier(
            to=to,
            from_email=from_email,
            subject=self.subject,
            html_content=self.message,
            smtp_conn_id=self.conn_id,
        ).notify(context)
        self.log.info("Alert sent to %s: %s", ", ".join(to), self.subject)

    async def async_notify(self, context: Context) -> None:
        await asyncio.to_thread(self.notify, context)


def task_failed_alert() -> AlertNotifier:
    """The alert a failed task sends (after its last try)."""
    return AlertNotifier(
        subject="[airflow] {{ ti.dag_id }}.{{ ti.task_id }} failed (run {{ run_id }}, "
        "try {{ ti.try_number }})",
        message="<p>Task <b>{{ ti.task_id }}</b> of <b>{{ ti.dag_id }}</b> failed in run "
        "{{ run_id }} (try {{ ti.try_number }}).</p><p>{{ exception | e }}</p>"
        '<p><a href="{{ ti.log_url }}">Log</a></p>',
    )


def run_failed_alert() -> AlertNotifier:
    """The alert a failed DAG run sends (a failed task, or the run's timeout)."""
    return AlertNotifier(
        subject="[airflow] {{ dag.dag_id }} run {{ run_id }} failed",
        message="<p>Run {{ run_id }} of <b>{{ dag.dag_id }}</b> failed: {{ reason | e }}.</p>",
    )
