"""Moving a data folder written by the previous local database (FerretDB on SQLite) to the current one.

`make up` calls `migrate_if_needed` before it starts the database: a `data/db` folder that holds
FerretDB's `*.sqlite` files and no mongo-java-server file is copied through the wire protocol
(FerretDB started on that folder, mongo-java-server on a new file, each on a free loopback
port), index definitions first, then every document, and the counts of every collection are
compared. Only when they all match is the new file kept and the old files moved aside to
`data/db-ferretdb-migrated/` (kept, never deleted); otherwise the new file is removed and the
stack refuses to start, so it never starts empty as if nothing were there.
`python -m stack migrate` runs the same step on its own.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from . import servers
from .layout import Layout
from .procs import Proc, StackError, free_port, spawn, wait_port

BATCH = 1000
SYSTEM_DATABASES = {"admin", "local", "config"}
MOVED_ASIDE = "db-ferretdb-migrated"


def old_ferretdb_files(db_dir: Path) -> list[Path]:
    return sorted(db_dir.glob("*.sqlite*")) if db_dir.is_dir() else []


def needs_migration(layout: Layout) -> bool:
    db_dir = servers.database_dir(layout)
    return (servers.database_kind() == "mongo-java-server" and bool(old_ferretdb_files(db_dir))
            and not (db_dir / servers.MONGO_DATA_FILE).exists())


def copy_all(source: MongoClient, target: MongoClient, log: Callable[[str], None]) -> dict[str, int]:
    """Copy every user database, its indexes and documents; return the count per `db.collection`."""
    counts: dict[str, int] = {}
    for db_name in source.list_database_names():
        if db_name in SYSTEM_DATABASES:
            continue
        for coll_name in source[db_name].list_collection_names():
            src, dst = source[db_name][coll_name], target[db_name][coll_name]
            for name, spec in src.index_information().items():
                if name != "_id_":
                    options = {k: v for k, v in spec.items() if k in ("unique", "sparse")}
                    dst.create_index(spec["key"], name=name, **options)
            batch: list[dict] = []
            for doc in src.find({}, sort=[("_id", 1)]):
                batch.append(doc)
                if len(batch) == BATCH:
                    dst.insert_many(batch, ordered=False)
                    batch = []
            if batch:
                dst.insert_many(batch, ordered=False)
            expected, copied = src.count_documents({}), dst.count_documents({})
            if copied != expected:
                raise StackError(f"migration: {db_name}.{coll_name} has {expected} documents in FerretDB "
                                 f"but {copied} were copied; the old data is left as it was")
            counts[f"{db_name}.{coll_name}"] = copied
            log(f"migrated {db_name}.{coll_name}: {copied} documents")
    return counts


def migrate(layout: Layout, log: Callable[[str], None] = print) -> dict[str, int]:
    """Copy the FerretDB folder into a new mongo-java-server file; move the old files aside."""
    db_dir = servers.database_dir(layout)
    new_file = db_dir / servers.MONGO_DATA_FILE
    old_files = old_ferretdb_files(db_dir)
    log(f"{db_dir} was written by FerretDB (the previous local database): copying it to mongo-java-server")
    procs: list[Proc] = []
    try:
        ports = {"ferretdb": free_port(), "mongo-java-server": free_port()}
        commands = {
            "ferretdb": servers.ferretdb_command(layout.cache_dir, ports["ferretdb"], db_dir),
            "mongo-java-server": servers.mongo_java_server_command(layout.cache_dir, ports["mongo-java-server"],
                                                                   new_file),
        }
        for name, argv in commands.items():
            proc = spawn(argv, layout.log_file(f"migrate-{name}"))
            procs.append(proc)
            wait_port(ports[name], 60, proc, name)
        clients: dict[str, MongoClient[dict[str, Any]]] = {
            name: MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10_000)
            for name, port in ports.items()}
        try:
            counts = copy_all(clients["ferretdb"], clients["mongo-java-server"], log)
        finally:
            for client in clients.values():
                client.close()
    except BaseException:
        for proc in reversed(procs):
            proc.stop(20)
        new_file.unlink(missing_ok=True)
        raise
    for proc in reversed(procs):
        proc.stop(20)  # SIGTERM: mongo-java-server closes its file cleanly
    aside = layout.data_dir / MOVED_ASIDE
    aside.mkdir(parents=True, exist_ok=True)
    for path in old_files:
        shutil.move(str(path), aside / path.name)
    log(f"migration done: {sum(counts.values())} documents in {len(counts)} collections; "
        f"the FerretDB files are kept in {aside}")
    return counts


def migrate_if_needed(layout: Layout, log: Callable[[str], None] = print) -> None:
    if needs_migration(layout):
        migrate(layout, log)
