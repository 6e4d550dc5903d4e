"""Feature distillation: the student's intermediate representations match the teacher's.

Features are taken with forward hooks on named modules (torchdistill's way), so no model's
`forward` is edited. Every feature is made a spatial map (B, C, H, W): a CNN stage's output is one
already; a ViT block's tokens (B, N, D) lose their prefix tokens (class, distillation) and the
patch tokens are laid out on their grid. A small learned projector (1x1 convolution, student
channels -> teacher channels) maps the student's map, and the teacher's map is resized to the
student's grid (bilinear). Per pair: MSE, or cosine (1 - cosine similarity over the channels, mean
over positions), times its weight; the sum adds to the DeiT hard loss of the distillation head.

The projectors train with the student (they sit in the trainable module, so DDP and the optimizer
see them), are saved in checkpoint.pt as the task's state for an exact resume, and are not part of
the student: student.pt and every export hold the student alone.

Default layers, when `distill.features.layers` is empty: the teacher's deepest feature stage
(timm's `feature_info`) with the student's deepest block or stage. With an ensemble, the first
teacher gives the features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgevit.errors import EdgevitError


def _stages(model: nn.Module) -> list[str]:
    """Module paths of a model's blocks or stages, shallow to deep (timm's feature_info where it has it)."""
    prefix = ""
    if hasattr(model, "backbone") and hasattr(model, "head_dist"):  # edgevit's DistilledHeadStudent
        model, prefix = model.backbone, "backbone."
    info = getattr(model, "feature_info", None)
    names = [f["module"] for f in info] if isinstance(info, list) and info else []
    if hasattr(info, "module_name"):  # timm's FeatureInfo
        names = list(info.module_name())
    if not names:
        for attr in ("blocks", "stages", "layers"):
            seq = getattr(model, attr, None)
            if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
                names = [f"{attr}.{i}" for i in range(len(seq))]
                break
    return [prefix + n for n in names]


def default_layers(teacher: nn.Module, student: nn.Module) -> list[dict[str, Any]]:
    t, s = _stages(teacher), _stages(student)
    if not t or not s:
        who = "teacher" if not t else "student"
        raise EdgevitError(
            f"distill.features: no default layer for the {who} ({type(teacher if not t else student).__name__}); "
            f"name them in distill.features.layers (teacher: ..., student: ...)"
        )
    return [{"teacher": t[-1], "student": s[-1], "weight": 1.0}]


def _module(model: nn.Module, name: str, who: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules or not name:
        valid = _stages(model) or [n for n in modules if n and n.count(".") < 2]
        raise EdgevitError(f"distill.features: the {who} has no layer '{name}'; valid: {', '.join(valid)}")
    return modules[name]


def as_map(feature: Any, name: str, who: str) -> torch.Tensor:
    """(B, C, H, W) from a CNN map or ViT tokens (B, N, D), prefix tokens dropped."""
    if isinstance(feature, (tuple, list)) and feature and isinstance(feature[0], torch.Tensor):
        feature = feature[0]
    if not isinstance(feature, torch.Tensor) or feature.ndim not in (3, 4):
        got = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
        raise EdgevitError(
            f"distill.features: the {who}'s layer '{name}' gives {got}, not a feature map (B, C, H, W) or "
            f"tokens (B, N, D); name a block or stage"
        )
    if feature.ndim == 4:
        return feature
    b, n, d = feature.shape
    side = math.isqrt(n)  # the largest square grid that fits: the rest are prefix tokens
    tokens = feature[:, n - side * side :]  # the patch tokens come after the prefix tokens
    return tokens.transpose(1, 2).reshape(b, d, side, side)


class Taps:
    """Forward hooks that keep the outputs of named modules for one forward pass."""

    def __init__(self, model: nn.Module, names: list[str], who: str):
        self.names, self.who, self.out = names, who, {}
        self.handles = [
            _module(model, n, who).register_forward_hook(lambda _m, _i, o, n=n: self.out.__setitem__(n, o))
            for n in names
        ]

    def take(self) -> list[torch.Tensor]:
        maps = [as_map(self.out.pop(n, None), n, self.who) for n in self.names]
        self.out.clear()
        return maps

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


class FeatureStudent(nn.Module):
    """The student and its projectors as one trainable module: forward returns the student's output
    and its projected feature maps (so DDP sees every parameter used)."""

    def __init__(self, student: nn.Module, layers: list[str], projectors: nn.ModuleList):
        super().__init__()
        self.student, self.projectors = student, projectors
        self.taps = Taps(student, layers, "student")

    def no_weight_decay(self) -> set[str]:
        inner = getattr(self.student, "no_weight_decay", None)
        return {f"student.{n}" for n in inner()} if callable(inner) else set()

    def forward(self, x: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        out = self.student(x)
        return out, [p(f) for p, f in zip(self.projectors, self.taps.take())]


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """One pair: the teacher's map resized to the student's grid, then MSE or 1 - cosine."""
    teacher = teacher.float()
    student = student.float()
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1 - F.cosine_similarity(student, teacher, dim=1)).mean()


@torch.no_grad()
def shapes(model: nn.Module, layers: list[str], x: torch.Tensor, who: str) -> list[torch.Size]:
    """The maps the named layers give on x (a dry run, eval mode restored after)."""
    taps, was = Taps(model, layers, who), model.training
    try:
        model.eval()
        model(x)
        return [m.shape for m in taps.take()]
    finally:
        taps.remove()
        model.train(was)
