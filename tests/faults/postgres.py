"""A PostgreSQL cluster of the test's own (initdb + pg_ctl, on a free port, in a temporary
directory), so that a fault scenario can stop it without touching the machine's."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    assert found, f"{name} not found under /usr/lib/postgresql (scripts/infra.sh installs it)"
    return found[-1]


class PostgresServer:
    """A cluster in ``directory``, run as the ``postgres`` user (the server refuses root)."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/whistle"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = argv if os.geteuid() != 0 else ("runuser", "-u", "postgres", "--", *argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"

    def init(self) -> PostgresServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        self.start()
        self._run(_bin("psql") if os.path.exists(_bin("psql")) else "psql", "-h", "127.0.0.1",
                  "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-q", "-c",
                  "CREATE DATABASE whistle")
        return self

    def start(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "-w",
                  "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: connections are cut, and what was committed stays; ``immediate``: as a
        crash (recovery replays the WAL at the next start)."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return subprocess.run([_bin("pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True).returncode == 0 if os.geteuid() != 0 else \
            subprocess.run(["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D",
                            str(self.data), "status"], capture_output=True).returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
