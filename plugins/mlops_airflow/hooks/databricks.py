"""DBFS upload on top of the Databricks provider's ``DatabricksHook``."""

from __future__ import annotations

import base64

from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import DatabricksHook

DBFS_CREATE_ENDPOINT = ("POST", "2.0/dbfs/create")
DBFS_ADD_BLOCK_ENDPOINT = ("POST", "2.0/dbfs/add-block")
DBFS_CLOSE_ENDPOINT = ("POST", "2.0/dbfs/close")
DBFS_GET_STATUS_ENDPOINT = ("GET", "2.0/dbfs/get-status")
# DBFS add-block accepts at most 1 MB of data per call.
DBFS_BLOCK_BYTES = 1 << 20


class DatabricksJobsHook(DatabricksHook):
    """
    ``DatabricksHook`` plus the DBFS streaming upload used to ship job packages.

    Every call goes through the provider's ``_do_api_call`` and so keeps its authentication,
    retries (HTTP 429 and 5xx) and error handling.

    :param databricks_conn_id: Airflow connection to the Databricks workspace.
    """

    def dbfs_file_size(self, path: str) -> int | None:
        """Size of a DBFS file, or None when it does not exist (``2.0/dbfs/get-status``)."""
        try:
            status = self._do_api_call(DBFS_GET_STATUS_ENDPOINT, {"path": path})
        except DatabricksApiError as err:
            if err.http_status_code == 404:
                return None
            raise
        return int(status.get("file_size", 0))

    def dbfs_upload(self, path: str, data: bytes, overwrite: bool = True) -> None:
        """Upload ``data`` to ``path`` (``2.0/dbfs/create``, ``add-block``, ``close``)."""
        handle = self._do_api_call(DBFS_CREATE_ENDPOINT, {"path": path, "overwrite": overwrite})[
            "handle"
        ]
        for start in range(0, len(data), DBFS_BLOCK_BYTES):
            block = base64.b64encode(data[start : start + DBFS_BLOCK_BYTES]).decode()
            self._do_api_call(DBFS_ADD_BLOCK_ENDPOINT, {"handle": handle, "data": block})
        self._do_api_call(DBFS_CLOSE_ENDPOINT, {"handle": handle})
