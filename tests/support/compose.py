"""docker-compose.yml's commands, for tests that run them as real processes."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Printed by `whistle up` once every container has started (consumers included).
RUNNING_LINE = " running; HTTP on "


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))


def compose_command(service: str) -> list[str]:
    """The service's `command:` in docker-compose.yml, run by this checkout's interpreter
    (`whistle ...` as `python -m whistle ...`, as the image's script would run it)."""
    command = compose()["services"][service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [sys.executable, "-m", *argv]
