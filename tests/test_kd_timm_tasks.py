"""timm's own tasks (timm.task) run in edgevit's trainer unchanged: two optimizer steps each on the
embedded digits with tiny models; the loss stays finite and the weights move."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.task import ClassificationTask as TimmClassificationTask
from timm.task import FeatureDistillationTask

from edgevit.config import AugConfig, OptimConfig
from edgevit.data import build_datasets
from edgevit.train import TrainConfig, Trainer
from edgevit.train.trainer import load_checkpoint

AUG = AugConfig(auto_augment=None, hflip=0.0, scale=(0.6, 1.0), color_jitter=0.0, reprob=0.0, mixup=0.0, cutmix=0.0)


@pytest.fixture(scope="module")
def digits():
    ds = build_datasets({"spec": "digits", "img_size": 16}, AUG)
    return torch.utils.data.Subset(ds.train, range(64)), torch.utils.data.Subset(ds.val, range(32))


def cfg() -> TrainConfig:  # 64 images, batch 32, 1 epoch: two optimizer steps
    return TrainConfig(
        epochs=1,
        batch_size=32,
        workers=0,
        optim=OptimConfig(lr=4e-3, warmup_epochs=0, clip_grad=1.0),
        aug=AUG,
        num_classes=10,
        amp="off",
        channels_last=False,
        fused_attn=True,
        precise_bn=False,
    )


def student() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "deit_tiny_patch16_224", img_size=16, patch_size=4, depth=1, embed_dim=32, num_heads=2, num_classes=10
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return all(not torch.equal(before[k], v) for k, v in module.state_dict().items() if k.endswith("weight"))


def test_timms_classification_task_trains_in_the_trainer(digits):
    train, val = digits
    model = student()
    before = snapshot(model)
    trainer = Trainer(TimmClassificationTask(model, verbose=False), train, val, cfg(), log=lambda m: None)
    row = trainer.fit()
    assert trainer.update == 2 and trainer.model is model
    assert torch.isfinite(torch.tensor(row["train_loss"])) and "train_distill_loss" not in row
    assert changed(before, model)


def test_timms_feature_distillation_task_trains_student_and_projection(digits, tmp_path: Path):
    """timm's FeatureDistillationTask: a student + projection trained together against a ResNet
    teacher's pooled features; the checkpoint holds the student as `model` and the projection as
    the task's own state, as timm's train.py keeps them."""
    train, val = digits
    model = student()
    torch.manual_seed(1)
    teacher = timm.create_model("resnet10t", num_classes=10)
    task = FeatureDistillationTask(model, teacher, distill_loss_weight=1.0, task_loss_weight=1.0, verbose=False)
    projection = task.trainable_module.projection
    assert projection is not None  # 32 -> 512
    before, proj_before, teacher_before = snapshot(model), snapshot(projection), snapshot(teacher)
    trainer = Trainer(task, train, val, cfg(), checkpoint=tmp_path / "ckpt.pt", log=lambda m: None)
    row = trainer.fit()
    assert trainer.update == 2 and trainer.model is model
    assert torch.isfinite(torch.tensor([row["train_loss"], row["train_distill_loss"]])).all()
    assert row["train_loss"] == pytest.approx(row["train_task_loss"] + row["train_distill_loss"], rel=1e-4)
    assert changed(before, model) and changed(proj_before, projection)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())  # frozen
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert set(state["model"]) == set(model.state_dict())
    assert torch.equal(state["task_state"]["projection"]["weight"], projection.weight)
