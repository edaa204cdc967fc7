"""Child processes in a session of their own: start, stream the output with a tail, stop.

A child started by ``ProcessGroup`` leads a new session, so it and everything it starts form one
process group, which ``terminate`` (or a ``stream`` timeout) stops as a whole: SIGTERM, a grace
period, then SIGKILL. ``terminate_group`` does the same for a group known only by its leader's
pid, e.g. from a pid file.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import psutil
from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

PR_SET_PDEATHSIG = 1
DEFAULT_TAIL_LINES = 40


class ProcessTimeoutError(TimeoutError):
    """``ProcessGroup.stream`` reached its timeout; the group has been killed."""


class ProcessGroup:
    """
    A running command in a session (and so a process group) of its own.

    :param command: The program and its arguments.
    :param env: The child's whole environment; default the parent's.
    :param cwd: The child's working directory; default the parent's.
    :param stdout: Where the output goes (a file or file descriptor); default a pipe that
        ``stream`` reads.
    :param stderr: Where the error output goes; default the same place as ``stdout``.
    :param die_with_parent: The child gets SIGKILL when the thread that started it exits
        (Linux ``PR_SET_PDEATHSIG``; elsewhere the child outlives it).
    :param tail_lines: How many of the last output lines ``tail`` keeps.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        stdout: IO[Any] | int | None = None,
        stderr: IO[Any] | int | None = None,
        die_with_parent: bool = False,
        tail_lines: int = DEFAULT_TAIL_LINES,
    ) -> None:
        self._lines: deque[str] = deque(maxlen=tail_lines)
        self._timed_out = False
        self.process = subprocess.Popen(
            list(command),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.STDOUT if stderr is None else stderr,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
            preexec_fn=_parent_death_signal() if die_with_parent else None,
        )

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process group's id."""
        return self.process.pid

    @property
    def tail(self) -> str:
        """The last ``tail_lines`` lines ``stream`` has read, joined by newlines."""
        return "\n".join(self._lines)

    def poll(self) -> int | None:
        """The child's exit code, or None while it runs."""
        return self.process.poll()

    def wait(self) -> int:
        """Wait for the child to exit; return its exit code (negative: killed by a signal)."""
        return self.process.wait()

    def stream(self, on_line: Callable[[str], None], timeout: float | None = None) -> int:
        """
        Read the output line by line until it ends, then wait for the child.

        :param on_line: Called with each line (without its newline), in the calling thread.
        :param timeout: Seconds the child may run; then its group is killed (SIGKILL) and
            ``ProcessTimeoutError`` raised.
        :return: The child's exit code (negative: killed by a signal).
        """
        if self.process.stdout is None:
            raise ValueError("stream needs the output as a pipe (stdout=None)")
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._expire)
            timer.daemon = True
            timer.start()
        try:
            for line in self.process.stdout:
                line = line.rstrip("\n")
                self._lines.append(line)
                on_line(line)
            returncode = self.process.wait()
        except BaseException:
            # Whoever stops reading (an error in on_line, an interrupt) leaves no group behind.
            _signal_group(self.pid, signal.SIGKILL)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self._timed_out:
            raise ProcessTimeoutError(
                f"process {self.pid} did not finish within {timeout:.0f} s; killed"
            )
        return returncode

    def terminate(self, grace: float) -> None:
        """SIGTERM to the group; SIGKILL when the child has not exited after ``grace`` seconds.
        Nothing when the child has exited already."""
        if self.process.poll() is not None:
            return

        def exited(seconds: float) -> bool:
            try:
                self.process.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True

        _terminate(self.pid, grace, exited)

    def _expire(self) -> None:
        # The whole group, even when its leader has exited: a descendant still holding the
        # output pipe open would keep ``stream`` reading past the timeout.
        self._timed_out = True
        _signal_group(self.pid, signal.SIGKILL)


def terminate_group(pid: int, grace: float, interval: float = 0.5) -> None:
    """
    Stop the process group led by ``pid`` (a child of another process, e.g. from a pid file):
    SIGTERM, then SIGKILL when the leader still runs after ``grace`` seconds.

    :param pid: The group leader's pid (the group's id).
    :param grace: Seconds the group has to exit after SIGTERM.
    :param interval: Seconds between checks whether the leader has exited.
    """

    def exited(seconds: float) -> bool:
        # polled: the leader is another process's child, so this one cannot wait for it
        still_running = Retrying(
            retry=retry_if_result(bool),
            stop=stop_after_delay(seconds),
            wait=wait_fixed(interval),
            retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
        )
        return not still_running(is_running, pid)

    _terminate(pid, grace, exited)


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a zombie has exited; only its
    parent's wait is missing, which may never come)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _terminate(pgid: int, grace: float, exited: Callable[[float], bool]) -> None:
    _signal_group(pgid, signal.SIGTERM)
    if not exited(grace):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def _parent_death_signal() -> Callable[[], None] | None:
    """What the child runs before exec to get SIGKILL when its parent thread exits."""
    try:
        # Loaded here, in the parent: loading a library in the forked child of a threaded
        # process can deadlock.
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None

    def set_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_signal
