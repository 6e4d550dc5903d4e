"""Teachers: the pretrained path from a real (offline) Hugging Face cache, and each teacher fed at its
own input size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import timm
import torch

from edgevit.config import Recipe
from edgevit.data import build_datasets
from edgevit.distill.pipeline import build_teacher
from edgevit.train import DistInfo

TAG = "resnet10t.c3_in1k"  # its pretrained config says input_size (3, 176, 176)


def recipe(**teacher) -> Recipe:
    return Recipe.model_validate(
        {
            "data": {"spec": "digits", "img_size": 32, "batch_size": 4},
            "aug": {"auto_augment": None, "mixup": 0.0, "cutmix": 0.0, "reprob": 0.0},
            "teacher": {
                "names": [TAG],
                "finetune_epochs": 0,
                "amp": "off",
                "channels_last": False,
                "fused_attn": False,
                **teacher,
            },
        }
    )


def seen_sizes(teacher: torch.nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The input shapes each member's own model receives (a forward pre-hook on it)."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.model.register_forward_pre_hook(lambda _m, a: shapes.append(tuple(a[0].shape))) for m in teacher.members]
    teacher(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.fixture(scope="module")
def digits():
    r = recipe()
    data = build_datasets(r.data, r.aug)
    return dataclasses.replace(data, val=torch.utils.data.Subset(data.val, range(16)))  # a short held-out check


def test_pretrained_teacher_comes_from_the_local_hub_cache_with_exactly_its_weights(tmp_path, monkeypatch, digits):
    """A timm model written with timm's own save_for_hf into the hub cache layout
    (models--timm--NAME/snapshots/REV/, refs/main); HF_HUB_CACHE points there and the hub is off.
    huggingface_hub reads both at import, so its constants are set alike."""
    import huggingface_hub.constants as hub

    torch.manual_seed(3)
    model = timm.create_model(TAG, pretrained=False, num_classes=10)
    repo = tmp_path / "hub" / f"models--timm--{TAG}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    timm.models.save_for_hf(model, str(repo / "snapshots" / rev), safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    for key, value in (("HF_HUB_CACHE", str(tmp_path / "hub")), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(key, value)
        monkeypatch.setattr(hub, key, value if key == "HF_HUB_CACHE" else True)
    (tmp_path / "run").mkdir()
    logs: list[str] = []
    r = recipe()
    teacher, info = build_teacher(r, digits, tmp_path, tmp_path / "run", DistInfo(), logs.append, None, tmp_path / "m")
    said = [line for line in logs if "pretrained weights" in line]
    weights = repo / "snapshots" / rev / "model.safetensors"
    assert len(said) == 1 and str(weights) in said[0] and "local cache" in said[0], logs
    assert info[0]["source"] == "pretrained"
    built, saved = teacher.members[0].model.state_dict(), model.state_dict()
    assert set(built) == set(saved) and all(torch.equal(built[k], saved[k]) for k in saved)  # the head too
    assert seen_sizes(teacher, torch.zeros(2, 3, 32, 32)) == [(2, 3, 176, 176)]  # its pretrained config's size


@pytest.mark.parametrize("asked,expect", [(None, 32), (48, 48)])
def test_a_teacher_is_fed_at_its_own_size(tmp_path: Path, digits, asked, expect):
    """Without pretrained weights a teacher learns at the data's size; teacher.img_size overrides."""
    r = recipe(pretrained=False, img_size=asked)
    (tmp_path / "run").mkdir()
    logs: list[str] = []
    teacher, _ = build_teacher(r, digits, tmp_path, tmp_path / "run", DistInfo(), logs.append, None, tmp_path / "m")
    assert seen_sizes(teacher, torch.zeros(2, 3, 32, 32)) == [(2, 3, expect, expect)]
    assert any(f"fed at its own {expect} px" in line for line in logs) == (expect != 32)
