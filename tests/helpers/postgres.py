"""A throwaway PostgreSQL server for the distributed-storage tests and the fault-injection report (.ci/run installs
the binaries)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _pg_bin(name):
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")) if Path("/usr/lib/postgresql").is_dir() else []
    return str(found[-1]) if found else shutil.which(name)


class PostgresServer:
    """A PostgreSQL server in a temporary folder: ``url``, and ``stop()`` / ``start()`` to take it away."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("no PostgreSQL binaries (initdb, pg_ctl); .ci/run installs them")
        self.prefix = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: use its own user
            runuser = shutil.which("runuser")
            try:
                import pwd
                pwd.getpwnam("postgres")
            except KeyError:
                runuser = None
            if not runuser:
                pytest.skip("running as root without runuser or a 'postgres' user: cannot start PostgreSQL")
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="af-pg-"))
        if self.prefix:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run(self.prefix + [self.initdb, "-A", "trust", "-U", "postgres", "-D", str(self.data)],
                       check=True, capture_output=True, timeout=60)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t",
                                      "30", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
                                      "-c fsync=off", "start"], check=True, capture_output=True, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(self.prefix + [self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
