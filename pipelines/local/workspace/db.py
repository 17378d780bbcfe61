"""The local workspace database: one SQLite file (``workspace.db``), its schema, and its connections.

Publishing, the run queue and schedules all keep their state here; this module is the only one that
opens the file, so none of them needs another to create its tables first.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.settings import amlops_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS published_pipelines (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    module TEXT NOT NULL,
    settings TEXT NOT NULL,
    parameters TEXT NOT NULL,
    dataset_param TEXT,
    status TEXT NOT NULL DEFAULT 'Active',
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pipeline_endpoints (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    default_version INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS endpoint_versions (
    endpoint_id TEXT NOT NULL REFERENCES pipeline_endpoints(id),
    version INTEGER NOT NULL,
    pipeline_id TEXT NOT NULL REFERENCES published_pipelines(id),
    created TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, version)
);
CREATE TABLE IF NOT EXISTS run_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    module TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    pid_created REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    submitted TEXT NOT NULL,
    started TEXT,
    ended TEXT,
    reason TEXT,
    stub TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS run_queue_state ON run_queue (state, seq);
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    endpoint_id TEXT,
    pipeline_id TEXT,
    experiment_name TEXT,
    parameters TEXT NOT NULL DEFAULT '{}',
    recurrence TEXT NOT NULL,
    status TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    next_due TEXT,
    last_due TEXT,
    last_run_id TEXT
);
CREATE TABLE IF NOT EXISTS schedule_fires (
    schedule_id TEXT NOT NULL,
    due_time TEXT NOT NULL,
    run_id TEXT NOT NULL,
    fired_at TEXT NOT NULL,
    missed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, due_time)
);
"""

_ready: set[str] = set()
_ready_lock = threading.Lock()


def db_path() -> Path:
    return amlops_home() / "workspace.db"


def _ensure_schema(path: Path) -> None:
    """Create every table once per process and database file (idempotent, safe across processes)."""
    key = str(path)
    with _ready_lock:
        if key in _ready:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.executescript(SCHEMA)
        finally:
            conn.close()
        _ready.add(key)


@contextmanager
def connect() -> Iterator[sqlite3.Connection]:
    """A write transaction on the workspace database (schema created on first use), committed on success."""
    path = db_path()
    _ensure_schema(path)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
