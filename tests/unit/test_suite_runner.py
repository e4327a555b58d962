"""scripts/test.sh, the runner behind `make test`, with a stand-in for pytest.

What matters is that its three pytest calls select every test exactly once (the fault
suite only in the phase that runs alone), and that a failure in any of them fails the
whole run with pytest's own status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "scripts" / "test.sh"


@pytest.fixture
def fake_pytest(tmp_path):
    """A "pytest" that writes its arguments, one call a line, and exits with the status
    ``FAIL_<shard>`` names for the call whose arguments mention that shard's folder."""
    calls = tmp_path / "calls"
    fake = tmp_path / "pytest"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {calls}
echo "collected and ran"
case "$*" in
  *--ignore=tests/unit*) exit "${{FAIL_E2E:-0}}" ;;
  *tests/unit*) exit "${{FAIL_UNIT:-0}}" ;;
  *) exit "${{FAIL_FAULTS:-0}}" ;;
esac
""")
    fake.chmod(0o755)

    def run(**fail: int) -> tuple[int, list[str], str]:
        env = {**os.environ, "PYTEST": str(fake),
               **{f"FAIL_{shard.upper()}": str(code) for shard, code in fail.items()}}
        done = subprocess.run(["bash", str(RUNNER)], env=env, capture_output=True, text=True,
                              timeout=60)
        return done.returncode, calls.read_text().splitlines(), done.stdout

    return run


def test_the_two_phases_select_every_test_once_and_the_faults_alone(fake_pytest):
    status, calls, output = fake_pytest()
    assert status == 0
    assert len(calls) == 3
    unit, e2e = sorted(calls[:2], key=lambda c: "--ignore" in c)  # side by side: any order
    assert unit == "-m not cluster and not faults tests/unit tests/integration tests/test_compose.py"
    # The other shard is everything else, so a folder added later is not left out.
    assert e2e == ("-m not cluster and not faults tests --ignore=tests/unit "
                   "--ignore=tests/integration --ignore=tests/test_compose.py")
    assert calls[2] == "-m faults and not cluster"
    # Each shard's lines are named, so the two can be told apart in CI's log.
    assert "[unit+integration] collected and ran" in output
    assert "[e2e] collected and ran" in output


@pytest.mark.parametrize("fail", [{"unit": 1}, {"e2e": 1}, {"faults": 1}, {"e2e": 5}])
def test_a_failure_in_any_call_fails_the_run_with_pytests_status(fake_pytest, fail):
    status, calls, _ = fake_pytest(**fail)
    assert status == next(iter(fail.values()))
    assert len(calls) == 3  # the later phase still ran: one run shows every failure


def test_the_first_failure_is_the_status_given(fake_pytest):
    status, _, _ = fake_pytest(unit=5, faults=1)
    assert status == 5


def test_ctrl_c_stops_both_shards_which_tear_down_and_the_faults_never_start(tmp_path):
    """A script's background commands start with SIGINT ignored: the two pytest processes
    of phase 1 kept running after a Ctrl-C, with their ``whistle up`` processes, and the
    terminal came back while they still printed."""
    calls = tmp_path / "calls"
    fake = tmp_path / "pytest"
    fake.write_text(f"""#!{sys.executable}
import sys, time
with open({str(calls)!r}, "a") as calls:
    calls.write("started " + " ".join(sys.argv[1:]) + "\\n")
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("tearing down", flush=True)
    time.sleep(0.5)  # as pytest stops its fixtures' processes
    with open({str(calls)!r}, "a") as calls:
        calls.write("stopped\\n")
    sys.exit(2)
sys.exit(0)
""")
    fake.chmod(0o755)
    # its own process group, as a terminal's foreground job: Ctrl-C goes to the group
    runner = subprocess.Popen(["bash", str(RUNNER)], env={**os.environ, "PYTEST": str(fake)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        wait_until(lambda: calls.exists() and calls.read_text().count("started") == 2,
                   timeout=20)
        os.killpg(runner.pid, signal.SIGINT)
        output, _ = runner.communicate(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    lines = calls.read_text().splitlines()
    assert runner.returncode == 130
    assert lines.count("stopped") == 2  # each shard heard it, and finished before the exit
    assert not any("faults and not cluster" in line for line in lines)  # phase 2 never ran
    assert "[e2e] tearing down" in output and "[unit+integration] tearing down" in output
    assert "== interrupted: the fault suite was not run" in output
