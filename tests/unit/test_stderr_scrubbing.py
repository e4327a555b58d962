"""What reaches a service process's stderr outside the log lines is scrubbed too.

eventlet's hub prints an exception escaping a green thread with
``traceback.print_exception`` to ``sys.stderr``, as Python prints an uncaught one; the
log lines' scrubber never saw that text (``shared.logging.ScrubbedStderr``).
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared import logging as whistle_logging
from shared.logging import ScrubbedStderr, configure_logging, get_logger, scrub_stderr
from shared.privacy import scrub_text

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJXSC0xIn0.c2lnbmF0dXJl"
LINK = f"http://x/issues/1?token={TOKEN}"


def run_python(script: Path, code: str) -> subprocess.CompletedProcess:
    """``code``, written to ``script`` (a traceback shows a file's source lines), in a
    fresh interpreter: its stderr a pipe, not pytest's capture; the worktree's code."""
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_phone_written_in_pieces_is_masked_once_its_line_ends():
    out = io.StringIO()
    stream = ScrubbedStderr(out)
    assert stream.write("call 139") == len("call 139")
    stream.write("1234")
    assert out.getvalue() == ""  # held until the line ends
    stream.write("5678 now\nand ")
    assert out.getvalue() == "call 139****5678 now\n"
    stream.writelines([LINK, "\n"])
    assert out.getvalue().endswith("and http://x/issues/1?token=[redacted]\n")
    stream.write("no line end 13700009999")
    stream.flush()  # what is held is written, masked
    assert out.getvalue().endswith("\nno line end 137****9999")


def test_our_own_log_lines_are_not_searched_twice(monkeypatch):
    # A log line is scrubbed already: it goes to the stream the wrapper wraps.
    own = io.StringIO()
    previous = whistle_logging._configured_format
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sys, "stderr", own)
            patch.setattr(sys, "__stderr__", own)
            whistle_logging._configured_format = None
            configure_logging("json")
            wrapper = sys.stderr
            searched = []
            patch.setattr(whistle_logging, "scrub_text",
                          lambda text: searched.append(text) or scrub_text(text))
            wrapper.write("held 13700009999 ")
            get_logger("whistle.test").info("logged", note="13600001111")
            wrapper.write("and written\n")
    finally:
        whistle_logging._configured_format = None
        configure_logging(previous or "console")
    assert isinstance(wrapper, ScrubbedStderr) and wrapper.stream is own
    [line, rest] = own.getvalue().splitlines()
    assert json.loads(line)["note"] == "136****1111" and rest == "held 137****9999 and written"
    assert searched == ["held 13700009999 and written\n"]  # the log line: not searched


def test_a_very_long_line_is_not_held_for_ever():
    out = io.StringIO()
    stream = ScrubbedStderr(out)
    stream.write("x" * (ScrubbedStderr.HELD_AT_MOST + 1))
    assert len(out.getvalue()) == ScrubbedStderr.HELD_AT_MOST + 1


def test_the_wrapped_streams_own_attributes_still_work(tmp_path):
    with open(tmp_path / "err", "w", encoding="utf-8", errors="backslashreplace") as raw:
        stream = ScrubbedStderr(raw)
        assert stream.fileno() == raw.fileno() and stream.isatty() is False
        assert (stream.encoding, stream.errors) == ("utf-8", "backslashreplace")
        assert stream.buffer is raw.buffer and stream.closed is False
        with pytest.raises(TypeError):
            stream.write(b"bytes")  # as the wrapped stream refuses them
        stream.write("closing with 13912345678 held")
        stream.close()
        assert raw.closed
    assert (tmp_path / "err").read_text() == "closing with 139****5678 held"


def test_only_the_processs_own_stderr_is_wrapped_and_only_once(monkeypatch, capsys):
    configure_logging("json")  # under pytest's capture: its stream is left alone
    assert not isinstance(sys.stderr, ScrubbedStderr)
    own = io.StringIO()
    monkeypatch.setattr(sys, "stderr", own)
    monkeypatch.setattr(sys, "__stderr__", own)
    scrub_stderr()
    scrub_stderr()
    assert isinstance(sys.stderr, ScrubbedStderr) and sys.stderr.stream is own


# What a service process does (``import whistle`` patches first, as ``whistle up``;
# configure_logging, as whistle up and nameko run through WorkerLogger), then what
# reaches stderr outside the log lines: a green thread's exception printed by eventlet's
# hub, a pydantic error quoting its input, a line written in two pieces, the log line of
# the same process, and an uncaught exception at exit (sys.excepthook).
SERVICE_PROCESS = f"""
import whistle
import eventlet, sys
from pydantic import BaseModel
from shared.logging import configure_logging, get_logger

configure_logging("json")

def doomed_call():
    raise ValueError("call 13912345678 about {LINK}")

class Contact(BaseModel):
    phone: int

def doomed_contact():
    Contact(phone="138-1234-5678")

eventlet.spawn(doomed_call)
eventlet.spawn(doomed_contact)
eventlet.sleep(0.1)
sys.stderr.write("split 137000")
sys.stderr.write("09999 in two writes\\n")
get_logger("whistle.test").info("logged_once", note="13600001111")
sys.stderr.write("held at exit 13500002222")
raise RuntimeError("uncaught 13400003333")
"""


def test_a_service_processs_stderr_is_scrubbed_tracebacks_and_all(tmp_path):
    result = run_python(tmp_path / "service.py", SERVICE_PROCESS)
    err = result.stderr
    assert result.returncode == 1, err
    for clear in ("13912345678", "138-1234-5678", "13700009999", "13600001111",
                  "13500002222", "13400003333", TOKEN):
        assert clear not in err
    # the tracebacks are still there for operators, with the masked text
    assert err.count("Traceback (most recent call last):") == 3
    assert 'in doomed_call\n    raise ValueError("call 139****5678 about http' in err
    assert "ValueError: call 139****5678 about http://x/issues/1?token=[redacted]\n" in err
    assert "in doomed_contact" in err and "input_value='138****5678'" in err
    assert "split 137****9999 in two writes\n" in err
    assert '"event":"logged_once"' in err and '"note":"136****1111"' in err
    assert err.count("logged_once") == 1
    assert "held at exit 135****2222" in err  # flushed at exit, not lost
    assert err.rstrip().endswith("RuntimeError: uncaught 134****3333")
