"""The distillation engine end to end on the embedded default, with tiny models made here."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from edgevit.data import build_datasets
from edgevit.distill.losses import DistillationLoss
from edgevit.models.checkpoint import load_student
from edgevit.models.students import create_student, student_kwargs
from edgevit.runs import Ledger

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}

TINY = {
    "name": "tiny",
    "epochs": 3,
    "seed": 1,
    "data": {"spec": "digits", "img_size": 16, "batch_size": 32},
    "aug": {
        "auto_augment": "rand-m9-mstd0.5-inc1",
        "hflip": 0.0,
        "scale": [0.6, 1.0],
        "color_jitter": 0.0,
        "reprob": 0.25,
        "mixup": 0.8,
        "cutmix": 1.0,
        "smoothing": 0.1,
        "crop_pct": 1.0,
    },
    "teacher": {"names": ["resnet10t"], "finetune_epochs": 1, "finetune_lr": 0.003, "pretrained": False},
    "student": {
        "name": "deit_tiny_distilled_patch16_224",
        "patch_size": 4,
        "kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2},
    },
    "distill": {"type": "hard"},
    "optim": {"lr": 0.004, "warmup_epochs": 1},
}


def write_recipe(tmp_path: Path, **changes) -> Path:
    recipe = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        node = recipe
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def edgevit(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgevit.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=kw.get("timeout", 600),
    )


@pytest.mark.parametrize(
    "name,kwargs", [("pvt_v2_b0", {"depths": (1, 1, 1, 1)}), ("convmixer_256_8_ks5_p2", {"depth": 4})]
)
def test_token_free_students_learn_with_hard_distillation(name, kwargs):
    torch.manual_seed(0)
    ds = build_datasets({"spec": "digits", "img_size": 32}, None)
    x = torch.stack([ds.train[i][0] for i in range(16)])
    y = torch.tensor([ds.train[i][1] for i in range(16)])
    teacher_logits = torch.randn(16, 10)  # any fixed teacher: its argmax is a learnable target
    student = create_student(name, student_kwargs(name, 10, 32, None, 0.0, kwargs))
    student.set_distilled_training(True)
    student.train()
    loss_fn = DistillationLoss(torch.nn.CrossEntropyLoss(), "hard")
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        out = student(x)
        assert isinstance(out, tuple) and out[0].shape == out[1].shape == (16, 10)
        loss = loss_fn(out, y, teacher_logits)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    student.eval()
    with torch.inference_mode():  # inference averages the two heads, one tensor out (what export needs)
        student.set_distilled_training(False)
        assert student(x).shape == (16, 10)


def test_distill_cli_end_to_end_and_ledger(tmp_path):
    out = edgevit("distill", write_recipe(tmp_path, epochs=2), "--out", tmp_path / "runs" / "e2e")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "teacher  resnet10t" in out.stdout and "student  deit_tiny" in out.stdout and "run folder" in out.stdout
    assert "OpenMP: OMP_WAIT_POLICY=PASSIVE from the environment" in out.stdout  # said once the inputs are valid
    run = tmp_path / "runs" / "e2e"
    model, meta = load_student(run)
    assert meta["num_classes"] == 10 and meta["img_size"] == 16 and len(meta["sha256"]) == 64
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["stage"] == "student"] == [1, 2]
    led = Ledger(tmp_path / "runs")
    assert led.runs("e2e")[0]["status"] == "done" and len(led.evals("e2e")) == 2
    assert list((run / "teachers").glob("*.pt"))
    # a second run with the same teacher and data reuses the fine-tuned teacher
    again = edgevit("distill", write_recipe(tmp_path, epochs=1), "--out", tmp_path / "runs" / "again")
    assert again.returncode == 0 and "reusing fine-tuned weights" in again.stdout


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    recipe = write_recipe(tmp_path, epochs=4)
    full = edgevit("distill", recipe, "--out", tmp_path / "runs" / "full")
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevit.cli", "distill", str(recipe), "--out", str(run)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and '"stage": "student", "epoch": 2' in metrics.read_text():
            time.sleep(0.3)  # into epoch 3
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "student.pt").exists()
    (row,) = Ledger(tmp_path / "runs").runs("killed")  # not left "running" forever
    assert row["status"] == "failed" and row["reason"].startswith("interrupted")
    resumed = edgevit("distill", recipe, "--out", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"resuming student at epoch [34] of 4", resumed.stdout + resumed.stderr)
    assert Ledger(tmp_path / "runs").runs("killed")[0]["status"] == "done"
    a = torch.load(tmp_path / "runs" / "full" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "student.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_resume_after_sigkill_in_the_teacher_fine_tune_says_where_it_resumed(tmp_path):
    recipe = write_recipe(tmp_path, epochs=1, **{"teacher.finetune_epochs": 3, "teacher.checkpoint_every_s": 0})
    run = tmp_path / "runs" / "teacher-killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevit.cli", "distill", str(recipe), "--out", str(run)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(run.glob("teachers/*.ckpt")):  # the first teacher epoch is checkpointed
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the teacher finished before it could be killed"
    resumed = edgevit("distill", recipe, "--out", run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"resuming teacher resnet10t at epoch [23] of 3", resumed.stdout + resumed.stderr)
    assert (run / "student.pt").exists() and not list(run.glob("teachers/*.ckpt"))


def test_sigterm_is_an_interruption_recorded_in_the_ledger(tmp_path):
    recipe = write_recipe(tmp_path, epochs=4)
    run = tmp_path / "runs" / "stopped"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevit.cli", "distill", str(recipe), "--out", str(run)],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and '"stage": "student"' in (run / "metrics.jsonl").read_text():
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and not (run / "student.pt").exists()
    (row,) = Ledger(tmp_path / "runs").runs("stopped")
    assert row["status"] == "failed" and "interrupt" in row["reason"], row


DDP_SCRIPT = """
import sys, torch
from edgevit.config import AugConfig, OptimConfig
from edgevit.data import build_datasets
from edgevit.models.students import create_student, student_kwargs
from edgevit.train import DistillationTask, TrainConfig, Trainer, init_distributed
dist = init_distributed()
ds = build_datasets({"spec": "digits", "img_size": 16}, AugConfig(hflip=0, auto_augment=None, mixup=0.8, cutmix=1.0))
torch.manual_seed(dist.rank)  # different initial weights per rank: DDP must broadcast rank 0's
NAME = "deit_tiny_distilled_patch16_224"
model = create_student(NAME, student_kwargs(NAME, 10, 16, 4, 0.1, {"depth": 1, "embed_dim": 32, "num_heads": 2}))
cfg = TrainConfig(epochs=1, batch_size=32, workers=0, optim=OptimConfig(warmup_epochs=0),
                  aug=AugConfig(hflip=0, auto_augment=None), num_classes=10, seed=0, amp="off", channels_last=False)
teacher = lambda x: x.mean(dim=(2, 3))[:, :1].repeat(1, 10) * torch.arange(10.0)
Trainer(DistillationTask(model, teacher, "hard"), torch.utils.data.Subset(ds.train, range(256)), ds.val, cfg,
        dist=dist, log=lambda m: None).fit()
torch.save(model.state_dict(), f"{sys.argv[1]}/rank{dist.rank}.pt")
"""


def test_ddp_two_ranks_keep_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            str(script),
            str(tmp_path),
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    init = create_student(
        "deit_tiny_distilled_patch16_224",
        student_kwargs(
            "deit_tiny_distilled_patch16_224", 10, 16, 4, 0.1, {"depth": 1, "embed_dim": 32, "num_heads": 2}
        ),
    ).state_dict()
    moved = 0
    for k in r0:
        assert torch.allclose(r0[k], r1[k], atol=1e-6), k
        moved += int(not torch.equal(r0[k], init[k]))
    assert moved > 0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    import timm

    d = tmp_path_factory.mktemp("ckpt")
    (d / "junk.pt").write_bytes(b"not a checkpoint")
    torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), d / "wrong.pt")  # teacher is resnet10t
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=10).state_dict(), d / "vit.pt")
    return d


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--student", "deit_tiny_distiled_patch16_224"],
            "unknown timm model 'deit_tiny_distiled_patch16_224'; did you mean deit_tiny_distilled_patch16_224",
        ),
        (["--teacher", "resnet181"], "unknown timm model 'resnet181'"),
        (["--data", "/no/such/folder"], "dataset path /no/such/folder does not exist"),
        (["--resume", "--out", "{tmp}/runs/none"], "holds no started run"),
        (["--teacher-checkpoint", "{ckpt}/junk.pt"], "is not a PyTorch checkpoint"),
        (["--teacher-checkpoint", "{ckpt}/wrong.pt"], "has shape"),
        # a teacher held (teacher.img_size) at a size it cannot take; unpinned, it would be fed its own 224 px
        (["--teacher", "vit_tiny_patch16_224", "--teacher-checkpoint", "{ckpt}/vit.pt"], "cannot take 16x16 inputs"),
    ],
)
def test_bad_input_is_one_line(tmp_path, checkpoints, args, message):
    pinned = {"teacher.img_size": 16} if "cannot take" in message else {}
    args = [a.replace("{ckpt}", str(checkpoints)).replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "runs" / "bad")]
    out = edgevit("distill", write_recipe(tmp_path, epochs=1, **pinned), *args)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert message in out.stderr
    assert not (tmp_path / "runs" / "bad" / "student.pt").exists()


def test_teacher_cache_replays_rounds_exactly(tmp_path):
    """A second student with the same teacher, data and augmentation reads every teacher output from
    the cache (no teacher forward), and hard distillation then trains the very same weights."""
    recipe = write_recipe(tmp_path, epochs=2, **{"distill.cache_teacher": True})
    first = edgevit("distill", recipe, "--out", tmp_path / "runs" / "first")
    second = edgevit("distill", recipe, "--out", tmp_path / "runs" / "second")
    assert first.returncode == 0 and second.returncode == 0, (first.stderr + second.stderr)[-2000:]
    s1 = json.loads((tmp_path / "runs" / "first" / "summary.json").read_text())["cache"]
    s2 = json.loads((tmp_path / "runs" / "second" / "summary.json").read_text())["cache"]
    assert s1["hits"] == 0 and s1["misses"] > 0
    assert s2["misses"] == 0 and s2["hits"] == s1["misses"]
    a = torch.load(tmp_path / "runs" / "first" / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "runs" / "second" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_self_teacher_is_the_student_trained_alone_with_the_next_seed(tmp_path):
    """`--teacher self` trains the student's architecture with the student's own schedule (the
    recipe's epochs and optimizer, not teacher.finetune_*): the teacher of seed S is exactly the
    student that `--distillation none` trains with seed S+1. A second run reuses it."""
    runs = tmp_path / "runs"
    alone = edgevit(
        "distill", write_recipe(tmp_path, epochs=2, seed=2, **{"distill.type": "none"}), "--out", runs / "alone"
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    recipe = write_recipe(tmp_path, epochs=2, seed=1, **{"teacher.names": ["self"]})
    own = edgevit("distill", recipe, "--out", runs / "self")
    assert own.returncode == 0, own.stderr[-2000:]
    assert "teacher self: training deit_tiny_distilled_patch16_224 on the training split for 2 epochs" in own.stdout
    assert "teacher self epoch 2/2" in own.stdout
    teacher = torch.load(next((runs / "self" / "teachers").glob("*.pt")), weights_only=True)
    student_alone = torch.load(runs / "alone" / "student.pt", weights_only=True)["state_dict"]
    assert teacher.keys() == student_alone.keys()
    for k in teacher:
        assert torch.allclose(teacher[k], student_alone[k], atol=1e-5), k
    again = edgevit("distill", recipe, "--out", runs / "self-again")
    assert again.returncode == 0 and "reusing fine-tuned weights" in again.stdout


def test_an_earlier_runs_student_teaches_and_resume_picks_up_between_teacher_and_student(tmp_path):
    """--teacher run:NAME distils from an earlier run's student (frozen, heads averaged, no fine-tune);
    a run stopped after its teacher was ready and before the student's first checkpoint resumes there."""
    runs = tmp_path / "runs"
    first = edgevit("distill", write_recipe(tmp_path, epochs=1, **{"distill.type": "none"}), "--out", runs / "first")
    assert first.returncode == 0, first.stderr[-2000:]
    second = edgevit("distill", write_recipe(tmp_path, epochs=1), "--teacher", "run:first", "--out", runs / "second")
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((runs / "second" / "summary.json").read_text())
    (teacher,) = summary["teachers"]
    assert teacher["source"] == "run first" and teacher["val_top1"] == pytest.approx(
        json.loads((runs / "first" / "summary.json").read_text())["val_top1"], abs=0.01
    )
    assert "fine-tuning" not in second.stdout  # a run's student is used as it is
    assert Ledger(runs).runs("second")[0]["status"] == "done"
    # the state between teacher and student: recipe and ledger row written, no student checkpoint yet
    (runs / "second" / "student.pt").unlink()
    (runs / "second" / "checkpoint.pt").unlink()
    resumed = edgevit("distill", "--resume", "--out", runs / "second")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "the student starts at epoch 1 of 1" in resumed.stdout and (runs / "second" / "student.pt").exists()
    bad = edgevit(
        "distill", write_recipe(tmp_path, epochs=1, **{"teacher.names": ["run:nothing"]}), "--out", runs / "third"
    )
    assert bad.returncode == 2 and "no finished run 'nothing'" in bad.stderr and "first" in bad.stderr


def test_resume_keeps_the_runs_own_recipe(tmp_path):
    run = tmp_path / "runs" / "r"
    (run).mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump(TINY))
    out = edgevit("distill", "--resume", "--out", run, "--epochs", "9")
    assert out.returncode == 2 and "changes epochs" in out.stderr and len(out.stderr.strip().splitlines()) == 1
