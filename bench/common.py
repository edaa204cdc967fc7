"""What the benchmarks share: JSON lines on a stdout of their own."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def json_output() -> Emit:
    """Keep the process's stdout for the JSON lines alone and return the function that writes
    them; everything else written to stdout (the Airflow and pyhive loggers, a server's start
    message) goes to stderr from now on."""
    sys.stdout.flush()
    # The loggers hold on to the stdout they were configured with, so the file descriptor itself
    # is moved rather than ``sys.stdout``.
    output = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def emit(record: dict[str, Any]) -> None:
        output.write(json.dumps(record) + "\n")
        output.flush()

    return emit
