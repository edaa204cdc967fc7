"""ProcessGroup and terminate_group with real child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlops_jobs
from mlops_jobs.process import ProcessGroup, ProcessTimeoutError, is_running, terminate_group

INCLUDE = str(Path(mlops_jobs.__file__).resolve().parents[1])


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def wait_for(path: Path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text().strip()


def gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_stream_hands_over_every_line_and_keeps_the_last_ones() -> None:
    group = ProcessGroup(
        python("import sys\nfor i in range(5): print(f'line {i}')\nprint('oops', file=sys.stderr)"),
        tail_lines=3,
    )
    seen: list[str] = []
    assert group.stream(seen.append) == 0
    assert seen == ["line 0", "line 1", "line 2", "line 3", "line 4", "oops"]
    assert group.tail == "line 3\nline 4\noops"


def test_stream_returns_a_nonzero_exit_code_with_the_tail() -> None:
    group = ProcessGroup(python("print('bad input'); raise SystemExit(3)"))
    assert group.stream(lambda line: None) == 3
    assert group.tail == "bad input"


def test_the_child_gets_its_environment_and_directory(tmp_path: Path) -> None:
    group = ProcessGroup(
        python("import os; print(os.environ['ONLY'], os.getcwd(), os.getsid(0) == os.getpid())"),
        env={"ONLY": "this"},
        cwd=tmp_path,
    )
    assert group.stream(lambda line: None) == 0
    assert group.tail == f"this {tmp_path} True"


def test_a_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    grandchild = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(grandchild)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    group = ProcessGroup(python(code))
    started = time.monotonic()
    with pytest.raises(ProcessTimeoutError, match=f"process {group.pid} did not finish within 1 s"):
        group.stream(lambda line: None, timeout=1)
    assert time.monotonic() - started < 10
    assert group.poll() == -signal.SIGKILL
    assert group.tail == "started"
    assert gone(int(wait_for(grandchild)))


def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').write('yes')\n"
        "time.sleep(60)\n"
    )
    group = ProcessGroup(python(code), stdout=subprocess.DEVNULL)
    wait_for(ready)
    started = time.monotonic()
    group.terminate(grace=0.5)
    assert group.wait() == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 5


def test_terminate_stops_at_sigterm_when_the_child_obeys() -> None:
    group = ProcessGroup(python("import time; time.sleep(60)"), stdout=subprocess.DEVNULL)
    group.terminate(grace=10)
    assert group.wait() == -signal.SIGTERM
    group.terminate(grace=10)  # exited already: nothing to do


def test_terminate_group_by_pid_escalates_to_sigkill(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').write('yes')\n"
        "time.sleep(60)\n"
    )
    group = ProcessGroup(python(code), stdout=subprocess.DEVNULL)
    wait_for(ready)
    started = time.monotonic()
    terminate_group(group.pid, grace=0.5, interval=0.05)
    assert 0.5 <= time.monotonic() - started < 5
    assert group.wait() == -signal.SIGKILL
    terminate_group(group.pid, grace=0.5)  # no such group any more: nothing to do


def test_terminate_group_by_pid_counts_a_zombie_as_gone() -> None:
    group = ProcessGroup(python("import time; time.sleep(60)"), stdout=subprocess.DEVNULL)
    started = time.monotonic()
    # Nobody waits for the child meanwhile, so it stays a zombie after SIGTERM: that must end
    # the wait long before the grace period.
    terminate_group(group.pid, grace=30, interval=0.05)
    assert time.monotonic() - started < 5
    assert Path(f"/proc/{group.pid}").exists() and not is_running(group.pid)
    assert group.wait() == -signal.SIGTERM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
def test_a_child_started_with_die_with_parent_dies_with_it() -> None:
    code = (
        "import subprocess, sys\n"
        "from mlops_jobs.process import ProcessGroup\n"
        "group = ProcessGroup([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                     stdout=subprocess.DEVNULL, die_with_parent=True)\n"
        "print(group.pid)\n"
    )
    parent = subprocess.run(
        python(code),
        env={**os.environ, "PYTHONPATH": INCLUDE},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert gone(int(parent.stdout))
