"""The storage adapter (services/shared/storage.py) against real servers.

- The stack's own database (mongo-java-server today): the adapter says its atomic operators
  are safe, and the four concurrency checks (loadgen/bench/concurrency.py, shared with the
  database benchmark) pass with 8 writers and no locks.
- `storage.detect` classifies the buildInfo answers of the real servers.
- FerretDB 1.24 on SQLite, started here on its own port and folder: without locks 8 writers
  lose updates (why the adapter locks there), and inside `storage.of(db).exclusive(...)` they
  lose nothing (the workaround: these fail if the adapter stopped locking on FerretDB).
"""
from __future__ import annotations

import atexit
import os
from pathlib import Path

import pytest
from pymongo import MongoClient

from loadgen.bench import concurrency
from services.shared import storage
from stack import dbservers, servers
from stack.layout import REPO, SIDE_DB_PORT

from .conftest import PORT_OFFSET

FERRETDB_OPS = 400  # per check on FerretDB: its locked writes take 4 round trips each

# buildInfo as the real servers answered it (mongo-java-server 1.47.0; FerretDB 1.24.2 built by
# stack/install.sh, which leaves its version fields "unknown").
MONGO_JAVA_SERVER_BUILD_INFO = {"version": "5.0.0", "versionArray": [5, 0, 0], "maxBsonObjectSize": 16777216,
                                "ok": 1.0}
FERRETDB_BUILD_INFO = {
    "version": "7.0.42", "gitVersion": "unknown", "modules": [], "sysInfo": "deprecated",
    "versionArray": [7, 0, 42, 0], "bits": 64, "debug": False, "maxBsonObjectSize": 16777216,
    "buildEnvironment": {}, "ferretdbVersion": "unknown",
    "ferretdbFeatures": {"aggregationStages": ["$unset", "$group", "$limit", "$skip", "$sort", "$unwind",
                                               "$addFields", "$collStats", "$count", "$match", "$project", "$set"]},
    "ok": 1.0}


@pytest.fixture(scope="module")
def races(db):
    """A database of its own on the stack's server, so the checks leave nothing in `scaleshop`."""
    yield db.client["storage_races"]
    db.client.drop_database("storage_races")


@pytest.fixture(scope="module")
def ferretdb(tmp_path_factory):
    """FerretDB 1.24 on SQLite, the way the stack used to start it, on its own port; stopped by pid."""
    cache_dir = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()
    server = dbservers.start("ferretdb-sqlite", cache_dir, SIDE_DB_PORT + PORT_OFFSET,
                             tmp_path_factory.mktemp("ferretdb"))
    atexit.register(server.stop)  # last resort if the session dies before the finalizer
    client = MongoClient(server.url, serverSelectionTimeoutMS=10_000, socketTimeoutMS=60_000)
    try:
        yield client["storage_races"]
    finally:
        client.close()
        server.stop()
        atexit.unregister(server.stop)


def _locked(db):
    adapter = storage.of(db)
    return lambda name: adapter.exclusive(db, name)


# ---- the stack's own database --------------------------------------------------------------

def test_stack_database_needs_no_locks(races):
    adapter = storage.of(races)
    expected = storage.MONGODB if servers.database_kind() == "mongod" else storage.MONGO_JAVA_SERVER
    assert (adapter.server, adapter.atomic_updates) == (expected, True)


@pytest.mark.parametrize("check", ["inc", "cas", "fam", "unique"])
def test_stack_database_passes_the_concurrency_checks_without_locks(races, check):
    """`fam` failed on upstream mongo-java-server (2-18 of 1,600 replies showed a later writer's
    increment: it encodes stored objects after releasing the lock); stack/mongo replies with copies."""
    result = concurrency.CHECKS[check](races)
    assert result["ok"], result


# ---- which server is it ----------------------------------------------------------------------

@pytest.mark.parametrize("build_info, server, atomic", [
    (MONGO_JAVA_SERVER_BUILD_INFO, storage.MONGO_JAVA_SERVER, True),
    (FERRETDB_BUILD_INFO, storage.FERRETDB, False),
    ({"version": "1.0.0", "somethingElse": True, "ok": 1.0}, "unknown (1.0.0)", False),
], ids=["mongo-java-server", "ferretdb", "unknown"])
def test_detect_classifies_recorded_answers(build_info, server, atomic):
    assert (storage.detect(build_info).server, storage.detect(build_info).atomic_updates) == (server, atomic)


def test_detect_classifies_live_answers(races, ferretdb):
    stack_server = storage.MONGODB if servers.database_kind() == "mongod" else storage.MONGO_JAVA_SERVER
    assert storage.detect(races.client.admin.command("buildInfo")).server == stack_server
    assert storage.detect(ferretdb.client.admin.command("buildInfo")).server == storage.FERRETDB
    assert storage.of(ferretdb).atomic_updates is False


# ---- FerretDB: the one workaround, beside the failure it prevents ----------------------------

def test_ferretdb_loses_updates_without_locks(ferretdb):
    """Why the adapter locks on FerretDB. If this starts to pass, the lock may no longer be needed."""
    inc = concurrency.inc_race(ferretdb, total=FERRETDB_OPS)
    cas = concurrency.cas_race(ferretdb, total=FERRETDB_OPS)
    assert not inc["ok"] and not cas["ok"], (inc["summary"], cas["summary"])


def test_ferretdb_unique_index_race_is_safe(ferretdb):
    """The adapter's lock (services/shared/locks.py) is an insert under a unique _id: this must hold."""
    result = concurrency.unique_race(ferretdb)
    assert result["ok"], result


@pytest.mark.parametrize("check", ["inc", "cas", "fam"])
def test_ferretdb_loses_nothing_inside_the_adapters_exclusive_sections(ferretdb, check):
    result = concurrency.CHECKS[check](ferretdb, total=FERRETDB_OPS, section=_locked(ferretdb))
    assert result["ok"], result
