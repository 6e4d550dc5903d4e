"""Damage and faults: every file edgevit reads that a user or a crash can damage gives one line naming
the file when it is empty, cut off or not the right format; a disk that fills up during a checkpoint
or an export ends the command with one line, keeps the previous good files, and records the failure."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from edgevit.errors import EdgevitError
from edgevit.runs import Ledger

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
RECIPE = """name: faults
epochs: 6
seed: 0
amp: "off"
channels_last: false
data: {spec: digits, img_size: 16, batch_size: 64}
aug: {auto_augment: null, hflip: 0.0, scale: [0.6, 1.0], color_jitter: 0.0, reprob: 0.0, mixup: 0.0, cutmix: 0.0}
student: {name: deit_tiny_distilled_patch16_224, patch_size: 4, kwargs: {depth: 2, embed_dim: 192, num_heads: 3}}
distill: {type: none}
optim: {lr: 0.002, warmup_epochs: 1}
"""
MB = 1 << 20


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "truncated": data[: len(data) // 2], "garbled": b"\x00\xffnot this kind of file" * 40}[how]
    )


# ------------------------------------------------------------------------------------ damaged files
def _student(tmp: Path) -> Path:
    from test_checkpoint import meta

    from edgevit.models.checkpoint import save_student
    from edgevit.models.students import create_student, student_kwargs

    kwargs = student_kwargs(
        "deit_tiny_distilled_patch16_224", 10, 32, 8, 0.0, {"depth": 1, "embed_dim": 32, "num_heads": 2}
    )
    save_student(tmp / "student.pt", create_student("deit_tiny_distilled_patch16_224", kwargs), meta(kwargs))
    return tmp / "student.pt"


def _readers(tmp: Path) -> dict[str, tuple[Path, Callable[[], object]]]:
    """kind -> (a good file of that kind, the edgevit call that reads it)."""
    from edgevit.artifact import Artifact
    from edgevit.config import load_recipe, load_target
    from edgevit.distill.cache import TeacherCache
    from edgevit.models.checkpoint import load_student
    from edgevit.paths import shipped
    from edgevit.train.trainer import load_checkpoint

    (tmp / "recipe.yaml").write_text((shipped("recipes") / "quickstart.yaml").read_text())
    (tmp / "target.yaml").write_text((shipped("targets") / "onnx.yaml").read_text())
    art = tmp / "export"
    art.mkdir()
    Artifact("onnx", "fp32", art, ["model.onnx"], [1, 3, 32, 32], {}).write_manifest()
    student = _student(tmp)
    torch.save({"model": {}, "epoch": 1}, tmp / "checkpoint.pt")
    cache = TeacherCache(tmp / "cache", 5, 10)
    cache.put(0, torch.randn(4, 10))
    cache.finish_round(0)
    return {
        "recipe": (tmp / "recipe.yaml", lambda: load_recipe(str(tmp / "recipe.yaml"))),
        "target": (tmp / "target.yaml", lambda: load_target(str(tmp / "target.yaml"))),
        "manifest": (art / "manifest.json", lambda: Artifact.load(art)),
        "student checkpoint": (student, lambda: load_student(student)),
        "training checkpoint": (tmp / "checkpoint.pt", lambda: load_checkpoint(tmp / "checkpoint.pt")),
        "teacher-logit cache": (cache._path(0), lambda: TeacherCache(tmp / "cache", 5, 10).has(0)),
    }


@pytest.mark.parametrize("how", ["empty", "truncated", "garbled"])
def test_each_damaged_file_kind_is_one_line(tmp_path: Path, how: str, capsys) -> None:
    for kind, (path, read) in _readers(tmp_path).items():
        damage(path, how)
        if kind == "teacher-logit cache":  # derived data: said in one line, removed, recomputed
            assert read() is False and not path.exists()
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and str(path) in err and "recomputed" in err, (kind, how, err)
            continue
        if kind in ("recipe", "target") and how == "truncated":
            path.write_text(path.read_text().split("\n", 3)[-1][:40] + " [unclosed")  # YAML cut mid-value
        with pytest.raises(EdgevitError) as err:
            read()
        msg = str(err.value)
        assert "\n" not in msg and str(path.name) in msg, (kind, how, msg)


def test_damaged_teacher_checkpoint_from_the_user(tmp_path: Path) -> None:
    import timm

    from edgevit.models.teachers import load_checkpoint_into

    state = timm.create_model("resnet10t", num_classes=10).state_dict()
    for how in ("empty", "truncated", "garbled"):
        torch.save(state, tmp_path / "t.pt")
        damage(tmp_path / "t.pt", how)
        with pytest.raises(EdgevitError) as err:
            load_checkpoint_into(timm.create_model("resnet10t", num_classes=10), tmp_path / "t.pt")
        assert "\n" not in str(err.value) and "t.pt" in str(err.value), how


# ------------------------------------------------------------------------------------ a full disk
def _limited(limit_bytes: int) -> Callable[[], None]:
    """preexec: a file-size limit (writes past it fail with EFBIG instead of killing the process)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def _ctrl_c_works() -> None:
    """preexec: a child of a background job inherits SIGINT ignored, and Python then leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def edgevit(*args: str, limit: int | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "edgevit.cli", *args]
    kw = dict(cwd=ROOT, env=ENV, preexec_fn=_limited(limit) if limit else _ctrl_c_works)
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


def test_disk_full_during_a_checkpoint_keeps_the_last_good_one(tmp_path: Path) -> None:
    recipe = tmp_path / "faults.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "runs" / "full"
    proc = edgevit("distill", str(recipe), "--out", str(run), wait=False)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (run / "checkpoint.pt").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the first checkpoint
    assert proc.wait(120) == 130
    assert Ledger(run.parent).runs("full")[0]["status"] == "failed"
    assert Ledger(run.parent).runs("full")[0]["reason"] == "interrupted"
    good = torch.load(run / "checkpoint.pt", weights_only=True)
    size = (run / "checkpoint.pt").stat().st_size
    assert size > 4 * MB
    out = edgevit("distill", "--resume", "--out", str(run), limit=size // 2)  # the next checkpoint cannot fit
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = out.stderr.strip().splitlines()
    assert "could not write" in line and "checkpoint.pt" in line and "kept" in line
    kept = torch.load(run / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == good["epoch"] and all(
        torch.equal(kept["model"][k], good["model"][k]) for k in good["model"]
    )
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")] and not (run / "student.pt").exists()
    row = Ledger(run.parent).runs("full")[0]
    assert row["status"] == "failed" and "could not write" in row["reason"]


def test_disk_full_during_an_export_keeps_the_previous_export(tmp_path: Path) -> None:
    from conftest import train_tiny_student

    run = train_tiny_student(
        tmp_path / "runs" / "exp", extra={"depth": 2, "embed_dim": 192, "num_heads": 3, "patch_size": 8}, steps=5
    )
    first = edgevit("export", str(run), "--target", "onnx", "--precision", "fp32")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = run / "exports" / "onnx" / "fp32"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert (folder / "model.onnx").stat().st_size > 2 * MB
    out = edgevit("export", str(run), "--target", "onnx", "--precision", "fp32", limit=MB)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("edgevit: error")]  # after the progress line
    assert "could not write" in line and "kept" in line, out.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the previous export, untouched
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fp32"]  # no temporary folder left behind
    rows = Ledger(run.parent).exports("exp")
    assert rows[-1]["verified"] is False and rows[-1]["note"].startswith("failed:") and rows[-1]["path"] is None
    assert json.loads((folder / "manifest.json").read_text())["verification"]["verified"] is True


LEDGER_FILLER = """
import sys
from edgevit.errors import EdgevitError
from edgevit.runs import Ledger
ledger = Ledger(sys.argv[1])
try:
    for epoch in range(5000):
        ledger.record_eval("full", epoch=epoch, metrics={"note": "x" * 2000})
except EdgevitError as e:
    print(epoch, e)
"""


def test_disk_full_during_a_ledger_write_is_one_line_and_keeps_the_rows(tmp_path: Path) -> None:
    Ledger(tmp_path).record_run("full", kind="distill", status="running")
    size = (tmp_path / "ledger.sqlite").stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", LEDGER_FILLER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=ENV,
        preexec_fn=_limited(size + 256 * 1024),
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    (line,) = out.stdout.strip().splitlines()
    written, message = line.split(" ", 1)
    assert int(written) > 0 and "could not write the runs ledger" in message and "ledger.sqlite" in message
    assert len(Ledger(tmp_path).evals("full")) == int(written)  # every committed row is still there
