"""The emulator's HTTP server: a Starlette app on uvicorn, in a thread of the caller's process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response as HttpResponse
from starlette.routing import Route

from mlops_localstack.databricks_emulator.model import ApiError, Response

#: Answers one request: method, path, query, headers (lower-case names), body.
Handler = Callable[[str, str, dict[str, str], Mapping[str, str], bytes], Response]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


def application(handle: Handler) -> Starlette:
    """Every path to ``handle`` (run in a worker thread: it may block); an ``ApiError`` is the
    API's JSON error reply."""

    async def endpoint(request: Request) -> HttpResponse:
        body = await request.body()  # Starlette reads chunked bodies too
        # blank values are absent, as for parse_qs (an endpoint's default applies)
        query = {key: values[-1] for key, values in parse_qs(request.url.query).items()}
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            # the path as sent (percent-encoded): the emulator decodes what it routes on
            path = request.scope["raw_path"].decode("latin-1").split("?", 1)[0]
            response = await run_in_threadpool(handle, request.method, path, query, headers, body)
        except ApiError as err:
            response = Response.json({"error_code": err.code, "message": err.message})
            response.status = err.status
        return HttpResponse(response.body, response.status, response.headers)

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)])


class Server:
    """``handle`` served on ``host``:``port`` (0: any free port), bound at once so the port is
    known before ``start``."""

    def __init__(self, handle: Handler, host: str, port: int) -> None:
        self.socket = socket.create_server((host, port))
        self.port = int(self.socket.getsockname()[1])
        config = uvicorn.Config(
            application(handle), log_level="warning", lifespan="off", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator's HTTP server did not start on {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.socket.close()
