"""The runs ledger: one SQLite file (``runs/ledger.sqlite``) that every stage writes a row into.

Reports and notebooks read only this ledger, so no stage has to parse another stage's files.
SQLite is embedded (stdlib, no server) and, in WAL mode, lets one process write while others
read; writes take the write lock up front (``BEGIN IMMEDIATE``) and wait for it (busy timeout),
so two training or profiling processes can record into the same folder at once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_JSON_COLUMNS = {"recipe", "summary", "metrics", "extra"}
_BOOL_COLUMNS = {"verified"}

# The v1 tables, frozen: a later version adds its own migration instead of editing these.
_V1_TABLES: dict[str, list[str]] = {
    "runs": ["name TEXT NOT NULL", "stage TEXT", "status TEXT", "path TEXT", "recipe TEXT",
             "summary TEXT", "created TEXT", "updated TEXT"],
    "evals": ["run TEXT NOT NULL", "epoch INTEGER", "split TEXT", "metrics TEXT", "created TEXT"],
    "exports": ["run TEXT NOT NULL", "target TEXT", "format TEXT", "precision TEXT", "path TEXT",
                "size_bytes INTEGER", "seconds REAL", "verified INTEGER", "agreement REAL",
                "max_abs_diff REAL", "top1 REAL", "note TEXT", "created TEXT"],
    "profiles": ["run TEXT NOT NULL", "target TEXT", "format TEXT", "precision TEXT", "runtime TEXT",
                 "device TEXT", "threads INTEGER", "batch INTEGER", "iterations INTEGER",
                 "warmup INTEGER", "median_ms REAL", "p90_ms REAL", "p99_ms REAL", "mean_ms REAL",
                 "throughput REAL", "peak_mem_mb REAL", "extra TEXT", "created TEXT"],
}


def _migrate_0_to_1(conn: sqlite3.Connection) -> None:
    """v0 is the unversioned prototype: some tables, maybe fewer columns, no meta table.

    Create what is missing and add missing columns, so rows already recorded survive.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
    for table, columns in _V1_TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, {', '.join(columns)})")
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column in columns:
            name, kind = column.split()[:2]
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
        index = f"CREATE INDEX IF NOT EXISTS {table}_run ON {table}(run)"
        if table == "runs":  # unique: record_run upserts by name
            index = "CREATE UNIQUE INDEX IF NOT EXISTS runs_name ON runs(name)"
        conn.execute(index)


# MIGRATIONS[v] brings a version-v database to v+1; opening runs every step from the file's version.
MIGRATIONS = [_migrate_0_to_1]
assert len(MIGRATIONS) == SCHEMA_VERSION


def check_run_name(name: str) -> str:
    """Run names become folder names and CLI arguments, so keep them to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."}:
        raise EdgevitError(f"bad run name {name!r}: use only letters, digits, '.', '_' and '-' "
                           "(e.g. 'deit-tiny_01')")
    return name


def run_dir(runs_root: str | Path, name: str) -> Path:
    """The folder a run keeps its files in (``runs_root/<name>/``), created if missing."""
    path = Path(runs_root) / check_run_name(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json(value: Any) -> str | None:
    """JSON text; numpy scalars and Paths become numbers and strings rather than failing a record."""
    if value is None:
        return None
    return json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key, value in out.items():
        if key in _JSON_COLUMNS and value is not None:
            out[key] = json.loads(value)
        elif key in _BOOL_COLUMNS and value is not None:
            out[key] = bool(value)
    return out


class Ledger:
    """Records of runs, evaluations, exports and profiles in ``runs_root/ledger.sqlite``.

    Each call opens a short-lived connection, so a Ledger is safe to share between threads and
    holds no lock between calls.
    """

    def __init__(self, runs_root: str | Path, timeout: float = 30.0):
        self.root = Path(runs_root)
        self.path = self.root / LEDGER_FILE
        self.timeout = timeout
        self.root.mkdir(parents=True, exist_ok=True)
        self._open()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout is SQLite's busy timeout.
        with closing(sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, and much faster per commit
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from the start, so it never fails half-way on a lock."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _open(self) -> None:
        """Check the file is a ledger this code understands, switch it to WAL, migrate it forward."""
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise EdgevitError(f"{self.path} is not an SQLite database: "
                                       "move it aside and edgevit starts a new ledger")
        try:
            with self._connect() as conn:
                self._use_wal(conn)
                if self._version(conn) == SCHEMA_VERSION:
                    return
            with self._write() as conn:
                found = self._version(conn)  # again, under the lock: another process may have migrated
                for step in range(found, SCHEMA_VERSION):
                    MIGRATIONS[step](conn)
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(step + 1),))
        except sqlite3.DatabaseError as e:
            raise EdgevitError(f"cannot open the runs ledger {self.path}: {e}; "
                               "check it is a readable, writable SQLite file") from e

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """WAL (persistent in the file) lets readers go on while one process writes.

        Switching needs the file to itself, and SQLite answers "locked" at once rather than
        waiting, e.g. when several processes create the ledger together; so retry until timeout.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _version(self, conn: sqlite3.Connection) -> int:
        """0 when there is no meta row (an unversioned ledger); refuse versions newer than this code."""
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone():
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        found = int(row[0]) if row else 0
        if found > SCHEMA_VERSION:
            raise EdgevitError(f"{self.path} has ledger schema version {found}, but this edgevit supports "
                               f"up to {SCHEMA_VERSION}: upgrade edgevit (pip install -U edgevit)")
        return found

    def _insert(self, table: str, **values: Any) -> int:
        values["created"] = _now()
        names = ", ".join(values)
        with self._write() as conn:
            cur = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})",
                               tuple(values.values()))
            return int(cur.lastrowid)

    def record_run(self, name: str, *, stage: str | None = None, status: str | None = None,
                   path: str | Path | None = None, recipe: dict | None = None,
                   summary: dict | None = None) -> int:
        """Create or update the run's row; fields given as None keep their old value, ``created`` is kept."""
        now = _now()
        row = (check_run_name(name), stage, status, None if path is None else str(path),
               _json(recipe), _json(summary), now, now)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (name, stage, status, path, recipe, summary, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "stage=coalesce(excluded.stage, stage), status=coalesce(excluded.status, status), "
                "path=coalesce(excluded.path, path), recipe=coalesce(excluded.recipe, recipe), "
                "summary=coalesce(excluded.summary, summary), updated=excluded.updated", row)
            return int(conn.execute("SELECT id FROM runs WHERE name=?", (name,)).fetchone()[0])

    def record_eval(self, run: str, *, epoch: int | None = None, split: str = "val",
                    metrics: dict | None = None) -> int:
        """One evaluation of a run (e.g. per epoch); metrics is any JSON-able dict."""
        return self._insert("evals", run=check_run_name(run), epoch=epoch, split=split,
                            metrics=_json(metrics or {}))

    def record_export(self, run: str, *, target: str, format: str, precision: str,
                      path: str | Path | None = None, size_bytes: int | None = None,
                      seconds: float | None = None, verified: bool = False,
                      agreement: float | None = None, max_abs_diff: float | None = None,
                      top1: float | None = None, note: str = "") -> int:
        """One exported artifact and how its verification against PyTorch went."""
        return self._insert("exports", run=check_run_name(run), target=target, format=format,
                            precision=precision, path=None if path is None else str(path),
                            size_bytes=size_bytes, seconds=seconds, verified=int(bool(verified)),
                            agreement=agreement, max_abs_diff=max_abs_diff, top1=top1, note=note)

    def record_profile(self, run: str, *, target: str, format: str, precision: str,
                       runtime: str | None = None, device: str | None = None, threads: int | None = None,
                       batch: int | None = None, iterations: int | None = None, warmup: int | None = None,
                       median_ms: float | None = None, p90_ms: float | None = None,
                       p99_ms: float | None = None, mean_ms: float | None = None,
                       throughput: float | None = None, peak_mem_mb: float | None = None,
                       extra: dict | None = None) -> int:
        """One latency measurement of an artifact on a device with a runtime."""
        return self._insert("profiles", run=check_run_name(run), target=target, format=format,
                            precision=precision, runtime=runtime, device=device, threads=threads,
                            batch=batch, iterations=iterations, warmup=warmup, median_ms=median_ms,
                            p90_ms=p90_ms, p99_ms=p99_ms, mean_ms=mean_ms, throughput=throughput,
                            peak_mem_mb=peak_mem_mb, extra=_json(extra or {}))

    def _select(self, table: str, column: str, value: str | None) -> list[dict[str, Any]]:
        where, args = (f" WHERE {column}=?", (value,)) if value is not None else ("", ())
        with self._connect() as conn:
            return [_row(r) for r in conn.execute(f"SELECT * FROM {table}{where} ORDER BY id", args)]

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        return self._select("runs", "name", name)

    def evals(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("evals", "run", run)

    def exports(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("exports", "run", run)

    def profiles(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("profiles", "run", run)
