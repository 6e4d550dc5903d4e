"""The runs ledger against real SQLite: round trips, concurrent writers, schema versions, bad input."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest

from edgevit.errors import EdgevitError
from edgevit.runs import LEDGER_FILE, SCHEMA_VERSION, Ledger, run_dir

N_EVALS, N_PROFILES = 200, 20


def _export(led: Ledger, run: str = "a", **kw) -> int:
    args = dict(target="onnx", format="onnx", precision="fp32", path="runs/a/exports/onnx/fp32",
                size_bytes=1234, seconds=1.5, verified=True, agreement=0.99, max_abs_diff=1e-4,
                top1=0.8, note="ok")
    return led.record_export(run, **{**args, **kw})


def _profile(led: Ledger, run: str = "a", **kw) -> int:
    args = dict(target="onnx", format="onnx", precision="fp32", runtime="onnxruntime", device="local",
                threads=2, batch=1, iterations=50, warmup=5, median_ms=3.0, p90_ms=3.5, p99_ms=4.0,
                mean_ms=3.1, throughput=320.0, peak_mem_mb=None, extra={"provider": "CPU"})
    return led.record_profile(run, **{**args, **kw})


def test_round_trip_each_record(tmp_path):
    led = Ledger(tmp_path)
    assert (tmp_path / LEDGER_FILE).is_file()
    rid = led.record_run("a", stage="distill", status="done", path=tmp_path / "a",
                         recipe={"student": {"name": "deit_tiny"}}, summary={"top1": 0.8})
    eid = led.record_eval("a", epoch=3, split="val", metrics={"top1": 0.8, "loss": 0.5})
    xid = _export(led)
    pid = _profile(led)
    assert all(isinstance(i, int) for i in (rid, eid, xid, pid))

    (run,) = led.runs()
    assert run["id"] == rid and run["name"] == "a" and run["path"] == str(tmp_path / "a")
    assert run["recipe"] == {"student": {"name": "deit_tiny"}} and run["summary"] == {"top1": 0.8}
    assert run["created"].endswith("+00:00")
    (ev,) = led.evals()
    assert (ev["id"], ev["run"], ev["epoch"], ev["split"]) == (eid, "a", 3, "val")
    assert ev["metrics"] == {"top1": 0.8, "loss": 0.5}
    (ex,) = led.exports()
    assert ex["id"] == xid and ex["verified"] is True and ex["agreement"] == 0.99 and ex["size_bytes"] == 1234
    assert ex["note"] == "ok" and ex["path"] == "runs/a/exports/onnx/fp32"
    (pr,) = led.profiles()
    assert pr["id"] == pid and pr["median_ms"] == 3.0 and pr["peak_mem_mb"] is None
    assert pr["extra"] == {"provider": "CPU"} and pr["runtime"] == "onnxruntime"
    # A second Ledger on the same folder sees the same rows.
    assert Ledger(tmp_path).evals() == led.evals()


def test_record_run_upserts_by_name_and_keeps_created(tmp_path):
    led = Ledger(tmp_path)
    first = led.record_run("a", stage="distill", status="running", recipe={"epochs": 3})
    (before,) = led.runs()
    time.sleep(0.01)
    again = led.record_run("a", stage="export", status="done", summary={"top1": 0.7})
    (after,) = led.runs()
    assert again == first
    assert after["created"] == before["created"] and after["updated"] > before["updated"]
    assert (after["stage"], after["status"]) == ("export", "done")
    assert after["recipe"] == {"epochs": 3}  # None leaves the old value
    assert after["summary"] == {"top1": 0.7}


def test_filter_by_run(tmp_path):
    led = Ledger(tmp_path)
    for name in ("a", "b"):
        led.record_run(name, stage="distill")
        led.record_eval(name, epoch=0, metrics={"top1": 0.1})
        _export(led, name)
        _profile(led, name)
    led.record_eval("b", epoch=1, metrics={"top1": 0.2})
    assert [r["name"] for r in led.runs()] == ["a", "b"]
    assert [r["name"] for r in led.runs("b")] == ["b"]
    assert [e["epoch"] for e in led.evals("b")] == [0, 1]
    assert len(led.evals()) == 3 and len(led.evals("a")) == 1 and led.evals("zzz") == []
    assert [x["run"] for x in led.exports("a")] == ["a"]
    assert [p["run"] for p in led.profiles("b")] == ["b"]


def _writer(root: str, tag: str, barrier) -> None:
    led = Ledger(root)
    barrier.wait()
    for i in range(N_EVALS):
        led.record_eval(f"run-{tag}", epoch=i, metrics={"top1": i / N_EVALS})
        if i % (N_EVALS // N_PROFILES) == 0:
            _profile(led, f"run-{tag}", iterations=i)
    led.record_run("shared", stage=tag, status="done")


def test_two_writer_processes(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), tag, barrier)) for tag in ("x", "y")]
    for p in procs:
        p.start()
    led = Ledger(tmp_path)
    while any(p.is_alive() for p in procs):  # reads keep working while the others write
        assert len(led.evals()) <= 2 * N_EVALS
        time.sleep(0.02)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for tag in ("x", "y"):
        assert [e["epoch"] for e in led.evals(f"run-{tag}")] == list(range(N_EVALS))
        assert len(led.profiles(f"run-{tag}")) == N_PROFILES
    assert len(led.runs("shared")) == 1
    with sqlite3.connect(tmp_path / LEDGER_FILE) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reads_while_a_write_is_open(tmp_path):
    led = Ledger(tmp_path)
    led.record_eval("a", epoch=0)
    conn = sqlite3.connect(tmp_path / LEDGER_FILE, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO evals (run, epoch) VALUES ('a', 1)")
    assert [e["epoch"] for e in led.evals()] == [0]  # not blocked, sees only committed rows
    conn.execute("COMMIT")
    conn.close()
    assert [e["epoch"] for e in led.evals()] == [0, 1]


def test_older_schema_is_migrated_and_rows_survive(tmp_path):
    OLD = "2024-01-01T00:00:00+00:00"
    # An unversioned (v0) ledger: no meta table, a runs table without recipe/summary, an evals table.
    with sqlite3.connect(tmp_path / LEDGER_FILE) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, stage TEXT, "
                     "status TEXT, path TEXT, created TEXT, updated TEXT)")
        conn.execute("CREATE TABLE evals (id INTEGER PRIMARY KEY, run TEXT NOT NULL, epoch INTEGER, "
                     "split TEXT, metrics TEXT, created TEXT)")
        conn.execute("INSERT INTO runs (name, stage, status, created, updated) VALUES (?, ?, ?, ?, ?)",
                     ("old", "distill", "done", OLD, OLD))
        conn.execute("INSERT INTO evals (run, epoch, split, metrics) VALUES (?, ?, ?, ?)",
                     ("old", 5, "val", '{"top1": 0.5}'))
    conn.close()

    led = Ledger(tmp_path)
    (run,) = led.runs()
    assert (run["name"], run["stage"], run["recipe"]) == ("old", "distill", None)
    assert led.evals("old")[0]["metrics"] == {"top1": 0.5}
    led.record_run("old", summary={"top1": 0.5})  # the new column and the upsert's unique index exist
    assert led.runs("old")[0]["summary"] == {"top1": 0.5}
    assert led.runs("old")[0]["created"] == OLD
    _export(led, "old")
    _profile(led, "old")
    with sqlite3.connect(tmp_path / LEDGER_FILE) as conn:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert version == str(SCHEMA_VERSION)
    conn.close()


def test_newer_schema_is_refused(tmp_path):
    Ledger(tmp_path).record_eval("a", epoch=0)
    with sqlite3.connect(tmp_path / LEDGER_FILE) as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(EdgevitError) as err:
        Ledger(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"version {SCHEMA_VERSION + 1}" in msg
    assert f"up to {SCHEMA_VERSION}" in msg and "upgrade edgevit" in msg


@pytest.mark.parametrize("content", [b"this is not a database\n" * 100, b"junk"])
def test_garbage_file_is_refused(tmp_path, content):
    (tmp_path / LEDGER_FILE).write_bytes(content)
    with pytest.raises(EdgevitError, match="not an SQLite database") as err:
        Ledger(tmp_path)
    assert "\n" not in str(err.value)
    assert (tmp_path / LEDGER_FILE).read_bytes() == content  # left untouched


@pytest.mark.parametrize("name", ["", "a b", "../x", "x/y", ".", "..", "é", "a;drop"])
def test_bad_run_name_is_refused(tmp_path, name):
    with pytest.raises(EdgevitError, match="letters, digits") as err:
        run_dir(tmp_path, name)
    assert "\n" not in str(err.value)
    with pytest.raises(EdgevitError):
        Ledger(tmp_path).record_eval(name, epoch=0)


def test_run_dir_creates_folder(tmp_path):
    path = run_dir(tmp_path / "runs", "deit-tiny_01.v2")
    assert path == tmp_path / "runs" / "deit-tiny_01.v2" and path.is_dir()
    assert run_dir(tmp_path / "runs", "deit-tiny_01.v2") == path  # idempotent
