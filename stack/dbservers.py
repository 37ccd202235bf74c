"""Every MongoDB-wire server this machine may run, started on its own loopback port and folder.

For the database benchmark (loadgen/bench/database.py) and the storage tests
(tests/functional/test_storage.py). Each server is started with the stack's own command for it
(stack/servers.py), answers on 127.0.0.1 only, keeps its files in the folder it is given,
and is stopped by pid. Starting the same server again on the same folder finds its data.

PostgreSQL (under FerretDB) refuses to run as root: as root, initdb and the server run as
the system user `PG_USER` that `stack/install.sh postgresql` creates, owning the data
folder; the folder given must then be reachable by that user (its parents searchable).
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from . import servers
from .procs import Proc, StackError, free_port, spawn, wait_port

SERVERS = {
    "ferretdb-sqlite": "FerretDB 1.24.2, SQLite",
    "ferretdb-postgresql": "FerretDB 1.24.2, PostgreSQL 15",
    "mongo-java-server-h2": "mongo-java-server 1.47.0, H2 file, with stack/mongo's additions: the stack's",
    "mongo-java-server-h2-upstream": "mongo-java-server 1.47.0, H2 file, upstream's backend",
    "mongo-java-server-memory": "mongo-java-server 1.47.0, memory",
    "mongod": "mongod (on PATH)",
}
PG_MAJOR = 15
PG_USER = "scaleshop-pg"  # created by stack/install.sh postgresql
STOP_TIMEOUT = 20


class Unavailable(Exception):
    """This server cannot run here; the message says why."""


@dataclass
class Running:
    """A started server: its wire URL and its processes, stopped in the reverse order of start."""

    name: str
    port: int
    folder: Path
    procs: list[tuple[str, Proc, int]] = field(default_factory=list)  # (what, process, stop signal)
    start_s: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        while self.procs:
            _what, proc, sig = self.procs.pop()
            proc.stop(STOP_TIMEOUT, sig)


def start(name: str, cache_dir: Path, port: int, folder: Path, timeout: float = 60) -> Running:
    """Start `name` on 127.0.0.1:`port` with its files in `folder`; return once it answers queries.

    Raises Unavailable when the server cannot run here (not installed, no mongod), StackError
    when it was there but failed to start; nothing it started is left running either way.
    """
    if name not in SERVERS:
        raise ValueError(f"unknown server {name!r}: one of {', '.join(SERVERS)}")
    folder.mkdir(parents=True, exist_ok=True)
    running = Running(name, port, folder)
    began = time.monotonic()
    try:
        if name == "ferretdb-postgresql":
            url = _start_postgresql(cache_dir, folder, running)
            argv = servers.ferretdb_postgresql_command(cache_dir, port, url)
        else:
            argv = _command(name, cache_dir, port, folder)
        proc = spawn(argv, folder / f"{name}.log", cwd=folder)
        running.procs.append((name, proc, signal.SIGTERM))
        _wait_answers(running, proc, timeout)
        running.start_s = time.monotonic() - began
        return running
    except StackError as exc:
        running.stop()
        if "is not installed" in str(exc):
            raise Unavailable(str(exc)) from None
        raise
    except BaseException:
        running.stop()
        raise


@contextlib.contextmanager
def running(name: str, cache_dir: Path, port: int, folder: Path) -> Iterator[Running]:
    server = start(name, cache_dir, port, folder)
    try:
        yield server
    finally:
        server.stop()


def _command(name: str, cache_dir: Path, port: int, folder: Path) -> list[str]:
    if name == "ferretdb-sqlite":
        return servers.ferretdb_command(cache_dir, port, folder / "sqlite")
    if name in ("mongo-java-server-h2", "mongo-java-server-h2-upstream"):
        return servers.mongo_java_server_command(cache_dir, port, folder / servers.MONGO_DATA_FILE,
                                                 upstream_backend=name.endswith("-upstream"))
    if name == "mongo-java-server-memory":
        return servers.mongo_java_server_command(cache_dir, port, None)
    if not shutil.which("mongod"):
        raise Unavailable("no mongod on PATH")
    (folder / "db").mkdir(exist_ok=True)
    return servers.mongod_command(port, folder / "db")


def _wait_answers(running: Running, proc: Proc, timeout: float) -> None:
    """Wait until the server lists its databases (which reaches FerretDB's backend too)."""
    deadline = time.monotonic() + timeout
    wait_port(running.port, timeout, proc, running.name)
    client: MongoClient[dict[str, Any]] = MongoClient(running.url, serverSelectionTimeoutMS=1000,
                                                      connectTimeoutMS=1000)
    try:
        while True:
            try:
                client.list_database_names()
                running.versions["server"] = str(client.server_info().get("version"))
                return
            except PyMongoError as exc:
                for what, other, _ in running.procs:
                    if not other.alive():
                        raise StackError(f"{what} exited while starting; see {running.folder}") from None
                if time.monotonic() > deadline:
                    raise StackError(f"{running.name} did not answer within {timeout:.0f}s: {exc}") from None
                time.sleep(0.2)
    finally:
        client.close()


# ---- PostgreSQL, under FerretDB ------------------------------------------------------------

def _pg_tool(cache_dir: Path, tool: str) -> str:
    path = cache_dir / f"postgresql/usr/lib/postgresql/{PG_MAJOR}/bin/{tool}"
    if not path.exists():
        raise Unavailable(f"PostgreSQL {PG_MAJOR} is not installed ({path} missing): "
                          "run `bash stack/install.sh postgresql` (make bench does)")
    return str(path)


def _pg_user() -> str | None:
    """Who runs PostgreSQL: PG_USER when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        raise Unavailable(f"PostgreSQL cannot run as root and the user {PG_USER} does not exist: "
                          "run `bash stack/install.sh postgresql`") from None
    return PG_USER


def _start_postgresql(cache_dir: Path, folder: Path, running: Running) -> str:
    """initdb (first time only) and start PostgreSQL on a free loopback port; its URL for FerretDB."""
    initdb, postgres = _pg_tool(cache_dir, "initdb"), _pg_tool(cache_dir, "postgres")
    user = _pg_user()
    data, sockets = folder / "pgdata", folder / "pgsock"
    if user:
        folder.chmod(0o711)
    if not (data / "PG_VERSION").exists():
        for path in (data, sockets):
            path.mkdir(mode=0o700, exist_ok=True)
            if user:
                shutil.chown(path, user, user)
        result = subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                                 "--locale=C", "--no-sync"], cwd="/", capture_output=True, text=True,
                                timeout=120, user=user, group=user, extra_groups=[] if user else None)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip()[-500:]}")
    version = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    running.versions["postgresql"] = version.split()[2] if len(version.split()) > 2 else version
    pg_port = free_port()
    proc = spawn([postgres, "-D", str(data), "-p", str(pg_port), "-c", "listen_addresses=127.0.0.1",
                  "-c", f"unix_socket_directories={sockets}"], folder / "postgresql.log", cwd=Path("/"), user=user)
    running.procs.append(("postgresql", proc, signal.SIGINT))  # SIGINT: PostgreSQL's fast shutdown
    wait_port(pg_port, 30, proc, "postgresql")
    return f"postgres://postgres@127.0.0.1:{pg_port}/postgres"
