"""Start, stop and report on the local HiveServer2: Spark's Thrift server from the pyspark wheel.

The server binds to 127.0.0.1 only, keeps an embedded Derby metastore and the warehouse under
``<local root>/hive``, and writes a pid file and a log file there. ``start`` is harmless when the
server already runs; ``stop`` only signals the process recorded in the pid file, and only when
that process is our Thrift server.

Usage: ``python -m mlops_localstack.hiveserver2 start|stop|status [--timeout SECONDS]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops_jobs.process import ProcessGroup, is_running, terminate_group
from mlops_localstack.env import hiveserver2_port, local_root

THRIFT_SERVER_CLASS = "org.apache.spark.sql.hive.thriftserver.HiveThriftServer2"
DEFAULT_START_TIMEOUT = 600.0


class HiveServer2Error(RuntimeError):
    """The local HiveServer2 could not be started or stopped."""


@dataclass(frozen=True)
class HiveServer2:
    """Paths and port of one local HiveServer2 instance."""

    home: Path
    port: int
    host: str = "127.0.0.1"

    @classmethod
    def from_environment(cls) -> HiveServer2:
        return cls(home=local_root() / "hive", port=hiveserver2_port())

    @property
    def pid_file(self) -> Path:
        return self.home / "hiveserver2.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "hiveserver2.log"

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse"

    @property
    def metastore(self) -> Path:
        return self.home / "metastore_db"

    def command(self) -> list[str]:
        """The spark-submit command line that runs the Thrift server."""
        from pyspark.find_spark_home import _find_spark_home

        spark_submit = Path(_find_spark_home()) / "bin" / "spark-submit"
        conf = {
            "spark.master": "local[2]",
            "spark.app.name": f"mlops-hiveserver2-{self.port}",
            "spark.ui.enabled": "false",
            "spark.driver.memory": "2g",
            "spark.sql.shuffle.partitions": "4",
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.warehouse.dir": self.warehouse.as_uri(),
            "spark.sql.hive.convertMetastoreParquet": "true",
            "spark.hadoop.javax.jdo.option.ConnectionURL": (
                f"jdbc:derby:;databaseName={self.metastore};create=true"
            ),
            "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
            "spark.hadoop.hive.metastore.schema.verification": "false",
            "spark.hadoop.hive.exec.scratchdir": str(self.home / "scratch"),
            "spark.hadoop.hive.exec.local.scratchdir": str(self.home / "scratch-local"),
            "spark.hadoop.hive.downloaded.resources.dir": str(self.home / "resources"),
            "spark.driver.extraJavaOptions": (
                f"-Dderby.system.home={self.home} -Djava.io.tmpdir={self.home / 'tmp'}"
            ),
        }
        command = [str(spark_submit), "--class", THRIFT_SERVER_CLASS]
        for key, value in conf.items():
            command += ["--conf", f"{key}={value}"]
        command.append("spark-internal")
        hiveconf = {
            "hive.server2.thrift.bind.host": self.host,
            "hive.server2.thrift.port": str(self.port),
            "hive.server2.transport.mode": "binary",
            "hive.server2.authentication": "NONE",
            "hive.exec.dynamic.partition.mode": "nonstrict",
        }
        for key, value in hiveconf.items():
            command += ["--hiveconf", f"{key}={value}"]
        return command

    def pid(self) -> int | None:
        """Pid of our running Thrift server, or None."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            return None
        if THRIFT_SERVER_CLASS not in cmdline or str(self.metastore) not in cmdline:
            return None
        return pid

    def port_open(self) -> bool:
        with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.settimeout(1.0)
            return sock.connect_ex((self.host, self.port)) == 0

    def ping(self) -> None:
        """Run ``SELECT 1``; the first statement of a fresh server also creates the metastore."""
        from pyhive import hive

        with (
            contextlib.closing(
                hive.connect(host=self.host, port=self.port, auth="NONE", username="mlops")
            ) as conn,
            contextlib.closing(conn.cursor()) as cursor,
        ):
            cursor.execute("SELECT 1")
            cursor.fetchall()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log file)"

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> int:
        """Start the server unless it runs; wait until it answers a query. Return its pid."""
        pid = self.pid()
        if pid is None:
            if self.port_open():
                raise HiveServer2Error(
                    f"port {self.host}:{self.port} is taken by another process; "
                    "set HIVESERVER2_PORT to use another port"
                )
            for sub in ("warehouse", "scratch", "scratch-local", "resources", "tmp"):
                (self.home / sub).mkdir(parents=True, exist_ok=True)
            # Spark binds its driver to the host name's address unless told otherwise; loopback
            # keeps the server working where the host name does not resolve.
            env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
            with open(self.log_file, "ab") as log:
                pid = ProcessGroup(self.command(), cwd=self.home, env=env, stdout=log).pid
            self.pid_file.write_text(f"{pid}\n")
            print(
                f"HiveServer2 starting on {self.host}:{self.port} (pid {pid}, log {self.log_file})"
            )
        self._wait_ready(pid, timeout)
        return pid

    def _wait_ready(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.port_open():
            if not is_running(pid):
                raise HiveServer2Error(
                    f"HiveServer2 (pid {pid}) exited before opening port {self.port}; "
                    f"log tail:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise HiveServer2Error(
                    f"HiveServer2 did not open port {self.port} within {timeout:.0f} s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(1.0)
        # One query with the whole remaining budget: reconnecting while the first statement still
        # initialises the metastore only queues more work behind it.
        from thrift.transport.TTransport import TTransportException

        while True:
            error = self._ping_within(max(1.0, deadline - time.monotonic()))
            if error is None:
                return
            if not isinstance(error, (TTransportException, OSError, EOFError, TimeoutError)):
                raise HiveServer2Error(
                    f"HiveServer2 on port {self.port} failed its first query ({error}); "
                    f"log tail:\n{self.log_tail()}"
                ) from error
            if time.monotonic() > deadline:
                raise HiveServer2Error(
                    f"HiveServer2 on port {self.port} did not answer within {timeout:.0f} s "
                    f"({error!r}); log tail:\n{self.log_tail()}"
                ) from error
            time.sleep(2.0)

    def _ping_within(self, seconds: float) -> BaseException | None:
        """Run ``ping`` but give up waiting after ``seconds`` (the client has no timeout)."""
        outcome: list[BaseException | None] = []

        def target() -> None:
            try:
                self.ping()
                outcome.append(None)
            except BaseException as err:
                outcome.append(err)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        thread.join(seconds)
        if not outcome:
            return TimeoutError(f"no answer to SELECT 1 within {seconds:.0f} s")
        return outcome[0]

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop our server if it runs (SIGTERM to its process group, then SIGKILL)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate_group(pid, grace=timeout)
        self.pid_file.unlink(missing_ok=True)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hiveserver2", description=__doc__)
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    args = parser.parse_args(argv)
    server = HiveServer2.from_environment()
    if args.action == "start":
        try:
            pid = server.start(timeout=args.timeout)
        except HiveServer2Error as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"HiveServer2 ready on {server.host}:{server.port} (pid {pid})")
    elif args.action == "stop":
        print("HiveServer2 stopped" if server.stop() else "HiveServer2 was not running")
    else:
        running = server.pid()
        if running is None:
            print(f"HiveServer2 not running (port {server.port})")
            return 3
        state = "ready" if server.port_open() else "starting"
        print(f"HiveServer2 {state} on {server.host}:{server.port} (pid {running})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
