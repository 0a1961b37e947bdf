"""A PostgreSQL cluster of a test's own, to stop and start under a running study.

The shared server on 127.0.0.1:5432 serves every PostgreSQL test of the suite at once; stopping
it would fail the others, so the outage tests once ran alone after them. This cluster is made
by the installed PostgreSQL's own ``initdb`` in a fresh directory and served by its ``pg_ctl``
on a free loopback port (trust authentication, user ``postgres``, no Unix socket outside the
directory, ``fsync`` off: nothing here must survive a power cut): its outages touch no other
test. As root, the binaries run as the ``postgres`` user
(``initdb`` refuses root). Missing binaries skip the test, or fail it under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.servers import _postgres_unavailable, free_port

__all__ = ["PrivatePostgres", "private_postgres"]

_BIN_ROOT = Path("/usr/lib/postgresql")


def _bin_dir() -> Path | None:
    """The newest installed PostgreSQL's ``bin`` directory with ``initdb`` and ``pg_ctl``."""
    if not _BIN_ROOT.is_dir():
        return None
    found = [d / "bin" for d in _BIN_ROOT.iterdir()
             if (d / "bin" / "initdb").exists() and (d / "bin" / "pg_ctl").exists()]
    return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0,
               default=None)


class PrivatePostgres:
    """One cluster: :meth:`stop` and :meth:`start` are the outage; :meth:`url` names a
    database made by :meth:`new_database`.

    Args:
        bin_dir: The PostgreSQL ``bin`` directory (``initdb``, ``pg_ctl``).
    """

    def __init__(self, bin_dir: Path) -> None:
        self._bin = bin_dir
        # Under /tmp, not pytest's tmp_path: the postgres user cannot enter root's 0700 tree.
        self.root = Path(tempfile.mkdtemp(prefix="study-test-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                 "--no-sync", "-E", "UTF8")

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> None:
        done = subprocess.run([*self._as, str(self._bin / tool), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> PrivatePostgres:
        """Start the server and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=off")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                 str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        """Stop the server at once (``-m fast``: open connections are cut, as in an outage)."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh database's URL (the cluster goes away with its databases)."""
        import psycopg

        name = f"study_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url("postgres"), connect_timeout=10, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, removed afterwards (skipped, or failed under ``CI=true``,
    where PostgreSQL's binaries are not installed)."""
    bin_dir = _bin_dir()
    if bin_dir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        _postgres_unavailable(f"no PostgreSQL binaries (initdb, pg_ctl) under {_BIN_ROOT}")
    cluster = PrivatePostgres(bin_dir)
    try:
        yield cluster.start()
    finally:
        cluster.remove()
