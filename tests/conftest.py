"""Shared pytest fixtures. Each block belongs to one stage's tests; add blocks, don't rewrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting OpenMP threads starve 2-core machines
os.environ.setdefault(
    "CI", "true"
)  # OpenVINO's converter sends telemetry unless CI is set; offline its DNS lookup held pytest at exit for minutes


# ------------------------------------------------------------------------------------ export tests
TINY_DEIT = {"depth": 2, "embed_dim": 64, "num_heads": 2, "patch_size": 8}


def train_tiny_student(
    run_dir: Path,
    name: str = "deit_tiny_distilled_patch16_224",
    extra: dict | None = None,
    steps: int = 300,
    img_size: int = 32,
) -> Path:
    """A real student trained briefly on the embedded digits, saved as `edgevit distill` would.

    Trained, not random: INT8-vs-FP32 accuracy checks need a model with confident predictions.
    """
    import torch
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from edgevit.data import build_datasets
    from edgevit.models.checkpoint import save_student
    from edgevit.models.students import create_student, student_kwargs

    extra = dict(TINY_DEIT if extra is None else extra)
    data = {"spec": "digits", "img_size": img_size, "batch_size": 64, "workers": 0}
    ds = build_datasets(data, None, crop_pct=1.0)
    x = torch.stack([ds.train[i][0] for i in range(len(ds.train))])
    y = torch.tensor([ds.train[i][1] for i in range(len(ds.train))])
    kwargs = student_kwargs(name, len(ds.classes), img_size, extra.pop("patch_size", None), 0.0, extra)
    torch.manual_seed(0)
    model = create_student(name, kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "model_name": name,
        "create_kwargs": kwargs,
        "class_names": ds.classes,
        "num_classes": len(ds.classes),
        "img_size": img_size,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
        "crop_pct": 1.0,
        "data": data,
    }
    save_student(run_dir / "student.pt", model.eval(), meta)
    return run_dir


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/<name>/student.pt: a 2-block DeiT (patch 8, 32 px) trained ~5 s on digits (~80% val top-1)."""
    return train_tiny_student(tmp_path_factory.mktemp("runs") / "deit-tiny")
