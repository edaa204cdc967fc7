"""Launch N TensorFlow workers as one Spark barrier stage.

Each barrier task learns every task's host from ``BarrierTaskContext``, picks a free port,
shares ``host:port`` with ``allGather``, builds ``TF_CONFIG`` and runs the worker as a child
process (a fresh interpreter, so TensorFlow never shares a process with Spark's Python worker).
The same code runs on ``local[N]`` and on any Spark cluster, Databricks included. A worker that
fails, hangs past ``timeout_seconds`` or is killed fails its task, and a barrier stage fails as a
whole; ``PR_SET_PDEATHSIG`` makes a worker die with its task.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mlops_jobs.process import ProcessGroup, ProcessTimeoutError

# Marks a worker's own error in Spark's exception text. Not written out literally where it is
# raised: the Python traceback Spark forwards shows that source line before the message.
WORKER_FAILED = "MLOPS_WORKER_FAILED"


class LaunchError(RuntimeError):
    """The distributed training stage failed; the message names the worker and its error."""


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker runs: ``python -m module *arguments`` plus environment."""

    module: str
    arguments: tuple[str, ...]
    timeout_seconds: float
    env: tuple[tuple[str, str], ...] = ()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def run_worker(
    spec: WorkerSpec, tf_config: dict[str, Any], index: int, threads: int
) -> dict[str, Any]:
    """Run one worker to completion; raise ``LaunchError`` with its output tail on failure."""
    with tempfile.TemporaryDirectory(prefix=f"tf-worker-{index}-") as tmp:
        result_file = os.path.join(tmp, "result.json")
        env = {
            **os.environ,
            **dict(spec.env),
            "TF_CONFIG": json.dumps(tf_config),
            "MLOPS_TRAIN_THREADS": str(threads),
            "OMP_NUM_THREADS": str(threads),
        }
        command = [sys.executable, "-m", spec.module, *spec.arguments, "--result-file", result_file]
        worker = ProcessGroup(command, env=env, die_with_parent=True, tail_lines=30)
        try:
            returncode = worker.stream(
                lambda line: print(f"[worker {index}] {line}", flush=True),
                timeout=spec.timeout_seconds,
            )
        except ProcessTimeoutError:
            raise LaunchError(
                f"worker {index} did not finish within {spec.timeout_seconds:.0f} s; last output:\n"
                + worker.tail
            ) from None
        if returncode != 0:
            raise LaunchError(
                f"worker {index} failed with exit code {returncode}; last output:\n" + worker.tail
            )
        with open(result_file) as handle:
            result: dict[str, Any] = json.load(handle)
        return result


def _barrier_task(spec: WorkerSpec) -> Any:
    def task(_: Iterator[Any]) -> Iterator[str]:
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        index = context.partitionId()
        infos = context.getTaskInfos()
        host = infos[index].address.rsplit(":", 1)[0]
        addresses = context.allGather(f"{host}:{free_port()}")
        hosts = [address.rsplit(":", 1)[0] for address in addresses]
        per_host = hosts.count(host)
        threads = max(1, (os.cpu_count() or 1) // per_host)
        tf_config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        try:
            result = run_worker(spec, tf_config, index, threads)
        except LaunchError as err:
            raise RuntimeError(f"{WORKER_FAILED} {err}") from None
        yield json.dumps(result)

    return task


def launch(spark: Any, workers: int, spec: WorkerSpec) -> list[dict[str, Any]]:
    """Run ``workers`` workers in one barrier stage; return their results, by worker index."""
    slots = int(spark.sparkContext.defaultParallelism)
    if workers < 1:
        raise LaunchError(f"workers must be at least 1, got {workers}")
    if workers > slots:
        raise LaunchError(
            f"{workers} workers need {workers} concurrent task slots; the cluster has {slots}"
        )
    started = time.perf_counter()
    rdd = spark.sparkContext.parallelize(range(workers), workers)
    try:
        raw = rdd.barrier().mapPartitions(_barrier_task(spec)).collect()
    except Exception as err:
        message = str(err)
        marker = message.find(f"{WORKER_FAILED} ")
        if marker >= 0:
            detail = message[marker + len(WORKER_FAILED) + 1 :]
            detail = detail.split("\n\tat ", 1)[0].split("\nJVM stacktrace", 1)[0]
            raise LaunchError(detail.strip()) from None
        raise LaunchError(f"the training stage failed: {message[:4000]}") from None
    results = sorted((json.loads(r) for r in raw), key=lambda r: int(r["worker"]))
    for result in results:
        result["launch_seconds"] = time.perf_counter() - started
    return results
