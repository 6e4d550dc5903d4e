"""Attention distillation: the student's attention maps (and value relations) match a ViT teacher's.

Maps are taken with forward hooks, so no model's `forward` is edited. timm's `Attention` splits
`qkv` into q, k, v, passes q and k through `q_norm` / `k_norm` (Identity unless qk_norm) and then
runs either fused SDPA (no map ever materialised) or the explicit softmax((q * scale) k^T). Hooks
on `q_norm` and `k_norm` see exactly the q and k both paths use, so the map recomputed from them,
softmax((q * scale) k^T) with the module's `scale` (SDPA's default 1/sqrt(head_dim) when fused), is
the one the model computes, whichever path it takes; values are the last third of `qkv`'s output.
ViT classifiers use no attention mask; a module called with one is not matched exactly.

Head counts may differ: the two models' heads have no order in common, so the `kl` loss compares
maps averaged over heads (each row still a distribution): KL(mean_h A_t || mean_h A_s), mean over
rows. `value` is MiniLM-v2's value relation (Wang et al., 2021): each model's value vectors
(B, N, D) re-split into R = the teacher's head count relation heads of width D / R, VR =
softmax(v_r v_r^T / sqrt(D / R)), KL(VR_t || VR_s) per relation head, mean over heads and rows.
Token counts must match (same patch grid and prefix tokens): an attention map has no spatial
layout one could resize cleanly (its rows are distributions over the other tokens), so a mismatch
is a one-line error rather than a resize.

The loss has no learned parameters: nothing joins the student, student.pt and checkpoint.pt hold
the student alone. Default pair, when `distill.attention.blocks` is empty: the teacher's last
attention block with the student's last. With an ensemble, the first teacher gives the maps.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from timm.layers import Attention
from torch import nn

from edgevit.errors import EdgevitError

SUPPORTED = (
    "ViT-like timm models whose blocks use timm.layers.Attention (vit_*, deit_*, deit3_*, ...), "
    "or an edgevit DeiT/ViT student as teacher run:NAME or self"
)


def attention_paths(model: nn.Module) -> list[str]:
    """Module paths of a model's timm attention blocks, shallow to deep."""
    return [n for n, m in model.named_modules() if isinstance(m, Attention)]


def _who(model: nn.Module) -> str:
    inner = getattr(model, "backbone", model)
    return type(inner).__name__


def resolve(model: nn.Module, names: list[str], who: str) -> list[str]:
    """The attention module paths for names given as an attention module or its block ('blocks.3')."""
    paths = attention_paths(model)
    if not paths:
        hint = "; for a CNN teacher use distill.type feature" if who == "teacher" else ""
        raise EdgevitError(
            f"distill.attention: the {who} ({_who(model)}) has no timm attention blocks; supported: {SUPPORTED}{hint}"
        )
    out = []
    for name in names:
        path = name if name in paths else f"{name}.attn" if f"{name}.attn" in paths else None
        if path is None:
            raise EdgevitError(
                f"distill.attention.blocks: the {who} has no attention block '{name}'; valid: {', '.join(paths)}"
            )
        out.append(path)
    return out


def default_blocks(teacher: nn.Module, student: nn.Module) -> list[dict[str, Any]]:
    resolve(teacher, [], "teacher")  # each says so, in one line, when it has no attention blocks
    resolve(student, [], "student")
    return [{"teacher": attention_paths(teacher)[-1], "student": attention_paths(student)[-1], "weight": 1.0}]


class AttentionTaps:
    """Forward hooks that keep each named attention module's q and k (and v) for one forward pass."""

    def __init__(self, model: nn.Module, paths: list[str], who: str, values: bool = False):
        modules = dict(model.named_modules())
        self.paths, self.who, self.out = paths, who, {}
        self.modules = [modules[p] for p in paths]
        parts = {"q": "q_norm", "k": "k_norm", **({"v": "qkv"} if values else {})}  # what: which submodule's output
        self.handles = [
            getattr(m, sub).register_forward_hook(self._keep(p, what))
            for p, m in zip(paths, self.modules)
            for what, sub in parts.items()
        ]

    def _keep(self, path: str, part: str) -> Any:
        return lambda _m, _i, out: self.out.__setitem__((path, part), out)

    def take(self) -> list[dict[str, Any]]:
        """Per block: q and k (B, H, N, d), the scale the model used, and v (B, N, H * d) when hooked."""
        got = []
        for p, m in zip(self.paths, self.modules):
            q, k = self.out.get((p, "q")), self.out.get((p, "k"))
            if q is None or k is None:
                raise EdgevitError(f"distill.attention: the {self.who}'s block '{p}' did not run in its forward")
            qkv = self.out.get((p, "v"))
            v = qkv[..., 2 * q.shape[1] * q.shape[-1] :] if qkv is not None else None
            got.append({"q": q, "k": k, "v": v, "scale": q.shape[-1] ** -0.5 if m.fused_attn else m.scale})
        self.out.clear()
        return got

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """log softmax((q * scale) k^T), (B, H, N, N), in float32 (the explicit path's order of operations)."""
    with torch.autocast(q.device.type, enabled=False):
        return ((q.float() * scale) @ k.float().transpose(-2, -1)).log_softmax(-1)


def head_mean(log_maps: torch.Tensor) -> torch.Tensor:
    """log of the maps averaged over heads (dim 1): logsumexp - log H, so no probability underflows."""
    return torch.logsumexp(log_maps, 1) - math.log(log_maps.shape[1])


def value_relation(v: torch.Tensor, heads: int) -> torch.Tensor:
    """MiniLM-v2's log VR: v (B, N, D) split into `heads` relation heads, log softmax(v_r v_r^T / sqrt(D / heads))."""
    b, n, d = v.shape
    with torch.autocast(v.device.type, enabled=False):
        vr = v.float().reshape(b, n, heads, d // heads).transpose(1, 2)
        return (vr @ vr.transpose(-2, -1) * (d // heads) ** -0.5).log_softmax(-1)


def kl_rows(log_teacher: torch.Tensor, log_student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the last dim, mean over every row (batch, heads, queries)."""
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean()


def attention_loss(student: dict[str, Any], teacher: dict[str, Any], kinds: list[str]) -> torch.Tensor:
    """One block pair: the sum of the asked kinds (kl: head-averaged maps; value: value relations)."""
    loss = 0
    if "kl" in kinds:
        t = head_mean(attention_logits(teacher["q"], teacher["k"], teacher["scale"]))
        s = head_mean(attention_logits(student["q"], student["k"], student["scale"]))
        loss = loss + kl_rows(t, s)
    if "value" in kinds:
        heads = teacher["q"].shape[1]
        loss = loss + kl_rows(value_relation(teacher["v"], heads), value_relation(student["v"], heads))
    return loss


def dims(captured: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(heads, tokens, value width) of each captured block."""
    return [(c["q"].shape[1], c["q"].shape[2], c["q"].shape[1] * c["q"].shape[3]) for c in captured]


@torch.no_grad()
def shapes(model: nn.Module, paths: list[str], x: torch.Tensor, who: str) -> list[tuple[int, int, int]]:
    """(heads, tokens, value width) of each named block on x (a dry run, eval mode restored after)."""
    taps, was = AttentionTaps(model, paths, who), model.training
    try:
        model.eval()
        model(x)
        return dims(taps.take())
    finally:
        taps.remove()
        model.train(was)


def check_pairs(t_paths: list[str], t_shapes: list, s_paths: list[str], s_shapes: list, values: bool) -> None:
    """One line when a pair's maps cannot be compared: other token counts, or (value) a student value
    width that the teacher's head count does not divide."""
    for tp, (heads, tn, _), sp, (_, sn, width) in zip(t_paths, t_shapes, s_paths, s_shapes):
        if tn != sn:
            raise EdgevitError(
                f"distill.attention: the teacher's {tp} attends over {tn} tokens, the student's {sp} over {sn}; "
                f"attention maps need the same tokens (the same patch grid: patch size, data.img_size and "
                f"teacher.img_size, and the same class/distillation tokens)"
            )
        if values and width % heads:
            raise EdgevitError(
                f"distill.attention.loss value: the student's {sp} value width {width} does not split into "
                f"the teacher's {heads} relation heads; use loss kl or a student width that is a multiple of {heads}"
            )
