"""Forwards that read widths from tensors, not from the constructor, so pruned students still run.

timm's PVT-v2 attention reshapes with its input width `C` (fixed at construction): once pruning
gives it fewer heads or a narrower head, those reshapes fail. `PvtAttention` is the same module
with a forward that reshapes with -1 and `num_heads`/`head_dim`; `create_student` swaps it in for
every PVT-v2 student (pruned or not), so a pruned student rebuilds as the same module types.
timm 1.0.31's ViT attention already reshapes with `num_heads`/`head_dim`/`attn_dim` and needs none.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from timm.models import pvt_v2
from torch import nn


class PvtAttention(pvt_v2.Attention):
    """timm's PVT-v2 attention, with every reshape taking its widths from the weights."""

    def forward(self, x: torch.Tensor, feat_size: List[int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = feat_size
        q = self.q(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        if self.sr is not None:  # spatial reduction (optionally pooled) before keys and values
            x = x.permute(0, 2, 1).reshape(B, C, H, W)
            x = self.sr(self.pool(x) if self.pool is not None else x).flatten(2).transpose(1, 2)
            x = self.norm(x)
            if self.act is not None:
                x = self.act(x)
        kv = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, -1)
        return self.proj_drop(self.proj(x))


def make_dimension_agnostic(model: nn.Module) -> nn.Module:
    """Give every PVT-v2 attention the dimension-agnostic forward (same parameters, same outputs)."""
    for m in model.modules():
        if type(m) is pvt_v2.Attention:
            m.__class__ = PvtAttention
    return model
