"""Run the fault-injection and hostile-input suites and summarise them as one JSON object.

Runs ``pytest -m "faults or hostile"`` (the test suite's own isolated stores, its HiveServer2
and Databricks emulator) with a plugin that records each case's outcome, then audits every lake
the cases wrote (``lake.audit`` over the run's temporary directories and the session's lake):
any box a reader would see half-written, or whose files no longer match its content hash,
counts as lost or half-written.

Prints one JSON object: faults injected and survived as specified (cases of ``faults``), bad
inputs tried and refused (cases of ``hostile``), the count of anything lost or half-written
(must be 0), drafts left behind (invisible to readers), committed versions whose content hash
an earlier method computed (not checked), and the cases that failed.

Usage: ``python bench/reliability.py [pytest arguments]``
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "include")]


class Outcomes:
    """A pytest plugin recording each case's markers and outcome."""

    def __init__(self) -> None:
        self.markers: dict[str, set[str]] = {}
        self.failed: set[str] = set()
        self.passed: set[str] = set()
        self.skipped: set[str] = set()

    def pytest_collection_finish(self, session: Any) -> None:
        # after -m, -k and --deselect: only the cases that run
        for item in session.items:
            self.markers[item.nodeid] = {m.name for m in item.iter_markers()}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            self.failed.add(report.nodeid)
        elif report.skipped:
            self.skipped.add(report.nodeid)
        elif report.when == "call":
            self.passed.add(report.nodeid)

    def cases(self, marker: str) -> list[str]:
        return sorted(n for n, marks in self.markers.items() if marker in marks)

    def survived(self, cases: list[str]) -> int:
        """Cases that passed in every phase (a failed teardown is a failure)."""
        return sum(n in self.passed and n not in self.failed for n in cases)


def main(argv: list[str]) -> int:
    import pytest

    from mlops_jobs import lake

    started = time.monotonic()
    outcomes = Outcomes()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        base = Path(tmp) / "pytest"
        code = pytest.main(
            [
                str(ROOT / "tests"),
                "-m",
                "faults or hostile",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--basetemp={base}",
                "--rootdir",
                str(ROOT),
                *argv,
            ],
            plugins=[outcomes],
        )
        session_lake = Path(os.environ.get("MLOPS_LAKE_ROOT", ROOT / ".local" / "test" / "lake"))
        # every temporary directory of the run (each test's lakes) and the session's lake
        audited = [d for d in (base, session_lake) if d.exists()]
        problems: list[str] = []
        drafts = unverified = 0
        for root in audited:
            report = lake.audit(lake.normalize(root))
            problems += report.problems
            drafts += len(report.drafts)
            unverified += len(report.unverified)
    faults, hostile = outcomes.cases("faults"), outcomes.cases("hostile")
    summary = {
        "benchmark": "reliability",
        "faults_injected": len(faults),
        "faults_survived_as_specified": outcomes.survived(faults),
        "bad_inputs_tried": len(hostile),
        "bad_inputs_refused": outcomes.survived(hostile),
        "lost_or_half_written": len(problems),
        "drafts_left": drafts,
        "versions_hashed_by_an_earlier_method": unverified,
        "lakes_audited": len(audited),
        "skipped": sorted(outcomes.skipped),
        "failed": sorted(outcomes.failed),
        "problems": problems,
        "pytest_exit_code": int(code),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0 if code == 0 and not problems else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
