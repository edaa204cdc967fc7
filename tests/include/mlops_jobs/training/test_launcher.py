"""run_worker with a stand-in worker module (no TensorFlow, no Spark)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_jobs.training.launcher import LaunchError, WorkerSpec, run_worker

WORKER = """
import argparse, json, os, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("mode")
parser.add_argument("--result-file")
args = parser.parse_args()
print("worker says hello", flush=True)
if args.mode == "fail":
    print("Traceback: it broke", file=sys.stderr)
    sys.exit(2)
if args.mode == "hang":
    time.sleep(60)
config = json.loads(os.environ["TF_CONFIG"])
with open(args.result_file, "w") as handle:
    json.dump({"worker": config["task"]["index"], "threads": os.environ["OMP_NUM_THREADS"]}, handle)
"""


def spec(tmp_path: Path, mode: str, timeout: float = 60) -> WorkerSpec:
    (tmp_path / "fake_worker.py").write_text(WORKER)
    return WorkerSpec("fake_worker", (mode,), timeout, env=(("PYTHONPATH", str(tmp_path)),))


TF_CONFIG = {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}


def test_a_worker_s_result_is_returned_and_its_output_prefixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_worker(spec(tmp_path, "ok"), TF_CONFIG, 0, 3) == {"worker": 0, "threads": "3"}
    assert "[worker 0] worker says hello" in capsys.readouterr().out


def test_a_failed_worker_is_named_with_its_exit_code_and_last_output(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as err:
        run_worker(spec(tmp_path, "fail"), TF_CONFIG, 0, 1)
    assert str(err.value) == (
        "worker 0 failed with exit code 2; last output:\nworker says hello\nTraceback: it broke"
    )


def test_a_hanging_worker_is_killed_at_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(LaunchError) as err:
        run_worker(spec(tmp_path, "hang", timeout=1), TF_CONFIG, 0, 1)
    assert str(err.value) == "worker 0 did not finish within 1 s; last output:\nworker says hello"
