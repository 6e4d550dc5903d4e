"""The runs ledger: one SQLite file (``runs/ledger.sqlite``) that every stage writes a row into.

Reports and notebooks read only this ledger, so no stage has to parse another stage's files.
SQLite is embedded (stdlib, no server) and, in WAL mode, lets one process write while others
read; writes take the write lock up front (``BEGIN IMMEDIATE``) and wait for it (busy timeout),
so two training or profiling processes can record into the same folder at once.

Schema v2: runs have a ``kind``, a ``parent`` (the run they derive from) and a failure ``reason``;
exports carry a clean ``precision`` plus the quantization ``scheme`` and ``method``; profiles point
at the export they timed (``export_id``), so reports join the two without guessing.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from edgevit.errors import EdgevitError
from edgevit.vocab import RUN_KINDS, SCHEMES

LEDGER_FILE = "ledger.sqlite"
SCHEMA_VERSION = 2
STATUSES = ("running", "done", "failed")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
METHODS = ("ptq", "tune", "qat")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
RUN_LOCK = ".running.lock"  # in the run folder, flock-ed by the process recording the run
INTERRUPTED = (
    "interrupted: its process ended without recording an outcome (killed, or the machine went "
    "down); continue it with --resume --out <its folder>"
)
_JSON_COLUMNS = {"recipe", "summary", "metrics", "extra", "profile_extra"}
_BOOL_COLUMNS = {"verified"}

# The v1 tables, frozen: a later version adds its own migration instead of editing these.
_V1_TABLES: dict[str, list[str]] = {
    "runs": [
        "name TEXT NOT NULL",
        "stage TEXT",
        "status TEXT",
        "path TEXT",
        "recipe TEXT",
        "summary TEXT",
        "created TEXT",
        "updated TEXT",
    ],
    "evals": ["run TEXT NOT NULL", "epoch INTEGER", "split TEXT", "metrics TEXT", "created TEXT"],
    "exports": [
        "run TEXT NOT NULL",
        "target TEXT",
        "format TEXT",
        "precision TEXT",
        "path TEXT",
        "size_bytes INTEGER",
        "seconds REAL",
        "verified INTEGER",
        "agreement REAL",
        "max_abs_diff REAL",
        "top1 REAL",
        "note TEXT",
        "created TEXT",
    ],
    "profiles": [
        "run TEXT NOT NULL",
        "target TEXT",
        "format TEXT",
        "precision TEXT",
        "runtime TEXT",
        "device TEXT",
        "threads INTEGER",
        "batch INTEGER",
        "iterations INTEGER",
        "warmup INTEGER",
        "median_ms REAL",
        "p90_ms REAL",
        "p99_ms REAL",
        "mean_ms REAL",
        "throughput REAL",
        "peak_mem_mb REAL",
        "extra TEXT",
        "created TEXT",
    ],
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


def split_precision(text: str | None) -> tuple[str | None, str | None]:
    """v1 and export folders name a non-default INT8 scheme in the precision (``int8-static``):
    split that into the clean precision and the scheme (``None`` when not named)."""
    if not text:
        return text, None
    precision, _, scheme = text.partition("-")
    return precision, scheme or None


def _manifest_scheme(candidates: list[Path]) -> str | None:
    """The INT8 scheme an export's manifest.json records, from the first folder that has one."""
    for folder in candidates:
        try:
            quant = json.loads((folder / "manifest.json").read_text()).get("quantization")
        except (OSError, ValueError, AttributeError):
            continue
        scheme = quant.get("scheme") if isinstance(quant, dict) else None
        return scheme if scheme in SCHEMES else None
    return None


def _migrate_exports_1_to_2(conn: sqlite3.Connection, root: Path) -> dict[int, dict[str, Any]]:
    """Split each v1 precision (the folder name) into precision + scheme; returns the rows by id."""
    rows: dict[int, dict[str, Any]] = {}
    for r in conn.execute("SELECT id, run, target, precision, path, created FROM exports"):
        precision, scheme = split_precision(r["precision"])
        if precision == "int8" and scheme is None:  # the target's default scheme: its manifest says which
            places = [Path(r["path"])] if r["path"] else []
            places.append(root / str(r["run"]) / "exports" / str(r["target"]) / str(r["precision"]))
            scheme = _manifest_scheme(places)
        method = "ptq" if precision == "int8" else None  # v1 had post-training quantization only
        conn.execute(
            "UPDATE exports SET precision=?, scheme=?, method=? WHERE id=?",
            (precision, scheme if precision == "int8" else None, method, r["id"]),
        )
        rows[r["id"]] = {**dict(r), "clean": precision, "folder": r["precision"]}
    return rows


def _pick_export(exports: list[dict[str, Any]], artifact: str | None, folder: str) -> int | None:
    """Among same run/target/precision exports made at or before a profile, the one it timed:
    the artifact folder it names, else the folder its precision names, else the newest."""
    newest_first = sorted(exports, key=lambda e: (e["created"] or "", e["id"]), reverse=True)
    for wanted in (Path(artifact).name if artifact else None, folder):
        match = [e for e in newest_first if wanted and e["folder"] == wanted]
        if match:
            return match[0]["id"]
    return newest_first[0]["id"] if newest_first else None


def _migrate_profiles_1_to_2(conn: sqlite3.Connection, exports: dict[int, dict[str, Any]]) -> None:
    """Point each old profile at the export it timed: the latest of the same run/target/clean
    precision made at or before it (the artifact folder it names wins); clean its precision."""
    for p in conn.execute("SELECT id, run, target, precision, extra, created FROM profiles").fetchall():
        precision, scheme = split_precision(p["precision"])
        try:
            extra = json.loads(p["extra"]) if p["extra"] else {}
        except ValueError:
            extra = {}
        extra = extra if isinstance(extra, dict) else {}
        artifact = extra.get("artifact") if isinstance(extra.get("artifact"), str) else None
        same = [
            e
            for e in exports.values()
            if (e["run"], e["target"], e["clean"]) == (p["run"], p["target"], precision)
            and (e["created"] or "") <= (p["created"] or "")
        ]
        new_extra = p["extra"]
        if scheme:  # a v1 trtexec row named the folder (int8-static) as its precision: keep that name
            new_extra = _json({**extra, "folder": p["precision"]})
        conn.execute(
            "UPDATE profiles SET precision=?, export_id=?, extra=? WHERE id=?",
            (precision, _pick_export(same, artifact, p["precision"]), new_extra, p["id"]),
        )


def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """runs.stage -> kind, + parent/reason; exports + scheme/method/extra with a clean precision;
    profiles + load_ms and export_id, filled for old rows from the export each one timed."""
    db_file = conn.execute("PRAGMA database_list").fetchone()[2]
    root = Path(db_file).parent if db_file else Path(".")
    conn.execute("ALTER TABLE runs RENAME COLUMN stage TO kind")
    for table, column in (
        ("runs", "parent TEXT"),
        ("runs", "reason TEXT"),
        ("exports", "scheme TEXT"),
        ("exports", "method TEXT"),
        ("exports", "extra TEXT"),
        ("profiles", "export_id INTEGER REFERENCES exports(id)"),
        ("profiles", "load_ms REAL"),
    ):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    conn.execute("CREATE INDEX IF NOT EXISTS runs_parent ON runs(parent)")
    conn.execute("CREATE INDEX IF NOT EXISTS profiles_export ON profiles(export_id)")
    _migrate_profiles_1_to_2(conn, _migrate_exports_1_to_2(conn, root))


# MIGRATIONS[v] brings a version-v database to v+1; opening runs every step from the file's version.
MIGRATIONS = [_migrate_0_to_1, _migrate_1_to_2]
assert len(MIGRATIONS) == SCHEMA_VERSION


def check_run_name(name: str) -> str:
    """Run names become folder names and CLI arguments, so keep them to a safe alphabet."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or set(name) == {"."}:
        raise EdgevitError(f"bad run name {name!r}: use only letters, digits, '.', '_' and '-' (e.g. 'deit-tiny_01')")
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


def _one_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line[:limit]


def failure_reason(exc: BaseException) -> str:
    """What a failed run's ``reason`` says: the exception type and its message's first line."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    first = _one_line(str(exc))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _run_lock(name: str, path: str | Path | None) -> Iterator[None]:
    """Hold an exclusive lock on the run folder's RUN_LOCK for the body (none without a folder)."""
    if path is None:
        yield
        return
    Path(path).mkdir(parents=True, exist_ok=True)
    lock = FileLock(Path(path) / RUN_LOCK, is_singleton=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise EdgevitError(
            f"run {name} ({path}) is being run by another process; wait for it to end, or give this one another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _process_gone(folder: Path) -> bool:
    """Whether the process that recorded this folder's run as running has ended: its lock is free.
    False when there is no lock to ask (a run recorded by an older edgevit, or a folder elsewhere)."""
    if not (folder / RUN_LOCK).is_file():  # no lock to ask: cannot tell
        return False
    lock = FileLock(folder / RUN_LOCK, is_singleton=False)
    try:
        lock.acquire(blocking=False)
    except (Timeout, OSError):  # held (alive), or not ours to open: cannot tell
        return False
    lock.release()
    return True


def _check_choice(what: str, value: str | None, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise EdgevitError(f"unknown {what} {value!r}: use one of {', '.join(allowed)}")


def _journal_beside(path: Path) -> bool:
    return any((j := path.with_name(path.name + side)).exists() and j.stat().st_size for side in ("-wal", "-journal"))


def _truncation(path: Path) -> str | None:
    """'N of M bytes' when the file is shorter than its own SQLite header says, else None.

    Checked before SQLite opens the file, so a cut-off ledger is reported, never written to.
    Skipped while a WAL or rollback journal sits next to it (before or after reading): then the
    file may be mid-checkpoint, and SQLite itself completes it from the journal.
    """
    if _journal_beside(path):
        return None
    with open(path, "rb") as f:
        head = f.read(100)
    size = path.stat().st_size
    if _journal_beside(path):
        return None
    if len(head) < 100:
        return f"{size} bytes, less than its 100-byte header"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    if head[24:28] != head[92:96] or not pages:  # the header's page count is not valid: SQLite ignores it
        return None
    return f"{size} of {pages * page_size} bytes" if size < pages * page_size else None


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

    def _damaged(self, what: str) -> EdgevitError:
        return EdgevitError(
            f"the runs ledger {self.path} is damaged ({what}): restore it from a backup, "
            "or move it aside and edgevit starts a new ledger"
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves; timeout is SQLite's busy timeout.
        try:
            with closing(sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)) as conn:
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode, and much faster per commit
                yield conn
        except sqlite3.DatabaseError as e:
            code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF  # extended codes keep the primary low
            if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise self._damaged(_one_line(str(e))) from None
            if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY):
                raise EdgevitError(
                    f"could not write the runs ledger {self.path}: {_one_line(str(e))} (disk full or "
                    "file-size limit?); free space and run again; rows already written are kept"
                ) from None
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from the start, so it never fails half-way on a lock."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _open(self) -> None:
        """Check the file is a ledger this code understands, switch it to WAL, migrate it forward.

        An empty file is a new ledger; garbage or a cut-off file is refused before SQLite touches it.
        """
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise EdgevitError(
                        f"{self.path} is not an SQLite database: move it aside and edgevit starts a new ledger"
                    )
            cut = _truncation(self.path)
            if cut:  # once more, after any writer elsewhere has had time to finish a checkpoint
                time.sleep(0.1)
                cut = _truncation(self.path)
            if cut:
                raise self._damaged(f"truncated: {cut}")
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
            raise EdgevitError(
                f"cannot open the runs ledger {self.path}: {_one_line(str(e))}; "
                "check it is a readable, writable SQLite file"
            ) from e

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
            raise EdgevitError(
                f"{self.path} has ledger schema version {found}, but this edgevit supports "
                f"up to {SCHEMA_VERSION}: upgrade edgevit (pip install -U edgevit)"
            )
        return found

    def _insert(self, table: str, **values: Any) -> int:
        values["created"] = _now()
        names = ", ".join(values)
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
            )
            return int(cur.lastrowid)

    # ------------------------------------------------------------------------------------- writing
    def record_run(
        self,
        name: str,
        *,
        kind: str | None = None,
        status: str | None = None,
        path: str | Path | None = None,
        recipe: dict | None = None,
        summary: dict | None = None,
        parent: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Create or update the run's row; fields given as None keep their old value, ``created`` is kept.

        A new status other than ``failed`` clears an old ``reason`` (a resumed run is no longer failed).
        ``parent`` names the run this one derives from; it need not be in this ledger.
        """
        check_run_name(name)
        _check_choice("run kind", kind, RUN_KINDS)
        _check_choice("run status", status, STATUSES)
        if parent is not None and check_run_name(parent) == name:
            raise EdgevitError(f"run {name!r} cannot be its own parent: name the run it derives from")
        now = _now()
        row = (
            name,
            kind,
            status,
            None if path is None else str(path),
            _json(recipe),
            _json(summary),
            parent,
            None if reason is None else _one_line(reason),
            now,
            now,
        )
        with self._write() as conn:
            conn.execute(
                "INSERT INTO runs (name, kind, status, path, recipe, summary, parent, reason, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "kind=coalesce(excluded.kind, kind), status=coalesce(excluded.status, status), "
                "path=coalesce(excluded.path, path), recipe=coalesce(excluded.recipe, recipe), "
                "summary=coalesce(excluded.summary, summary), parent=coalesce(excluded.parent, parent), "
                "reason=CASE WHEN excluded.status IS NOT NULL AND excluded.status != 'failed' "
                "THEN excluded.reason ELSE coalesce(excluded.reason, reason) END, "
                "updated=excluded.updated",
                row,
            )
            return int(conn.execute("SELECT id FROM runs WHERE name=?", (name,)).fetchone()[0])

    @contextmanager
    def recording(
        self,
        name: str,
        *,
        kind: str,
        path: str | Path | None = None,
        parent: str | None = None,
        recipe: dict | None = None,
    ) -> Iterator[Ledger]:
        """Mark the run ``running`` for the body; if the body raises (Ctrl-C included) mark it
        ``failed`` with a one-line reason and re-raise. A body that succeeds records its own
        ``done`` and summary (``record_run(name, status="done", summary=...)``). The body holds the
        run folder's lock, so a second process cannot run the same folder and a reader can tell a
        ``running`` row whose process was killed (`runs` records it failed, interrupted)."""
        if path is None:  # a resume that does not repeat the folder still holds the recorded one
            path = next((r["path"] for r in self._select("runs", name=check_run_name(name))), None)
        with _run_lock(name, path):
            self.record_run(name, kind=kind, status="running", path=path, parent=parent, recipe=recipe)
            try:
                yield self
            except BaseException as exc:
                try:
                    self.record_run(name, status="failed", reason=failure_reason(exc))
                except Exception as err:  # noqa: BLE001 - the body's error is the one to show
                    exc.add_note(f"(the ledger could not mark run {name} failed: {_one_line(str(err))})")
                raise

    def record_eval(
        self, run: str, *, epoch: int | None = None, split: str = "val", metrics: dict | None = None
    ) -> int:
        """One evaluation of a run (e.g. per epoch); metrics is any JSON-able dict."""
        return self._insert("evals", run=check_run_name(run), epoch=epoch, split=split, metrics=_json(metrics or {}))

    def record_export(
        self,
        run: str,
        *,
        target: str,
        format: str,
        precision: str,
        scheme: str | None = None,
        method: str | None = None,
        path: str | Path | None = None,
        size_bytes: int | None = None,
        seconds: float | None = None,
        verified: bool = False,
        agreement: float | None = None,
        max_abs_diff: float | None = None,
        top1: float | None = None,
        note: str = "",
        extra: dict | None = None,
    ) -> int:
        """One exported artifact and how its verification against PyTorch went.

        ``precision`` is clean (fp32|fp16|bf16|int8); an INT8 export names its ``scheme``
        (static|dynamic|weight-only) and ``method`` (ptq|tune|qat) so reports can tell them apart.
        """
        _check_choice("export precision", precision, PRECISIONS)
        _check_choice("quantization scheme", scheme, SCHEMES)
        _check_choice("quantization method", method, METHODS)
        if scheme is not None and precision != "int8":
            raise EdgevitError(
                f"a {precision} export has no quantization scheme (got {scheme!r}): "
                "pass scheme only with precision int8"
            )
        return self._insert(
            "exports",
            run=check_run_name(run),
            target=target,
            format=format,
            precision=precision,
            scheme=scheme,
            method=method,
            path=None if path is None else str(path),
            size_bytes=size_bytes,
            seconds=seconds,
            verified=int(bool(verified)),
            agreement=agreement,
            max_abs_diff=max_abs_diff,
            top1=top1,
            note=note,
            extra=_json(extra),
        )

    def record_profile(
        self,
        run: str,
        *,
        target: str,
        format: str,
        precision: str,
        export_id: int | None = None,
        runtime: str | None = None,
        device: str | None = None,
        threads: int | None = None,
        batch: int | None = None,
        iterations: int | None = None,
        warmup: int | None = None,
        median_ms: float | None = None,
        p90_ms: float | None = None,
        p99_ms: float | None = None,
        mean_ms: float | None = None,
        throughput: float | None = None,
        peak_mem_mb: float | None = None,
        load_ms: float | None = None,
        extra: dict | None = None,
    ) -> int:
        """One latency measurement of an artifact on a device with a runtime.

        ``export_id`` is the exports row it timed (None for the PyTorch baseline).
        """
        return self._insert(
            "profiles",
            run=check_run_name(run),
            export_id=export_id,
            target=target,
            format=format,
            precision=precision,
            runtime=runtime,
            device=device,
            threads=threads,
            batch=batch,
            iterations=iterations,
            warmup=warmup,
            median_ms=median_ms,
            p90_ms=p90_ms,
            p99_ms=p99_ms,
            mean_ms=mean_ms,
            throughput=throughput,
            peak_mem_mb=peak_mem_mb,
            load_ms=load_ms,
            extra=_json(extra or {}),
        )

    # ------------------------------------------------------------------------------------- reading
    def _select(self, table: str, **where: Any) -> list[dict[str, Any]]:
        where = {k: v for k, v in where.items() if v is not None}
        clause = " WHERE " + " AND ".join(f"{k}=?" for k in where) if where else ""
        with self._connect() as conn:
            return [_row(r) for r in conn.execute(f"SELECT * FROM {table}{clause} ORDER BY id", tuple(where.values()))]

    def runs(self, name: str | None = None, *, kind: str | None = None) -> list[dict[str, Any]]:
        """Run rows, all or one by name, optionally of one kind. A ``running`` row whose process is
        gone (its folder's lock is free: SIGKILL, power loss) is recorded ``failed`` as interrupted."""
        _check_choice("run kind", kind, RUN_KINDS)
        rows = self._select("runs", name=name, kind=kind)
        for row in rows:
            if row["status"] == "running" and row.get("path") and _process_gone(Path(row["path"])):
                row.update(status="failed", reason=INTERRUPTED)
                with contextlib.suppress(EdgevitError, sqlite3.Error, OSError):  # a read-only ledger still reads
                    self.record_run(row["name"], status="failed", reason=INTERRUPTED)
        return rows

    def children(self, name: str) -> list[dict[str, Any]]:
        """The runs whose parent is ``name`` (e.g. the pruned and quantized runs made from it)."""
        return self._select("runs", parent=check_run_name(name))

    def evals(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("evals", run=run)

    def exports(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("exports", run=run)

    def profiles(self, run: str | None = None) -> list[dict[str, Any]]:
        return self._select("profiles", run=run)

    def latest_export(
        self, run: str, *, target: str, folder: str | None = None, precision: str | None = None
    ) -> dict[str, Any] | None:
        """The newest export row of run/target whose artifact folder is named ``folder``
        (e.g. ``int8-static``) or, without a folder, whose clean precision is ``precision``."""
        rows = [
            r
            for r in self._select("exports", run=run, target=target, precision=precision)
            if folder is None or (r["path"] and Path(r["path"]).name == folder)
        ]
        return rows[-1] if rows else None

    def export_profiles(self, run: str | None = None) -> list[dict[str, Any]]:
        """Each export with each profile that timed it (exports LEFT JOIN profiles on export_id).

        One row per (export, profile); an export never profiled has one row with profile columns
        None. Export columns keep their names; the profile's are ``profile_id``, runtime, device,
        threads, batch, iterations, warmup, median_ms, p90_ms, p99_ms, mean_ms, throughput,
        peak_mem_mb, load_ms, ``profile_extra``, ``profile_created``. The PyTorch baseline
        (no export) is in :meth:`profiles`.
        """
        clause, args = (" WHERE e.run=?", (run,)) if run is not None else ("", ())
        sql = (
            "SELECT e.*, p.id AS profile_id, p.runtime, p.device, p.threads, p.batch, p.iterations, "
            "p.warmup, p.median_ms, p.p90_ms, p.p99_ms, p.mean_ms, p.throughput, p.peak_mem_mb, p.load_ms, "
            "p.extra AS profile_extra, p.created AS profile_created "
            f"FROM exports e LEFT JOIN profiles p ON p.export_id = e.id{clause} ORDER BY e.id, p.id"
        )
        with self._connect() as conn:
            return [_row(r) for r in conn.execute(sql, args)]
