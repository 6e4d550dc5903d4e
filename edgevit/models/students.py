"""Students: timm models by name, with a distillation head for every student.

DeiT students use timm's distilled ViT (a distillation token with its own head). Students without
a token (PVT-v2, ConvMixer, any timm model) get a second linear head on the pooled features that
plays the distillation head. Either way the interface is timm's: `set_distilled_training(True)`
makes the training forward return `(cls_logits, dist_logits)`; otherwise the forward returns the
mean of the two heads, as DeiT does at inference. So an exported student is one plain tensor out.
"""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, register_model
from timm.models.convmixer import ConvMixer
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.prunable import make_dimension_agnostic


@register_model
def convmixer_256_8_ks5_p2(pretrained: bool = False, **kwargs: Any) -> ConvMixer:
    """A small ConvMixer that fits 32-px images (the embedded default): 0.6 M parameters."""
    if pretrained:
        raise EdgevitError("convmixer_256_8_ks5_p2 has no pretrained weights; set pretrained false", "pretrained")
    args = {"dim": 256, "depth": 8, "kernel_size": 5, "patch_size": 2, **kwargs}
    return build_model_with_cfg(ConvMixer, "convmixer_256_8_ks5_p2", pretrained, **args)


class DistilledHeadStudent(nn.Module):
    """A timm backbone plus a distillation head on its pooled features (PVT-v2, ConvMixer, ...)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head_dist = nn.Linear(backbone.num_features, num_classes)
        self.num_classes = num_classes
        self.distilled_training = False

    def set_distilled_training(self, enable: bool = True) -> None:
        self.distilled_training = enable

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.backbone.forward_features(x)
        pooled = self.backbone.forward_head(feats, pre_logits=True)
        x_cls = self.backbone.get_classifier()(pooled)
        x_dist = self.head_dist(pooled)
        if self.distilled_training and self.training:
            return x_cls, x_dist
        return (x_cls + x_dist) / 2


def has_distillation_head(model: nn.Module) -> bool:
    return hasattr(model, "set_distilled_training")


def check_model_name(name: str) -> None:
    """An unknown timm name fails with close matches, before anything is built."""
    if name in timm.list_models() or timm.is_model(name):
        return
    base = name.split(".")[0]
    if timm.is_model(base):
        return
    close = difflib.get_close_matches(base, timm.list_models(), n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise EdgevitError(f"unknown timm model '{name}'{hint}")


def default_patch_size(img_size: int) -> int:
    """Patch 16 at 224 px gives 196 tokens; small images get small patches (4 at 32 px: 64 tokens)."""
    return 16 if img_size >= 128 else max(2, img_size // 8)


def student_kwargs(
    name: str,
    num_classes: int,
    img_size: int,
    patch_size: int | None,
    drop_path: float,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The timm.create_model keyword arguments for a student at this data's size."""
    kw: dict[str, Any] = {"num_classes": num_classes, "drop_path_rate": drop_path}
    family = name.split("_")[0]
    if family in ("deit", "vit", "deit3"):
        kw.update(img_size=img_size, patch_size=patch_size or default_patch_size(img_size))
    elif family == "convmixer":
        kw.pop("drop_path_rate")
        if patch_size:
            kw["patch_size"] = patch_size
    kw.update(extra or {})
    return kw


def create_student(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build a student with a distillation head; DeiT's distilled models already have one."""
    check_model_name(name)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise EdgevitError(f"student '{name}' does not accept these options ({exc}); fix student.kwargs") from None
    make_dimension_agnostic(model)  # so a pruned student runs (and rebuilds as the same module types)
    if has_distillation_head(model):
        return model
    return DistilledHeadStudent(model, kwargs["num_classes"])


def count_macs(model: nn.Module, example: int | torch.Tensor) -> int:
    """Multiply-accumulates of one forward at inference: edgevit's one MAC count (distill and prune
    summaries, the prune engine's ratio, reports). torch's FLOP counter / 2, with the CPU kernel of
    scaled_dot_product_attention counted too (torch counts only its CUDA kernels: DeiT-Ti/224 would
    read 1.08 G instead of 1.26 G). `example`: an input tensor, or an image size for one square image."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_sdpa(query_shape: Any, key_shape: Any, value_shape: Any, *_args: Any, **_kw: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    device = next(model.parameters()).device
    x = torch.zeros(1, 3, example, example, device=device) if isinstance(example, int) else example.to(device)
    was = model.training
    model.eval()
    counter = FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}
    )
    with counter, torch.inference_mode():
        model(x)
    model.train(was)
    return counter.get_total_flops() // 2
