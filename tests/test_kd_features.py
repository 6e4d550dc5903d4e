"""Feature distillation on tiny models at 32 px: projectors train and resume with the student but
never become part of it; bad layer specs and a cache with a feature loss are one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from edgevit.config import DistillConfig, Recipe
from edgevit.distill.pipeline import distill
from edgevit.errors import EdgevitError
from edgevit.models.checkpoint import load_student
from edgevit.models.students import create_student, student_kwargs
from edgevit.models.teachers import Teacher
from edgevit.train import FeatureDistillationTask

STUDENT = "deit_tiny_distilled_patch16_224"
SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def recipe(kind: str, **distill) -> Recipe:
    return Recipe.model_validate(
        {
            "name": kind,
            "epochs": 1,
            "amp": "off",
            "channels_last": False,
            "fused_attn": True,
            "data": {"spec": "digits", "img_size": 32, "batch_size": 64},
            "aug": {"auto_augment": None, "hflip": 0.0, "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0, "crop_pct": 1.0},
            "teacher": {
                "names": ["resnet10t"],
                "pretrained": False,
                "finetune_epochs": 0,
                "amp": "off",
                "channels_last": False,
                "fused_attn": False,
            },
            "student": {"name": STUDENT, "patch_size": 8, "drop_path": 0.0, "kwargs": SMALL},
            "distill": {"type": kind, **distill},
            "optim": {"lr": 0.004, "warmup_epochs": 0},
        }
    )


def test_feature_kd_run_exports_a_student_like_a_hard_distilled_one(tmp_path: Path):
    logs: list[str] = []
    distill(recipe("hard"), tmp_path / "hard", log=logs.append)
    features = {"layers": [{"teacher": "layer3", "student": "blocks.1"}], "loss": "cosine"}
    summary = distill(recipe("feature", features=features), tmp_path / "feature", log=logs.append)
    assert any("feature distillation: student blocks.1 -> layer3 teacher (cosine)" in line for line in logs)
    hard, _ = load_student(tmp_path / "hard")
    feat, meta = load_student(tmp_path / "feature")
    assert meta["distill"] == "feature" and summary["distillation"] == "feature"
    assert set(feat.state_dict()) == set(hard.state_dict())
    assert sum(p.numel() for p in feat.parameters()) == sum(p.numel() for p in hard.parameters())
    assert not feat._forward_hooks and not any(m._forward_hooks for m in feat.modules())
    ckpt = torch.load(tmp_path / "feature" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["model"]) == set(hard.state_dict())  # the student alone as `model`
    proj = ckpt["task_state"]["projectors"]
    assert proj["0.weight"].shape == (256, 32, 1, 1)  # student blocks.1 (32 ch) -> teacher layer3 (256 ch)
    row = json.loads((tmp_path / "feature" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_feature_loss"] > 0 and torch.isfinite(torch.tensor(row["train_loss"]))


def small_pair():
    torch.manual_seed(0)
    student = create_student(STUDENT, student_kwargs(STUDENT, 10, 32, 8, 0.0, SMALL))
    return student, Teacher([timm.create_model("resnet10t", num_classes=10)], ["resnet10t"])


def test_default_layers_pair_the_deepest_stage_with_the_last_block():
    student, teacher = small_pair()
    task = FeatureDistillationTask.from_config(student, teacher, DistillConfig(type="feature"), img_size=32)
    assert task.pairs == ["blocks.1 -> layer4"]
    assert tuple(task.get_task_state()["projectors"]["0.weight"].shape) == (512, 32, 1, 1)
    task.remove_hooks()


@pytest.mark.parametrize(
    "layer,message",
    [
        ({"teacher": "layer9", "student": "blocks.1"}, "the teacher has no layer 'layer9'; valid: act1, layer1"),
        ({"teacher": "layer4", "student": "head"}, "the student's layer 'head' gives (2, 10), not a feature map"),
    ],
)
def test_bad_feature_layers_are_one_line_naming_the_layer(layer, message):
    student, teacher = small_pair()
    d = DistillConfig(type="feature", features={"layers": [layer]})
    with pytest.raises(EdgevitError) as err:
        FeatureDistillationTask.from_config(student, teacher, d, img_size=32)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_feature_loss_with_the_teacher_cache_on_is_one_line():
    with pytest.raises(ValueError, match="feature loss needs the live teacher") as err:
        DistillConfig(type="feature", cache_teacher=True)
    assert "cache_teacher to auto or false" in str(err.value)
    with pytest.raises(ValueError, match="features section needs type feature"):
        DistillConfig(type="hard", features={"loss": "mse"})


def test_resume_is_exact_with_projectors(tmp_path: Path):
    """Two epochs straight, or one epoch, a stop, and a resume from checkpoint.pt in a fresh process
    state (new task, new projectors): the same student and the same projectors, bit for bit."""
    from edgevit.config import AugConfig, OptimConfig
    from edgevit.data import build_datasets
    from edgevit.train import Hooks, TrainConfig, Trainer

    aug = AugConfig(auto_augment=None, hflip=0.0, color_jitter=0.0, reprob=0.0, mixup=0.0, cutmix=0.0)
    ds = build_datasets({"spec": "digits", "img_size": 32}, aug)
    train, val = torch.utils.data.Subset(ds.train, range(64)), torch.utils.data.Subset(ds.val, range(16))
    cfg = TrainConfig(
        epochs=2,
        batch_size=32,
        workers=0,
        optim=OptimConfig(lr=4e-3, warmup_epochs=0),
        aug=aug,
        num_classes=10,
        amp="off",
        channels_last=False,
        fused_attn=True,
    )
    d = DistillConfig(type="feature", features={"layers": [{"teacher": "layer2", "student": "blocks.0"}]})

    class Stop(Exception): ...

    class StopAfterFirst(Hooks):
        def after_epoch(self, trainer, epoch, row):
            if epoch == 1:
                raise Stop

    def run(ckpt: Path, hooks=(), resume=False):
        student, teacher = small_pair()
        task = FeatureDistillationTask.from_config(student, teacher, d, img_size=32)
        trainer = Trainer(task, train, val, cfg, checkpoint=ckpt, hooks=hooks, log=lambda m: None)
        try:
            trainer.fit(resume=resume)
        except Stop:
            pass
        return student, task.get_task_state()["projectors"]

    straight, straight_proj = run(tmp_path / "a.pt")
    run(tmp_path / "b.pt", hooks=[StopAfterFirst()])
    resumed, resumed_proj = run(tmp_path / "b.pt", resume=True)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in straight.state_dict().items())
    assert all(torch.equal(v, resumed_proj[k]) for k, v in straight_proj.items())
