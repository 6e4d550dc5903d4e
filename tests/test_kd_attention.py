"""Attention distillation on tiny ViTs at 16-32 px: the hooked maps are timm's own, the loss is the
formula, a run from a run: teacher trains and saves a student like a hard-distilled one, and bad
specs are one line. No resume test: the attention loss learns nothing, so the task has no state
beyond the student's (checkpoint.pt's task_state is empty, asserted below)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch

from edgevit.config import DistillConfig, Recipe
from edgevit.distill import attention as att
from edgevit.distill.pipeline import distill
from edgevit.errors import EdgevitError
from edgevit.models.checkpoint import load_student
from edgevit.models.students import create_student, student_kwargs
from edgevit.models.teachers import Teacher
from edgevit.runs import Ledger
from edgevit.train import AttentionDistillationTask

STUDENT = "deit_tiny_distilled_patch16_224"
SMALL = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def tiny_vit(heads: int = 4, dim: int = 32, **kw) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=dim, depth=2, num_heads=heads, num_classes=10, **kw
    )


def tiny_deit(heads: int = 2, dim: int = 32) -> torch.nn.Module:
    """A 2-block distilled DeiT at 16 px, patch 4: 16 patches + class + distillation = 18 tokens."""
    return create_student(
        STUDENT, student_kwargs(STUDENT, 10, 16, 4, 0.0, {"depth": 2, "embed_dim": dim, "num_heads": heads})
    )


def set_fused(model: torch.nn.Module, fused: bool) -> None:
    for m in model.modules():
        if isinstance(m, timm.layers.Attention):
            m.fused_attn = fused


@pytest.mark.parametrize("qk_norm", [False, True])
def test_hooked_maps_are_timms_explicit_attention_fused_or_not(qk_norm: bool):
    """The map recomputed from the hooked q/k equals the probabilities timm's explicit path feeds
    its attn_drop, in every head, whether the model runs explicit or fused (SDPA) attention."""
    torch.manual_seed(0)
    model = tiny_vit(qk_norm=qk_norm).eval()
    x = torch.randn(2, 3, 16, 16)
    seen = {}
    model.blocks[1].attn.attn_drop.register_forward_pre_hook(lambda _m, inp: seen.__setitem__("p", inp[0]))
    taps = att.AttentionTaps(model, ["blocks.1.attn"], "teacher")
    set_fused(model, False)
    with torch.no_grad():
        model(x)
    explicit = seen.pop("p")
    (c,) = taps.take()
    assert explicit.shape == (2, 4, 17, 17)
    torch.testing.assert_close(att.attention_logits(c["q"], c["k"], c["scale"]).exp(), explicit, rtol=0, atol=1e-6)
    set_fused(model, True)
    with torch.no_grad():
        model(x)
    assert "p" not in seen  # fused: no map materialised, yet the hooks see the same q and k
    (c,) = taps.take()
    torch.testing.assert_close(att.attention_logits(c["q"], c["k"], c["scale"]).exp(), explicit, rtol=0, atol=1e-6)


def test_kl_of_head_averaged_maps_is_the_hand_computed_value():
    """One image, two tokens, head width 1, scale 1: with k = [1, 0] a query q gives the row
    [sigmoid(q), 1 - sigmoid(q)]. Teacher, one head: rows [0.8, 0.2] and [0.5, 0.5]. Student, two
    heads: head 1 rows [0.5, 0.5] twice, head 2 [0.8, 0.2] twice, so its average is [0.65, 0.35] twice."""
    k = torch.tensor([1.0, 0.0]).view(1, 1, 2, 1)
    teacher = {"q": torch.tensor([math.log(4), 0.0]).view(1, 1, 2, 1), "k": k, "scale": 1.0}
    student = {"q": torch.tensor([[0.0, 0.0], [math.log(4)] * 2]).view(1, 2, 2, 1), "k": k.expand(1, 2, 2, 1)}
    student["scale"] = 1.0

    def kl(p: list[float], q: list[float]) -> float:
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    expected = (kl([0.8, 0.2], [0.65, 0.35]) + kl([0.5, 0.5], [0.65, 0.35])) / 2
    assert att.attention_loss(student, teacher, ["kl"]).item() == pytest.approx(expected, rel=1e-6)
    assert att.attention_loss(teacher, teacher, ["kl"]).item() == pytest.approx(0.0, abs=1e-7)


def test_value_relation_with_the_teachers_relation_heads_is_the_hand_computed_value():
    """Value relations with the teacher's 1 relation head: two tokens, token 1's value 0, so the rows
    are softmax([v0 . v0 / sqrt(D), 0]) and [0.5, 0.5]. Teacher D = 1, v0 = sqrt(ln 4): row [0.8, 0.2];
    student D = 4, v0 = a * (1, 1, 1, 1) with 4 a^2 / 2 = ln 1.5: row [0.6, 0.4]."""
    teacher = {"q": torch.zeros(1, 1, 2, 1), "v": torch.tensor([math.sqrt(math.log(4)), 0.0]).view(1, 2, 1)}
    a = math.sqrt(math.log(1.5) / 2)
    student = {"v": torch.tensor([[a] * 4, [0.0] * 4]).view(1, 2, 4)}
    expected = (sum(p * math.log(p / q) for p, q in zip([0.8, 0.2], [0.6, 0.4])) + 0.0) / 2
    assert att.attention_loss(student, teacher, ["value"]).item() == pytest.approx(expected, rel=1e-6)


def test_other_head_counts_and_value_relations_train_the_student():
    """A 4-head teacher, a 2-head student: maps averaged over heads, values re-split into 4 relation
    heads; the loss is finite and reaches the student's attention weights."""
    torch.manual_seed(0)
    teacher, student = tiny_deit(heads=4), tiny_deit(heads=2)
    d = DistillConfig(type="attention", attention={"loss": ["kl", "value"], "weight": 2.0})
    task = AttentionDistillationTask.from_config(student, teacher, d, img_size=16)
    assert task.pairs == ["blocks.1.attn -> blocks.1.attn"] and task.kinds == ["kl", "value"]
    task.set_criterion(torch.nn.CrossEntropyLoss())
    task.train()
    task.begin_epoch(0)  # the student's two heads, as the trainer sets them
    out = task(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    assert out["attention_loss"] > 0 and torch.isfinite(out["loss"])
    out["attention_loss"].backward()
    assert student.blocks[1].attn.qkv.weight.grad.abs().sum() > 0
    assert task.get_task_state() in ({}, None)  # nothing learned beside the student
    task.remove_hooks()
    assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])


def test_bad_attention_specs_are_one_line():
    torch.manual_seed(0)
    student = tiny_deit()
    cnn = Teacher([timm.create_model("resnet10t", num_classes=10)], ["resnet10t"])
    cases = [
        (cnn, {}, "the teacher (ResNet) has no timm attention blocks; supported: ViT-like timm models"),
        (
            tiny_deit(),
            {"blocks": [{"teacher": "blocks.9", "student": "blocks.1"}]},
            "valid: blocks.0.attn, blocks.1.attn",
        ),
        (tiny_deit(), {"blocks": [{"teacher": "blocks.1", "student": "head"}]}, "the student has no attention block"),
        (tiny_deit(heads=3, dim=48), {"loss": "value"}, "value width 32 does not split into the teacher's 3 relation"),
    ]
    for teacher, spec, message in cases:
        with pytest.raises(EdgevitError) as err:
            AttentionDistillationTask.from_config(
                student, teacher, DistillConfig(type="attention", attention=spec), img_size=16
            )
        assert message in str(err.value) and "\n" not in str(err.value)
    for other, tokens in (
        (tiny_vit(), 17),
        (create_student(STUDENT, student_kwargs(STUDENT, 10, 16, 8, 0.0, SMALL)), 6),
    ):
        # a plain ViT has no distillation token; patch 8 gives a 2 x 2 grid
        with pytest.raises(EdgevitError, match=f"attends over {tokens} tokens, the student's blocks.1.attn over 18"):
            AttentionDistillationTask.from_config(student, other, DistillConfig(type="attention"), img_size=16)
    with pytest.raises(ValueError, match="attention loss needs the live teacher's attention maps") as err:
        DistillConfig(type="attention", cache_teacher=True)
    assert "cache_teacher to auto or false" in str(err.value)
    with pytest.raises(ValueError, match="attention section needs type attention"):
        DistillConfig(type="feature", attention={"loss": "kl"})
    with pytest.raises(ValueError, match="attention.loss"):
        DistillConfig(type="attention", attention={"loss": "mse"})


def recipe(kind: str, teacher: str, **distill) -> Recipe:
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
                "names": [teacher],
                "pretrained": False,
                "finetune_epochs": 0,
                "amp": "off",
                "channels_last": False,
                "fused_attn": True,
            },
            "student": {"name": STUDENT, "patch_size": 8, "drop_path": 0.0, "kwargs": SMALL},
            "distill": {"type": kind, **distill},
            "optim": {"lr": 0.004, "warmup_epochs": 0},
        }
    )


def test_attention_kd_run_from_a_run_teacher_saves_a_student_like_a_hard_distilled_one(tmp_path: Path):
    """A hard-distilled tiny DeiT, then a second one distilled with attention from it (run:hard)."""
    logs: list[str] = []
    distill(recipe("hard", "resnet10t"), tmp_path / "hard", log=logs.append)
    summary = distill(recipe("attention", "run:hard"), tmp_path / "attention", log=logs.append)
    assert any("attention distillation: student blocks.1.attn -> blocks.1.attn teacher (kl)" in line for line in logs)
    assert Ledger(tmp_path).runs("attention")[0]["status"] == "done"
    hard, _ = load_student(tmp_path / "hard")
    student, meta = load_student(tmp_path / "attention")
    assert (
        meta["distill"] == "attention" and summary["distillation"] == "attention" and meta["teachers"] == ["run:hard"]
    )
    assert set(student.state_dict()) == set(hard.state_dict())
    assert sum(p.numel() for p in student.parameters()) == sum(p.numel() for p in hard.parameters())
    assert not any(m._forward_hooks for m in student.modules())
    ckpt = torch.load(tmp_path / "attention" / "checkpoint.pt", weights_only=True)
    assert set(ckpt["model"]) == set(hard.state_dict()) and not ckpt.get("task_state")
    row = json.loads((tmp_path / "attention" / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["train_attention_loss"] > 0 and math.isfinite(row["train_loss"]) and summary["cache"] is None


def test_a_cnn_teacher_fails_before_its_fine_tune(tmp_path: Path):
    r = recipe("attention", "resnet10t").model_copy(deep=True)
    r.teacher.finetune_epochs = 5  # would train for minutes if the check came after it
    with pytest.raises(EdgevitError, match="the teacher \\(ResNet\\) has no timm attention blocks"):
        distill(r, tmp_path / "cnn", log=lambda m: None)
    assert not (tmp_path / "cnn" / "teachers").exists()
