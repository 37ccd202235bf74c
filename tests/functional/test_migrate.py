"""A data folder written by FerretDB (the previous local database) is migrated, never started empty."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from bson import Binary, ObjectId
from pymongo import ASCENDING, MongoClient
from pymongo.errors import DuplicateKeyError

from stack import migrate, servers
from stack.layout import REPO, Layout
from stack.procs import free_port, spawn, wait_port

CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()


def _serve(argv: list[str], port: int, log: Path):
    proc = spawn(argv, log)
    wait_port(port, 60, proc, argv[0])
    return proc


@pytest.fixture
def old_folder(tmp_path: Path) -> Layout:
    """A stack folder whose data/db was written by FerretDB, with a unique index and binary data."""
    layout = Layout(run_dir=tmp_path, cache_dir=CACHE)
    db_dir = servers.database_dir(layout)
    db_dir.mkdir(parents=True)
    port = free_port()
    proc = _serve(servers.ferretdb_command(CACHE, port, db_dir), port, tmp_path / "ferretdb.log")
    try:
        with MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10_000) as client:
            db = client["scaleshop"]
            db.users.create_index([("email_lower", ASCENDING)], unique=True, name="email_unique")
            db.users.insert_many([{"_id": ObjectId(), "email_lower": f"u{i}@example.com"} for i in range(1500)])
            db.job_payloads.insert_one({"job_id": "j1", "n": 0, "data": Binary(b"\x00\x01payload")})
    finally:
        proc.stop(20)
    return layout


def test_old_ferretdb_folder_is_copied_with_counts_and_indexes(old_folder: Layout):
    assert migrate.needs_migration(old_folder)
    counts = migrate.migrate(old_folder, log=lambda _m: None)
    assert counts == {"scaleshop.users": 1500, "scaleshop.job_payloads": 1}

    db_dir = servers.database_dir(old_folder)
    assert not migrate.old_ferretdb_files(db_dir), "the FerretDB files were moved aside"
    assert migrate.old_ferretdb_files(old_folder.data_dir / migrate.MOVED_ASIDE), "and kept"
    assert not migrate.needs_migration(old_folder)

    port = free_port()
    proc = _serve(servers.mongo_java_server_command(CACHE, port, db_dir / servers.MONGO_DATA_FILE), port,
                  old_folder.run_dir / "mjs.log")
    try:
        with MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=10_000) as client:
            db = client["scaleshop"]
            assert db.users.count_documents({}) == 1500
            assert bytes(db.job_payloads.find_one({"job_id": "j1"})["data"]) == b"\x00\x01payload"
            with pytest.raises(DuplicateKeyError):  # the unique index came along
                db.users.insert_one({"email_lower": "u7@example.com"})
    finally:
        proc.stop(20)


def test_a_current_folder_needs_no_migration(tmp_path: Path):
    layout = Layout(run_dir=tmp_path, cache_dir=CACHE)
    assert not migrate.needs_migration(layout)  # nothing there yet
    servers.database_dir(layout).mkdir(parents=True)
    (servers.database_dir(layout) / servers.MONGO_DATA_FILE).write_bytes(b"")
    assert not migrate.needs_migration(layout)
