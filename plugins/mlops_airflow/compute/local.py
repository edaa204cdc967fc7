"""The local compute backend: ``spark-submit`` from the installed pyspark, in a process group."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mlops_jobs.process import ProcessGroup

TAIL_LINES = 40
# Variables of the worker's environment a local job keeps: the process basics, and what it
# needs to reach an object-store lake (cloud credentials, proxies, CA bundles). Connections,
# the metadata database and other secrets stay behind.
PROCESS_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME", "TZ", "USER")
PROCESS_ENVIRONMENT_PREFIXES = (
    "AWS_", "AZURE_", "GOOGLE_", "HADOOP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "SSL_CERT_",
)  # fmt: skip
DEFAULT_SPARK_CONF = {"spark.ui.enabled": "false", "spark.log.level": "WARN"}


class LocalSparkJob:
    """
    One job run with ``spark-submit`` of the installed pyspark, streaming its output.

    :param name: The Spark application's name.
    :param master: The Spark master, e.g. ``local[2]`` or ``spark://host:7077``.
    :param spark_conf: Spark settings (over ``DEFAULT_SPARK_CONF``).
    """

    def __init__(self, name: str, master: str, spark_conf: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.master = master
        self.spark_conf = dict(spark_conf or {})
        self.process: ProcessGroup | None = None

    def command(self, arguments: Sequence[str]) -> list[str]:
        """``spark-submit`` of the jobs' entry point with ``arguments``."""
        from pyspark.find_spark_home import _find_spark_home

        import mlops_jobs

        spark_submit = Path(_find_spark_home()) / "bin" / "spark-submit"
        entry = Path(mlops_jobs.__file__).resolve().parents[1] / "mlops_job.py"
        command = [str(spark_submit), "--master", self.master, "--name", self.name]
        for key, value in {**DEFAULT_SPARK_CONF, **self.spark_conf}.items():
            command += ["--conf", f"{key}={value}"]
        return [*command, str(entry), *arguments]

    @staticmethod
    def environment(settings: Mapping[str, str]) -> dict[str, str]:
        """The job's whole environment: the process basics, Python and Spark paths, and
        ``settings`` (the job settings and MLflow); nothing else of the worker's."""
        import mlops_jobs

        include = str(Path(mlops_jobs.__file__).resolve().parents[1])
        return {
            **{
                k: v
                for k, v in os.environ.items()
                if v and (k in PROCESS_ENVIRONMENT or k.startswith(PROCESS_ENVIRONMENT_PREFIXES))
            },
            "PYTHONPATH": include,
            "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable),
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYARROW_IGNORE_TIMEZONE": "1",
            # local mode needs no network name; loopback also works where the host name
            # does not resolve
            "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
            **settings,
        }

    def run(
        self, arguments: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None]
    ) -> int:
        """Run the job to its end in the whole environment ``env`` (see ``environment``), each
        output line to ``on_line``; its exit code."""
        self.process = ProcessGroup(self.command(arguments), env=env, tail_lines=TAIL_LINES)
        return self.process.stream(on_line)

    @property
    def tail(self) -> str:
        """The job's last output lines."""
        return "" if self.process is None else self.process.tail

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self, grace: float = 30) -> None:
        """Stop the job's whole process group (SIGTERM, ``grace`` seconds, SIGKILL)."""
        if self.process is not None:
            self.process.terminate(grace=grace)
