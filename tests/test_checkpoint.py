"""The student checkpoint keeps a changed structure: a DeiT whose blocks have different head counts,
head sizes and MLP widths (edited by hand here, as a pruner would) saves, loads with identical
outputs and exports with full agreement. Old (format 1) files still load; damaged files give one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.export.pipeline import export_run
from edgevit.models.checkpoint import STUDENT_FILE, load_student, save_student
from edgevit.models.students import create_student, student_kwargs

NAME = "deit_tiny_distilled_patch16_224"


def uneven_deit() -> tuple[dict, nn.Module]:
    """Block 0: 4 heads -> 2 heads of 16; block 1: 4 heads of 16 -> 4 heads of 8 and MLP 256 -> 100."""
    kwargs = student_kwargs(NAME, 10, 32, 8, 0.0, {"depth": 2, "embed_dim": 64, "num_heads": 4})
    torch.manual_seed(0)
    model = create_student(NAME, kwargs)
    a0, a1, mlp1 = model.blocks[0].attn, model.blocks[1].attn, model.blocks[1].mlp
    a0.qkv, a0.proj, a0.num_heads, a0.attn_dim = nn.Linear(64, 96), nn.Linear(32, 64), 2, 32
    a1.qkv, a1.proj, a1.head_dim, a1.attn_dim, a1.scale = nn.Linear(64, 96), nn.Linear(32, 64), 8, 32, 8**-0.5
    mlp1.fc1, mlp1.fc2 = nn.Linear(64, 100), nn.Linear(100, 64)
    return kwargs, model.eval()


def meta(kwargs: dict) -> dict:
    return {
        "model_name": NAME,
        "create_kwargs": kwargs,
        "class_names": [str(i) for i in range(10)],
        "num_classes": 10,
        "img_size": 32,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
        "crop_pct": 1.0,
        "data": {"spec": "digits", "img_size": 32},
    }


@pytest.fixture(scope="module")
def uneven_run(tmp_path_factory) -> tuple[Path, nn.Module]:
    kwargs, model = uneven_deit()
    run = tmp_path_factory.mktemp("runs") / "uneven"
    run.mkdir()
    save_student(run / STUDENT_FILE, model, meta(kwargs))
    return run, model


def test_changed_structure_round_trips_with_identical_outputs(uneven_run) -> None:
    run, model = uneven_run
    blob = torch.load(run / STUDENT_FILE, weights_only=True)  # no pickled modules in the file
    assert blob["structure"]["blocks.0.attn"] == {"num_heads": 2, "attn_dim": 32}
    assert blob["structure"]["blocks.1.mlp.fc1"]["out_features"] == 100
    loaded, info = load_student(run)
    assert loaded.blocks[0].attn.num_heads == 2 and loaded.blocks[1].attn.head_dim == 8
    assert loaded.blocks[1].mlp.fc1.weight.shape == (100, 64) and len(info["sha256"]) == 64
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("target", ["onnx", "openvino-cpu"])
def test_changed_structure_exports_with_full_agreement(uneven_run, target: str) -> None:
    run, _ = uneven_run
    result = export_run(run, target, "fp32", ledger=False)
    assert result.verification.verified and result.verification.agreement == 100.0, result.verification.note


def test_format_1_files_still_load(tmp_path: Path) -> None:
    kwargs = student_kwargs(NAME, 10, 32, 8, 0.0, {"depth": 1, "embed_dim": 32, "num_heads": 2})
    model = create_student(NAME, kwargs).eval()
    torch.save({"state_dict": model.state_dict(), **meta(kwargs)}, tmp_path / STUDENT_FILE)  # what 0.1 wrote
    loaded, _ = load_student(tmp_path)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_unchanged_student_records_no_structure(tmp_path: Path) -> None:
    kwargs = student_kwargs(NAME, 10, 32, 8, 0.0, {"depth": 1, "embed_dim": 32, "num_heads": 2})
    model = create_student(NAME, kwargs)
    model.train()  # run modes are not structure
    save_student(tmp_path / STUDENT_FILE, model, meta(kwargs))
    assert torch.load(tmp_path / STUDENT_FILE, weights_only=True)["structure"] == {}


def test_a_different_architecture_cannot_be_saved_as_this_student(tmp_path: Path) -> None:
    kwargs, model = uneven_deit()
    model.blocks[0].mlp.act = nn.ReLU()  # a different module type, not a width
    with pytest.raises(EdgevitError, match="blocks.0.mlp.act"):
        save_student(tmp_path / STUDENT_FILE, model, meta(kwargs))
    assert not list(tmp_path.iterdir())  # nothing half-written
