"""Structured pruning of a student with Torch-Pruning, configured per family.

Torch-Pruning's DependencyGraph finds what must shrink together (q/k/v rows with proj columns,
fc1 rows with fc2 columns, a residual width through every norm, token and head input) and its
BasePruner ranks and removes channels. This module adds what a student needs on top:

- per family, what may shrink: DeiT head dims (the same dims in every head) and/or whole heads,
  MLP hidden width, optionally the embedding width; PVT-v2 the same per stage plus each stage's
  channels; ConvMixer its channels. Never a classifier's outputs (`head`, `head_dist`), never the
  image's input channels, never a block at zero heads.
- a target in MACs or parameters rather than a channel ratio: the channel ratio is found by
  bisection on copies (MACs fall monotonically with it), so `keep=0.5` gives ~half the MACs.
- whole-head pruning by our own ranking, because Torch-Pruning's (1.6.1) can leave a block with
  zero heads under global ranking or many iterative steps.
- the module attributes the forward reads (`num_heads`, `head_dim`, `attn_dim`, `scale`,
  `num_features`), kept in step; when a head narrows, the old softmax temperature is folded
  into the query weights, so attention scores do not jump before recovery.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
import torch_pruning as tp
from timm.layers import Attention as VitAttention
from timm.models.convmixer import ConvMixer
from timm.models.pvt_v2 import PyramidVisionTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from edgevit.errors import EdgevitError
from edgevit.models.prunable import PvtAttention
from edgevit.models.students import count_macs
from edgevit.vocab import IMPORTANCES, PRUNE_ATTENTION, PRUNE_BY, Importance

MIN_KEEP = 0.1  # under global ranking no layer keeps fewer than this share of its channels


@dataclass
class PruneReport:
    """What one `prune_model` call did; `as_dict()` goes into summaries and logs."""

    family: str
    by: str
    keep: float
    channel_ratio: float
    macs_before: float
    macs_after: float
    params_before: int
    params_after: int
    seconds: float
    structure: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


# ------------------------------------------------------------------------------------ checks
def check_options(ratio: float, by: str, importance: str, attention: str = "dims", steps: int = 1) -> None:
    """`prune_model`'s own options (the stage validates through `PruneConfig`): one line before any work."""
    if not isinstance(ratio, (int, float)) or not 0 < ratio < 1:
        raise EdgevitError(f"ratio must be between 0 and 1 (the share of {by} to remove), got {ratio}", "ratio")
    for param, value, allowed in (
        ("by", by, PRUNE_BY),
        ("importance", importance, IMPORTANCES),
        ("attention", attention, PRUNE_ATTENTION),
    ):
        if value not in allowed:
            raise EdgevitError(f"{param} must be one of {', '.join(allowed)}, got '{value}'", param)
    if not isinstance(steps, int) or steps < 1:
        raise EdgevitError(f"steps must be a whole number >= 1, got {steps}", "steps")


# ------------------------------------------------------------------------------------ families
def backbone_of(model: nn.Module) -> nn.Module:
    return getattr(model, "backbone", model)  # edgevit's DistilledHeadStudent wraps a timm model


def family(model: nn.Module) -> str:
    net = backbone_of(model)
    if isinstance(net, VisionTransformer):
        return "deit"
    if isinstance(net, PyramidVisionTransformerV2):
        return "pvt_v2"
    if isinstance(net, ConvMixer):
        return "convmixer"
    return "generic"


def classifiers(model: nn.Module) -> list[nn.Module]:
    """Every classifier layer (its outputs are the classes): timm's head(s) and the distillation head."""
    out: list[nn.Module] = []
    for net in (model, getattr(model, "backbone", None)):
        if net is None:
            continue
        if hasattr(net, "get_classifier"):
            c = net.get_classifier()
            out += list(c) if isinstance(c, (tuple, list)) else [c]
        if isinstance(getattr(net, "head_dist", None), nn.Module):
            out.append(net.head_dist)
    return [m for i, m in enumerate(out) if isinstance(m, nn.Module) and all(m is not o for o in out[:i])]


def _attentions(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (VitAttention, PvtAttention))]


def _head_layers(attn: nn.Module) -> list[nn.Linear]:
    """The layers whose outputs are split into heads (Torch-Pruning's `num_heads` keys)."""
    return [attn.qkv] if isinstance(attn, VitAttention) else [attn.q, attn.kv]


def _query_rows(attn: nn.Module) -> tuple[nn.Linear, int]:
    """The layer holding the queries and how many of its rows they are (the first ones)."""
    if isinstance(attn, VitAttention):
        return attn.qkv, attn.qkv.out_features // 3
    return attn.q, attn.q.out_features


def _ignored(model: nn.Module, embed: bool) -> list[nn.Module]:
    ignored = classifiers(model)
    if family(model) == "deit" and not embed:  # the residual width's group contains the patch embedding
        ignored.append(backbone_of(model).patch_embed.proj)
    return ignored


# ------------------------------------------------------------------------------------ attributes
def sync_attributes(model: nn.Module) -> None:
    """Make the attributes each forward reads agree with the (pruned) weights."""
    for a in _attentions(model):
        layer, q_rows = _query_rows(a)
        head_dim = q_rows // a.num_heads
        if head_dim != a.head_dim:  # keep the old softmax temperature: fold sqrt(new/old) into the queries
            with torch.no_grad():
                factor = math.sqrt(head_dim / a.head_dim)
                layer.weight[:q_rows] *= factor
                if layer.bias is not None:
                    layer.bias[:q_rows] *= factor
        a.head_dim, a.scale = head_dim, head_dim**-0.5
        if isinstance(a, VitAttention):
            a.attn_dim = a.num_heads * head_dim
        else:
            a.dim = a.q.in_features
    net = backbone_of(model)
    head = net.get_classifier()
    head = head[0] if isinstance(head, (tuple, list)) else head
    if isinstance(head, nn.Linear) and hasattr(net, "num_features"):
        net.num_features = head.in_features
        if hasattr(net, "head_hidden_size"):
            net.head_hidden_size = head.in_features
        if isinstance(net, VisionTransformer):
            net.embed_dim = head.in_features
    for info in getattr(net, "feature_info", None) or []:
        mod = dict(net.named_modules()).get(info.get("module", ""))
        width = _out_width(mod) if mod is not None else None
        if width:
            info["num_chs"] = width


def _out_width(module: nn.Module) -> int | None:
    widths = [m.normalized_shape[0] for m in module.modules() if isinstance(m, nn.LayerNorm)]
    widths += [m.num_features for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return widths[-1] if widths else None


def structure(model: nn.Module) -> dict[str, Any]:
    """Per block: heads, head dim, MLP hidden width; plus the embedding width (for logs and tests)."""
    out: dict[str, Any] = {}
    for name, a in model.named_modules():
        if isinstance(a, (VitAttention, PvtAttention)):
            out[name] = {"heads": a.num_heads, "head_dim": a.head_dim}
    for name, m in model.named_modules():
        if name.endswith("mlp") and hasattr(m, "fc1"):
            out.setdefault(name.rsplit(".", 1)[0] + ".attn", {})["mlp_hidden"] = m.fc1.out_features
    head = classifiers(model)[0]
    out["features"] = head.in_features if isinstance(head, nn.Linear) else None
    return out


# ------------------------------------------------------------------------------------ importance
def importance_signal(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], kind: Importance) -> None:
    """Leave in each parameter's `.grad` what the criterion reads: the summed loss gradient
    (taylor) or the mean squared per-sample gradient, a diagonal Hessian estimate (hessian)."""
    model.eval()  # no dropout or drop-path noise in the scores
    model.zero_grad(set_to_none=True)
    if kind == "magnitude":
        return
    params = [p for p in model.parameters() if p.requires_grad]
    sq = [torch.zeros_like(p) for p in params] if kind == "hessian" else None
    n = 0
    for x, y in batches:
        out = model(x)
        if kind == "taylor":
            F.cross_entropy(out, y).backward()
            continue
        for loss in F.cross_entropy(out, y, reduction="none"):
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            for s, g in zip(sq, grads):
                if g is not None:
                    s += g.pow(2)
            n += 1
    if sq is not None:
        for p, s in zip(params, sq):
            p.grad = s / max(n, 1)


def _criterion(kind: Importance) -> tp.importance.Importance:
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "hessian":
        return tp.importance.GroupHessianImportance()  # reads .grad as filled by importance_signal
    return tp.importance.GroupMagnitudeImportance(p=2)


class _KeepSome(tp.importance.Importance):
    """Global ranking can empty a layer: mark each group's most important MIN_KEEP as untouchable."""

    def __init__(self, base: tp.importance.Importance, heads: dict[nn.Module, int]):
        self.base, self.heads = base, heads

    def __call__(self, group: Any) -> torch.Tensor | None:
        imp = self.base(group)
        if imp is None:
            return None
        heads = max([self.heads[dep.target.module] for dep, _ in group if dep.target.module in self.heads] or [1])
        heads = heads if len(imp) % heads == 0 else 1
        per_dim = imp.view(heads, -1).mean(0)  # a head dim is kept or dropped in every head alike
        keep = torch.topk(per_dim, max(1, math.ceil(MIN_KEEP * len(per_dim)))).indices
        imp = imp.clone().view(heads, -1)
        imp[:, keep] = float("inf")
        return imp.view(-1)


# ------------------------------------------------------------------------------------ heads
def _prune_heads(model: nn.Module, example: torch.Tensor, share: float, crit: Any, isomorphic: bool) -> None:
    """Remove `share` of the heads (never a block's last one), ranked per block or, with
    `isomorphic`, across blocks of the same shape."""
    attns = [a for a in _attentions(model) if a.num_heads > 1]
    if share <= 0 or not attns:
        return
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example, ignored_params=[])
    scores = {}
    for a in attns:
        group = dg.get_pruning_group(a.proj, tp.prune_linear_in_channels, list(range(a.proj.in_features)))
        scores[a] = crit(group).view(a.num_heads, -1).mean(1)
    drop: dict[nn.Module, list[int]] = {a: [] for a in attns}
    pools: dict[Any, list[nn.Module]] = {}
    for a in attns:
        key = (type(a), a.num_heads, a.head_dim, a.proj.out_features) if isomorphic else id(a)
        pools.setdefault(key, []).append(a)
    for members in pools.values():
        total = sum(a.num_heads for a in members)
        n = math.floor(share * total + 1e-9)
        ranked = sorted((float(scores[a][h]), i, h) for i, a in enumerate(members) for h in range(a.num_heads))
        for _, i, h in ranked:
            a = members[i]
            if n == 0:
                break
            if len(drop[a]) < a.num_heads - 1:
                drop[a].append(h)
                n -= 1
    for a, heads in drop.items():
        if not heads:
            continue
        idxs = [h * a.head_dim + d for h in heads for d in range(a.head_dim)]
        dg.get_pruning_group(a.proj, tp.prune_linear_in_channels, idxs).prune()
        a.num_heads -= len(heads)
    sync_attributes(model)


# ------------------------------------------------------------------------------------ one ratio
def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    s: float,
    kind: Importance = "magnitude",
    isomorphic: bool = False,
    attention: str = "dims",
    embed: bool = False,
    round_to: int | None = None,
) -> nn.Module:
    """Prune `model` in place at channel ratio `s` (whole heads first, then widths), Torch-Pruning's
    own unit; `prune_model` finds the `s` that meets a MAC or parameter target. `round_to` keeps
    each pruned width a multiple of it (Torch-Pruning's rounding), for kernels that like aligned widths."""
    with warnings.catch_warnings(), torch.enable_grad():  # its graph is traced through autograd
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")  # tokens pruned on their last dim
        return _prune_channels(model, example, s, kind, isomorphic, attention, embed, round_to)


def _prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    s: float,
    kind: Importance,
    isomorphic: bool,
    attention: str,
    embed: bool,
    round_to: int | None = None,
) -> nn.Module:
    crit = _criterion(kind)
    fam = family(model)
    head_share = {"dims": 0.0, "heads": s, "both": 1 - math.sqrt(1 - s)}[attention] if fam in ("deit", "pvt_v2") else 0
    dim_share = {"dims": s, "heads": 0.0, "both": 1 - math.sqrt(1 - s)}[attention] if fam in ("deit", "pvt_v2") else s
    _prune_heads(model, example, head_share, crit, isomorphic)
    heads = {layer: a.num_heads for a in _attentions(model) for layer in _head_layers(a)}
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=_KeepSome(crit, heads) if isomorphic else crit,
        global_pruning=isomorphic,
        isomorphic=isomorphic,
        pruning_ratio=s,
        pruning_ratio_dict={tuple(_head_layers(a)): dim_share for a in _attentions(model)} if dim_share != s else None,
        ignored_layers=_ignored(model, embed),
        num_heads=heads,
        prune_num_heads=False,
        prune_head_dims=dim_share > 0,
        round_to=round_to,
    )
    pruner.step()
    sync_attributes(model)
    return model


def _copy_with_grads(model: nn.Module) -> nn.Module:
    clone = copy.deepcopy(model)
    for p, q in zip(model.parameters(), clone.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    return clone


def count(model: nn.Module, example: torch.Tensor) -> tuple[float, int]:
    """MACs (edgevit's one counter, `count_macs`) and parameters of the model on `example`."""
    return float(count_macs(model, example)), sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ entry point
def prune_model(
    model: nn.Module,
    example: torch.Tensor,
    keep: float,
    *,
    by: str = "macs",
    importance: Importance = "magnitude",
    isomorphic: bool = False,
    attention: str = "dims",
    embed: bool = False,
    round_to: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> tuple[nn.Module, PruneReport]:
    """A pruned copy of `model` with about `keep` of its MACs (or params); `model` is left as is.

    For taylor/hessian, call `importance_signal(model, batches, kind)` first: the copy carries the
    gradients it left. `example` is one input batch (its size sets the image size MACs count at).
    """
    check_options(1 - keep, by, importance, attention)
    t0 = time.perf_counter()
    fam = family(model)
    macs0, params0 = count(model, example)
    base = macs0 if by == "macs" else params0
    target = keep * base

    def trial(s: float) -> tuple[nn.Module, float]:
        pruned = prune_channels(_copy_with_grads(model), example, s, importance, isomorphic, attention, embed, round_to)
        macs, params = count(pruned, example)
        return pruned, macs if by == "macs" else params

    lo, hi = 0.0, 0.8 if isomorphic else 0.95
    best, value = trial(hi)
    if value > target * 1.001:
        raise EdgevitError(
            f"cannot prune this {fam} student to {keep:.0%} of its {by} "
            f"(at most {value / base:.0%} is reachable); ask for a smaller ratio",
            "ratio",
        )
    best_s = hi
    for _ in range(9):  # bisection on the channel ratio: ~0.002 resolution
        mid = (lo + hi) / 2
        pruned, value = trial(mid)
        if value <= target:
            best, best_s, hi = pruned, mid, mid
        else:
            lo = mid
    _check_result(best)
    macs1, params1 = count(best, example)
    report = PruneReport(
        fam, by, keep, best_s, macs0, macs1, params0, params1, time.perf_counter() - t0, structure(best)
    )
    log(
        f"pruned {fam}: channel ratio {best_s:.3f}, MACs {macs0 / 1e6:.2f} M -> {macs1 / 1e6:.2f} M, "
        f"params {params0 / 1e6:.3f} M -> {params1 / 1e6:.3f} M ({report.seconds:.1f} s)"
    )
    for p in best.parameters():
        p.grad = None
    return best, report


def _check_result(model: nn.Module) -> None:
    for name, m in model.named_modules():
        widths = [getattr(m, k, 1) for k in ("in_features", "out_features", "in_channels", "out_channels")]
        if min(widths) < 1 or getattr(m, "num_heads", 1) < 1:
            raise EdgevitError(f"pruning emptied {name}; ask for a smaller ratio", "ratio")
