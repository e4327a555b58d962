"""Fixtures of the fault suite: real processes (from ``tests.e2e``) and the figures report.

Every scenario appends one JSON line of figures to the file named by
``WHISTLE_FAULT_REPORT`` (else a file in pytest's temporary directory); the end of
the run prints it as a Markdown table (``python -m tests.faults.report FILE``).
"""

import os
from pathlib import Path

import pytest

from tests.e2e.conftest import whistle_env, whistle_processes  # noqa: F401 - fixtures
from tests.faults.harness import Scenario

REPORT_ENV = "WHISTLE_FAULT_REPORT"
_reports: list[tuple[Path, int]] = []  # (report, its size when this session opened it)


@pytest.fixture(scope="session")
def fault_report(tmp_path_factory) -> Path:
    path = Path(os.environ.get(REPORT_ENV) or tmp_path_factory.mktemp("faults") / "report.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    _reports.append((path, path.stat().st_size if path.exists() else 0))
    return path


@pytest.fixture
def scenario(request, fault_report):
    """``scenario("1. …")`` starts the clock of a scenario; ``.conclude()`` records it."""
    def start(name: str) -> Scenario:
        return Scenario(name, fault_report, request.node.nodeid)

    return start


def pytest_terminal_summary(terminalreporter):
    from tests.faults.report import render

    for path, offset in _reports:
        if path.exists():
            with path.open("rb") as report:
                report.seek(offset)
                lines = report.read().decode("utf-8").splitlines()
            terminalreporter.write_sep("-", f"fault figures ({path})")
            terminalreporter.write_line(render(lines))
