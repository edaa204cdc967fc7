"""Job package upload (Unity Catalog volume or DBFS) on top of the provider's ``DatabricksHook``."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.databricks.exceptions import DatabricksApiError
from airflow.providers.databricks.hooks.databricks import DatabricksHook

from mlops_airflow.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

DBFS_CREATE_ENDPOINT = ("POST", "2.0/dbfs/create")
DBFS_ADD_BLOCK_ENDPOINT = ("POST", "2.0/dbfs/add-block")
DBFS_CLOSE_ENDPOINT = ("POST", "2.0/dbfs/close")
DBFS_GET_STATUS_ENDPOINT = ("GET", "2.0/dbfs/get-status")
# DBFS add-block accepts at most 1 MB of data per call.
DBFS_BLOCK_BYTES = 1 << 20
WHEEL_DIR_SETTING = "mlops_databricks_wheel_dir"
T = TypeVar("T")
VOLUME_PATH = re.compile(r"^/Volumes/[^/]+/[^/]+/[^/]+(/.*)?$")


class DatabricksJobsHook(DatabricksHook):
    """
    ``DatabricksHook`` plus the upload of job packages to a Unity Catalog volume or DBFS.

    DBFS calls go through the provider's ``_do_api_call`` and so keep its authentication, retries
    (HTTP 429 and 5xx) and error handling. The Files API needs ``PUT`` with a raw body and
    ``HEAD``, which ``_do_api_call`` cannot send, so volumes go through databricks-sdk's
    ``WorkspaceClient.files``; its host and credentials still come from this hook's connection
    (every authentication mode of the provider), and the SDK retries 429 and 503 itself.

    :param databricks_conn_id: Airflow connection to the Databricks workspace.
    """

    def upload_job_package(self, wheel: Path, wheel_dir: str) -> str:
        """
        Upload ``wheel`` into ``wheel_dir`` unless a file of that name and size is there already.

        Job wheel names are content-versioned, so the same name and size means the same bytes.

        :param wheel: The local wheel file.
        :param wheel_dir: ``/Volumes/<catalog>/<schema>/<volume>/<folder>`` (Files API) or
            ``dbfs:/<folder>`` (DBFS API; clusters on Runtime 15+ refuse libraries on the DBFS
            root, so that is only for older runtimes or DBFS mounts).
        :return: The library path for ``libraries: [{"whl": ...}]``.
        """
        directory = wheel_dir.rstrip("/")
        target = f"{directory}/{wheel.name}"
        size = wheel.stat().st_size
        if VOLUME_PATH.match(directory):
            present = self._files_api(target, lambda: self.volume_file_size(target) == size)
        elif directory.startswith("dbfs:/"):
            present = self.dbfs_file_size(target.removeprefix("dbfs:")) == size
        else:
            raise InvalidParameterError(
                f"{WHEEL_DIR_SETTING} must be a Unity Catalog volume folder "
                "(/Volumes/<catalog>/<schema>/<volume>/<folder>) or a DBFS folder "
                f"(dbfs:/<folder>), got {wheel_dir!r}"
            )
        if present:
            self.log.info("Job package %s is already uploaded", target)
            return target
        self.log.info("Uploading job package to %s (%d bytes)", target, size)
        if directory.startswith("dbfs:/"):
            self.dbfs_upload(target.removeprefix("dbfs:"), wheel.read_bytes())
        else:
            self._files_api(target, lambda: self.volume_upload(target, wheel))
        return target

    def _files_api(self, path: str, call: Callable[[], T]) -> T:
        """``call()``; an SDK failure (after its own retries) names the workspace and path."""
        from databricks.sdk.errors import DatabricksError

        try:
            return call()
        except (DatabricksError, TimeoutError, OSError) as err:
            raise AirflowException(
                f"Files API request for {path} to {self.host} failed: {err}"
            ) from err

    @cached_property
    def workspace_client(self) -> WorkspaceClient:
        """A databricks-sdk client for this hook's workspace, authenticated by its connection."""
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config
        from databricks.sdk.credentials_provider import CredentialsProvider, credentials_strategy

        @credentials_strategy("airflow-connection", [])
        def from_connection(_: Config) -> CredentialsProvider:
            return self._auth_headers

        # auth_type: DATABRICKS_* credentials in the environment must not compete with it.
        config = Config(
            host=self._endpoint_url("").rstrip("/"),
            auth_type="airflow-connection",
            credentials_strategy=from_connection,
            http_timeout_seconds=self.timeout_seconds,
            # Bounded like the provider's own retries (the SDK's default is five minutes).
            retry_timeout_seconds=max(5, round(10 * self.retry_limit * self.retry_delay)),
        )
        return WorkspaceClient(config=config)

    def _auth_headers(self) -> dict[str, str]:
        """The headers ``_do_api_call`` authenticates with (token, else basic authentication)."""
        token = self._get_token()
        if token:
            authorization = f"Bearer {token}"
        else:
            login = self._get_connection_attr("login")
            basic = base64.b64encode(f"{login}:{self.databricks_conn.password}".encode()).decode()
            authorization = f"Basic {basic}"
        return {**self._get_aad_headers(), "Authorization": authorization}

    def volume_file_size(self, path: str) -> int | None:
        """Size of a file in a volume, or None when it does not exist (``HEAD 2.0/fs/files``)."""
        from databricks.sdk.errors import NotFound

        try:
            metadata = self.workspace_client.files.get_metadata(path)
        except NotFound:
            return None
        return metadata.content_length

    def volume_upload(self, path: str, source: Path) -> None:
        """Upload ``source`` to ``path`` in a volume, creating its folder (``PUT 2.0/fs/...``)."""
        self.workspace_client.files.create_directory(path.rsplit("/", 1)[0])
        with source.open("rb") as data:
            self.workspace_client.files.upload(path, data, overwrite=True)

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
