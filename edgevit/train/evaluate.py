"""Held-out accuracy of a student: the average of its two heads (what deploys) and each head alone."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


@contextlib.contextmanager
def both_heads(model: nn.Module) -> Iterator[None]:
    """Let a distilled model return (cls, dist) while every submodule stays in eval mode."""
    was = model.distilled_training
    model.set_distilled_training(True)
    model.training = True  # only the top module: timm checks `self.distilled_training and self.training`
    try:
        yield
    finally:
        model.training = False
        model.set_distilled_training(was)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    ds: Dataset,
    batch_size: int = 128,
    device: torch.device | None = None,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Top-1 of the average (what deployment runs) and, for distilled students, of each head."""
    model = getattr(model, "module", model)
    model.eval()
    device = device or next(model.parameters()).device
    correct = {"top1": 0, "top1_cls": 0, "top1_dist": 0}
    loss_sum, n = 0.0, 0
    two_heads = hasattr(model, "set_distilled_training")
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        with autocast or contextlib.nullcontext():
            if two_heads:
                with both_heads(model):
                    cls_out, dist_out = (o.float() for o in model(x))
                avg = (cls_out + dist_out) / 2
                correct["top1_cls"] += int((cls_out.argmax(-1) == y).sum())
                correct["top1_dist"] += int((dist_out.argmax(-1) == y).sum())
            else:
                avg = model(x).float()
        correct["top1"] += int((avg.argmax(-1) == y).sum())
        loss_sum += float(F.cross_entropy(avg, y, reduction="sum"))
        n += len(y)
    out = {k: 100.0 * v / max(n, 1) for k, v in correct.items() if two_heads or k == "top1"}
    out["loss"] = loss_sum / max(n, 1)
    return out
