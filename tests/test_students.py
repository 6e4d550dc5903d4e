"""Swapping the student just works: every family the README names trains with the quickstart recipe
when only --student changes, and is the architecture its name says (the recipe's DeiT-only options
stay with the recipe's own student)."""

from __future__ import annotations

import argparse

import pytest
import torch

from edgevit.data import build_datasets
from edgevit.distill.command import add_arguments, resolve_recipe
from edgevit.distill.pipeline import student_build
from edgevit.models.students import create_student
from edgevit.train import DistillationTask, TrainConfig, Trainer


def quickstart_with(*flags: str):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return resolve_recipe(p.parse_args(list(flags)))


def shape_of(model: torch.nn.Module) -> dict:
    m = getattr(model, "backbone", model)
    if hasattr(m, "blocks") and hasattr(m, "embed_dim"):
        return {"depth": len(m.blocks), "dim": m.embed_dim}
    if hasattr(m, "stages"):
        return {
            "depths": [len(s.blocks) for s in m.stages],
            "dims": [s.blocks[0].norm1.normalized_shape[0] for s in m.stages],
        }
    if hasattr(m, "layer4"):
        return {"layers": [len(getattr(m, f"layer{i}")) for i in range(1, 5)]}
    return {"depth": len(m.blocks), "dim": m.num_features}


EXPECTED = [
    ("deit_tiny_distilled_patch16_224", "hard", {"depth": 12, "dim": 192}),  # unless it is the recipe's own student
    ("deit_small_distilled_patch16_224", "hard", {"depth": 12, "dim": 384}),
    ("pvt_v2_b0", "hard", {"depths": [2, 2, 2, 2], "dims": [32, 64, 160, 256]}),
    ("pvt_v2_b1", "hard", {"depths": [2, 2, 2, 2], "dims": [64, 128, 320, 512]}),
    ("pvt_v2_b2", "hard", {"depths": [3, 4, 6, 3], "dims": [64, 128, 320, 512]}),
    ("convmixer_256_8_ks5_p2", "hard", {"depth": 8, "dim": 256}),
    ("resnet18", "soft", {"layers": [2, 2, 2, 2]}),
]


def test_the_recipe_keeps_its_options_for_its_own_student() -> None:
    recipe = quickstart_with()
    assert recipe.student.kwargs  # the quickstart's own student carries its options (e.g. fewer blocks)
    name, kwargs = student_build(recipe, 10)
    assert all(kwargs[k] == v for k, v in recipe.student.kwargs.items())


@pytest.mark.parametrize("name,distillation,expected", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_changing_only_the_student_trains_the_named_architecture(name: str, distillation: str, expected: dict) -> None:
    recipe = quickstart_with("--student", name, "--distillation", distillation)
    if name == quickstart_with().student.name:  # the recipe's own student keeps the recipe's options
        expected = {**expected, **{k: v for k, v in recipe.student.kwargs.items() if k in expected}}
    else:
        assert recipe.student.name == name and recipe.student.kwargs == {} and recipe.student.patch_size is None
    data = build_datasets(recipe.data, recipe.aug)
    torch.manual_seed(0)
    student = create_student(*student_build(recipe, data.num_classes))
    assert shape_of(student) == expected
    fixed_teacher = torch.nn.Linear(3 * recipe.data.img_size**2, data.num_classes)  # any fixed teacher will do
    task = DistillationTask(student, lambda x: fixed_teacher(x.flatten(1)).detach(), distillation)
    cfg = TrainConfig(
        epochs=1,
        batch_size=16,
        workers=0,
        optim=recipe.optim,
        aug=recipe.aug,
        num_classes=data.num_classes,
        amp="off",
        channels_last=False,
    )
    row = Trainer(
        task,
        torch.utils.data.Subset(data.train, range(48)),
        torch.utils.data.Subset(data.val, range(16)),
        cfg,
        log=lambda m: None,
    ).fit()
    assert row["epoch"] == 1 and row["train_loss"] > 0 and "train_distill_loss" in row and 0 <= row["val_top1"] <= 100


def test_macs_count_attention_on_cpu() -> None:
    """torch's FLOP counter skips the CPU attention kernel; edgevit's count adds its two matmuls."""
    from timm.layers import Attention

    from edgevit.models.students import count_macs

    tokens, dim = 10, 32
    linear = 3 * tokens * dim * dim + tokens * dim * dim  # qkv and proj
    attention = 2 * tokens * tokens * dim  # q @ k^T and attn @ v
    assert count_macs(Attention(dim, num_heads=4), torch.zeros(1, tokens, dim)) == linear + attention
