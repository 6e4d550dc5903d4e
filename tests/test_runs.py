"""The runs ledger against real SQLite: round trips, concurrent writers, schema versions and the
v1 -> v2 migration of a real v1 file, failed runs, parents, joins, bad input and damaged files."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgevit.errors import EdgevitError
from edgevit.runs import LEDGER_FILE, SCHEMA_VERSION, Ledger, run_dir

N_EVALS, N_PROFILES = 200, 20


def _export(led: Ledger, run: str = "a", **kw) -> int:
    args = dict(
        target="onnx",
        format="onnx",
        precision="fp32",
        path="runs/a/exports/onnx/fp32",
        size_bytes=1234,
        seconds=1.5,
        verified=True,
        agreement=0.99,
        max_abs_diff=1e-4,
        top1=0.8,
        note="ok",
    )
    return led.record_export(run, **{**args, **kw})


def _profile(led: Ledger, run: str = "a", **kw) -> int:
    args = dict(
        target="onnx",
        format="onnx",
        precision="fp32",
        runtime="onnxruntime",
        device="local",
        threads=2,
        batch=1,
        iterations=50,
        warmup=5,
        median_ms=3.0,
        p90_ms=3.5,
        p99_ms=4.0,
        mean_ms=3.1,
        throughput=320.0,
        peak_mem_mb=None,
        extra={"provider": "CPU"},
    )
    return led.record_profile(run, **{**args, **kw})


def test_round_trip_each_record(tmp_path):
    led = Ledger(tmp_path)
    assert (tmp_path / LEDGER_FILE).is_file()
    rid = led.record_run(
        "a",
        kind="distill",
        status="done",
        path=tmp_path / "a",
        recipe={"student": {"name": "deit_tiny"}},
        summary={"top1": 0.8},
    )
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
    first = led.record_run("a", kind="distill", status="running", recipe={"epochs": 3})
    (before,) = led.runs()
    time.sleep(0.01)
    again = led.record_run("a", kind="prune", status="done", summary={"top1": 0.7})
    (after,) = led.runs()
    assert again == first
    assert after["created"] == before["created"] and after["updated"] > before["updated"]
    assert (after["kind"], after["status"]) == ("prune", "done")
    assert after["recipe"] == {"epochs": 3}  # None leaves the old value
    assert after["summary"] == {"top1": 0.7}


def test_filter_by_run(tmp_path):
    led = Ledger(tmp_path)
    for name in ("a", "b"):
        led.record_run(name, kind="distill")
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
    led.record_run("shared", kind="distill", status="done", summary={"by": tag})


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
        conn.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT NOT NULL, stage TEXT, "
            "status TEXT, path TEXT, created TEXT, updated TEXT)"
        )
        conn.execute(
            "CREATE TABLE evals (id INTEGER PRIMARY KEY, run TEXT NOT NULL, epoch INTEGER, "
            "split TEXT, metrics TEXT, created TEXT)"
        )
        conn.execute(
            "INSERT INTO runs (name, stage, status, created, updated) VALUES (?, ?, ?, ?, ?)",
            ("old", "distill", "done", OLD, OLD),
        )
        conn.execute(
            "INSERT INTO evals (run, epoch, split, metrics) VALUES (?, ?, ?, ?)", ("old", 5, "val", '{"top1": 0.5}')
        )
    conn.close()

    led = Ledger(tmp_path)
    (run,) = led.runs()
    assert (run["name"], run["kind"], run["recipe"]) == ("old", "distill", None)
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


# ------------------------------------------------------------------------------------- schema v2
V1_FILE = Path(__file__).parent / "data" / "ledger_v1.sqlite"  # written by the v1 code, see its SOURCES note


def _raw(path: Path, table: str) -> list[dict]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY id")]
    conn.close()
    return rows


def _v1_copy(tmp_path: Path) -> Path:
    shutil.copyfile(V1_FILE, tmp_path / LEDGER_FILE)
    # export 3 (onnx, folder `int8`, the target's default scheme) has its manifest where the runs folder is now
    folder = tmp_path / "deit-a" / "exports" / "onnx" / "int8"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "onnx", "quantization": {"scheme": "static"}}))
    return tmp_path


def test_v1_ledger_file_is_migrated(tmp_path):
    old = {t: _raw(V1_FILE, t) for t in ("runs", "evals", "exports", "profiles")}
    led = Ledger(_v1_copy(tmp_path))
    new = {t: _raw(tmp_path / LEDGER_FILE, t) for t in old}
    changed = {"runs": {"stage"}, "exports": {"precision"}, "profiles": set(), "evals": set()}
    for table, rows in old.items():  # every row and every untouched value survived
        assert [r["id"] for r in new[table]] == [r["id"] for r in rows]
        for before, after in zip(rows, new[table]):
            assert {k: v for k, v in before.items() if k not in changed[table]} == {
                k: after[k] for k in before if k not in changed[table]
            }
    assert [r["kind"] for r in new["runs"]] == [r["stage"] for r in old["runs"]] == ["distill", "distill"]
    assert [r["status"] for r in led.runs()] == ["done", "running"]  # the interrupted run stays as it was
    assert all(r["parent"] is None and r["reason"] is None for r in led.runs())

    ex = {r["id"]: r for r in led.exports()}
    assert [(ex[i]["precision"], ex[i]["scheme"], ex[i]["method"]) for i in sorted(ex)] == [
        ("fp32", None, None),
        ("fp32", None, None),
        ("int8", "static", "ptq"),  # plain int8: the scheme read from its manifest
        ("int8", "static", "ptq"),  # int8-static split
        ("int8", None, "ptq"),
    ]  # plain int8 without a manifest: unknown
    assert all(r["extra"] is None for r in ex.values())

    pr = {r["id"]: r for r in led.profiles()}
    assert {i: r["export_id"] for i, r in pr.items()} == {1: None, 2: 1, 3: 2, 4: 4, 5: 5}
    assert all(r["load_ms"] is None and r["precision"] in ("fp32", "int8") for r in pr.values())
    assert pr[4]["extra"]["artifact"].endswith("tflite-mobile/int8-static")

    with sqlite3.connect(tmp_path / LEDGER_FILE) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"runs_parent", "profiles_export", "runs_name"} <= indexes
    conn.close()
    # Opened again: nothing migrates twice, and the new columns take writes.
    led = Ledger(tmp_path)
    assert led.runs() == Ledger(tmp_path).runs() and len(led.exports()) == 5
    led.record_run("deit-a-pruned", kind="prune", parent="deit-a", status="done")
    assert [r["name"] for r in led.children("deit-a")] == ["deit-a-pruned"]


def test_export_profiles_joins_on_export_id(tmp_path):
    led = Ledger(_v1_copy(tmp_path))
    rows = led.export_profiles("deit-a")
    assert [(r["id"], r["profile_id"]) for r in rows] == [(1, 2), (2, 3), (3, None), (4, 4), (5, 5)]
    r = rows[3]
    assert (r["target"], r["precision"], r["scheme"], r["median_ms"], r["runtime"]) == (
        "tflite-mobile",
        "int8",
        "static",
        2.0,
        "tflite rt",
    )
    assert r["profile_extra"]["artifact"].endswith("int8-static") and r["verified"] is True
    assert rows[2]["median_ms"] is None and rows[2]["profile_created"] is None
    # A fresh export timed twice gives two rows; profiles of other runs stay out.
    xid = _export(led, "deit-a", precision="int8", scheme="dynamic", method="ptq", extra={"layers_in_float": 3})
    _profile(led, "deit-a", precision="int8", export_id=xid, load_ms=40.0)
    _profile(led, "deit-a", precision="int8", export_id=xid, threads=4)
    _profile(led, "other", export_id=xid)
    mine = [r for r in led.export_profiles("deit-a") if r["id"] == xid]
    assert [(r["threads"], r["load_ms"]) for r in mine] == [(2, 40.0), (4, None), (2, None)]
    assert mine[0]["extra"] == {"layers_in_float": 3} and mine[0]["scheme"] == "dynamic"
    assert len(led.export_profiles()) == len(led.export_profiles("deit-a")) == 8
    assert led.export_profiles("nobody") == []


def test_latest_export_by_folder_or_precision(tmp_path):
    led = Ledger(_v1_copy(tmp_path))
    assert led.latest_export("deit-a", target="onnx", folder="fp32")["id"] == 2
    assert led.latest_export("deit-a", target="tflite-mobile", folder="int8-static")["id"] == 4
    assert led.latest_export("deit-a", target="tflite-mobile", precision="int8")["id"] == 5
    assert led.latest_export("deit-a", target="openvino-cpu", precision="fp32") is None


def test_recording_marks_failed_with_reason_and_reraises(tmp_path):
    led = Ledger(tmp_path)
    with pytest.raises(ValueError, match="bad batch"):
        with led.recording("a", kind="distill", path=tmp_path / "a", recipe={"epochs": 1}):
            assert led.runs("a")[0]["status"] == "running"
            raise ValueError("bad batch size 0\nsecond line of detail")
    (run,) = led.runs("a")
    assert (run["status"], run["reason"], run["kind"]) == ("failed", "ValueError: bad batch size 0", "distill")
    assert run["recipe"] == {"epochs": 1}

    with pytest.raises(KeyboardInterrupt):
        with led.recording("b", kind="prune", parent="a"):
            raise KeyboardInterrupt
    assert (led.runs("b")[0]["status"], led.runs("b")[0]["reason"]) == ("failed", "interrupted")

    with pytest.raises(EdgevitError):
        with led.recording("c", kind="distill"):
            raise EdgevitError("")
    assert led.runs("c")[0]["reason"] == "EdgevitError"

    # Resumed: running again clears the old reason; the body records its own done.
    with led.recording("a", kind="distill") as same:
        assert led.runs("a")[0]["reason"] is None
        same.record_run("a", status="done", summary={"val_top1": 50.0})
    (run,) = led.runs("a")
    assert (run["status"], run["reason"], run["summary"]) == ("done", None, {"val_top1": 50.0})


def test_children_and_parents(tmp_path):
    led = Ledger(tmp_path)
    led.record_run("base", kind="distill", status="done")
    led.record_run("base-p50", kind="prune", parent="base")
    led.record_run("base-q", kind="distill", parent="base")  # e.g. distilled from run:base
    led.record_run("base-p50-q", kind="distill", parent="base-p50")
    led.record_run("orphan", kind="prune", parent="gone-run")  # a parent outside this ledger is kept
    assert [r["name"] for r in led.children("base")] == ["base-p50", "base-q"]
    assert [r["name"] for r in led.children("base-p50")] == ["base-p50-q"]
    assert led.runs("orphan")[0]["parent"] == "gone-run" and [r["name"] for r in led.children("gone-run")] == ["orphan"]
    assert led.children("base-q") == []
    led.record_run("base-q", status="done")  # an update without parent keeps it
    assert led.runs("base-q")[0]["parent"] == "base"
    assert [r["name"] for r in led.runs(kind="distill")] == ["base", "base-q", "base-p50-q"]
    with pytest.raises(EdgevitError, match="unknown run kind 'quantize'"):  # no stage writes such a run
        led.record_run("y", kind="quantize")
    with pytest.raises(EdgevitError, match="own parent"):
        led.record_run("x", kind="prune", parent="x")
    with pytest.raises(EdgevitError, match="letters, digits"):
        led.record_run("x", kind="prune", parent="../etc")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"kind": "export"}, "run kind 'export': use one of distill, prune"),
        ({"kind": "Distill"}, "run kind"),
        ({"status": "finished"}, "run status 'finished': use one of running, done, failed"),
    ],
)
def test_kind_and_status_are_validated(tmp_path, kwargs, words):
    led = Ledger(tmp_path)
    with pytest.raises(EdgevitError) as err:
        led.record_run("a", **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert led.runs() == []
    with pytest.raises(EdgevitError, match="run kind"):
        led.runs(kind="train")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"precision": "int8-static"}, "export precision 'int8-static'"),
        ({"precision": "int8", "scheme": "per-tensor"}, "quantization scheme 'per-tensor'"),
        ({"precision": "int8", "method": "gptq"}, "quantization method 'gptq'"),
        ({"precision": "fp16", "scheme": "weight-only"}, "no quantization scheme"),
    ],
)
def test_export_fields_are_validated(tmp_path, kwargs, words):
    led = Ledger(tmp_path)
    with pytest.raises(EdgevitError) as err:
        _export(led, **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert led.exports() == []


def _closed_ledger(tmp_path: Path) -> Path:
    led = Ledger(tmp_path)
    for i in range(300):  # a few dozen pages
        led.record_eval("a", epoch=i, metrics={"top1": i / 300, "note": "x" * 100})
    path = tmp_path / LEDGER_FILE
    assert not path.with_name(LEDGER_FILE + "-wal").exists()  # checkpointed and closed
    return path


@pytest.mark.parametrize("cut_at", ["inside the header", "half way", "one byte short"])
def test_truncated_file_is_refused_untouched(tmp_path, cut_at):
    path = _closed_ledger(tmp_path)
    data = path.read_bytes()
    cut = data[: {"inside the header": 60, "half way": len(data) // 2, "one byte short": len(data) - 1}[cut_at]]
    path.write_bytes(cut)
    with pytest.raises(EdgevitError) as err:
        Ledger(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "damaged (truncated: " in msg and "move it aside" in msg
    assert path.read_bytes() == cut
    assert sorted(p.name for p in tmp_path.iterdir()) == [LEDGER_FILE]  # no WAL or journal made next to it


def test_damaged_page_is_one_line(tmp_path):
    path = _closed_ledger(tmp_path)
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)  # every page after the first: b-trees now point at garbage
    path.write_bytes(bytes(data))
    with pytest.raises(EdgevitError) as err:
        led = Ledger(tmp_path)
        led.evals()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "damaged" in msg and "move it aside" in msg
    assert path.read_bytes() == bytes(data)


def test_empty_file_is_a_new_ledger(tmp_path):
    (tmp_path / LEDGER_FILE).write_bytes(b"")
    led = Ledger(tmp_path)
    led.record_run("a", kind="distill", status="done")
    assert [r["name"] for r in led.runs()] == ["a"]


def test_v1_profile_naming_its_folder_is_joined(tmp_path):
    # v1 trtexec rows took their precision from the CLI, i.e. the export folder's name.
    _v1_copy(tmp_path)
    conn = sqlite3.connect(tmp_path / LEDGER_FILE)
    with conn:
        conn.execute(
            "INSERT INTO profiles (run, target, format, precision, runtime, median_ms, extra, created) "
            "VALUES ('deit-a', 'tflite-mobile', 'tflite', 'int8-static', 'trtexec', 1.0, '{}', "
            "'2100-01-01T00:00:00.000+00:00')"
        )
    conn.close()
    row = Ledger(tmp_path).profiles()[-1]
    assert (row["precision"], row["export_id"], row["extra"]) == ("int8", 4, {"folder": "int8-static"})


def test_a_killed_runs_row_reads_failed_and_a_running_folder_is_not_run_twice(tmp_path):
    """SIGKILL runs no except clause, so a killed run's row stays `running`; the lock its process held
    on the run folder dies with it, and the next read records the row failed, interrupted. While a
    run holds its folder, the row stays running and a second recording of that folder is refused."""
    code = (
        "import os, signal, sys; from edgevit.runs import Ledger; led = Ledger(sys.argv[1])\n"
        "with led.recording('killed', kind='distill', path=sys.argv[1] + '/killed'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    led = Ledger(tmp_path)
    (run,) = led.runs("killed")
    assert run["status"] == "failed" and run["reason"].startswith("interrupted: its process ended")
    assert "--resume" in run["reason"]
    assert Ledger(tmp_path).runs("killed")[0]["status"] == "failed"  # recorded, not just shown

    with led.recording("live", kind="distill", path=tmp_path / "live"):
        assert led.runs("live")[0]["status"] == "running"  # its lock is held: alive
        with pytest.raises(EdgevitError, match="being run by another process"):
            with led.recording("live", kind="distill", path=tmp_path / "live"):
                pass
        led.record_run("live", status="done")
    assert led.runs("live")[0]["status"] == "done"
