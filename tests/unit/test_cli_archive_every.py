"""``whistle archive --every S`` runs until it is stopped: Ctrl-C or SIGTERM end it with a
line saying so, exit 0, the archive's pool closed (no backend: both are stand-ins)."""

import os
import signal
from types import SimpleNamespace

import pytest

from tests.support.cli import run
from tests.support.lost_signals import raised_in_a_weakref_callback


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm", "sigterm-lost"])
def test_archive_every_stops_cleanly_on_ctrl_c_or_sigterm(monkeypatch, stop):
    closed, passes = [], []

    class Archiver:
        def __init__(self, *args, **kwargs):
            pass

        def run_until_idle(self, now):
            passes.append(now)
            if len(passes) == 2:
                if stop == "ctrl-c":
                    raise KeyboardInterrupt
                if stop == "sigterm-lost":  # its KeyboardInterrupt only printed
                    handler = signal.getsignal(signal.SIGTERM)
                    assert raised_in_a_weakref_callback(
                        monkeypatch, lambda: handler(signal.SIGTERM, None)) == [KeyboardInterrupt]
                else:
                    os.kill(os.getpid(), signal.SIGTERM)
            assert len(passes) <= 2, "went on archiving after its SIGTERM"
            return SimpleNamespace(archived=[], changed=[], busy=0)

    store = SimpleNamespace(archive=SimpleNamespace(close=lambda: closed.append(True)))
    monkeypatch.setattr("services.intake.archiver.Archiver", Archiver)
    monkeypatch.setattr("whistle.db_cli._store", lambda config: store)
    before = signal.getsignal(signal.SIGTERM)
    # it said "Aborted!" and exited 1, as for a backend that failed; SIGTERM ended it unsaid
    result = run("archive", "--every", "0.01", "--retention", "0")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "whistle archive: stopped"
    assert closed == [True] and len(passes) == 2
    assert signal.getsignal(signal.SIGTERM) is before
