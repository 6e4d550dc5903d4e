"""The search space: pruned architectures of one student, made with Torch-Pruning (edgevit/prune/).

Two knobs, as NetAdapt and Once-for-All have them: depth (whole blocks removed: DeiT's and
ConvMixer's blocks, PVT-v2's blocks in every stage) and width (the share of each remaining block's
MACs kept: MLP hidden width, head dims and the embedding or channel width, through `prune_model`).
Which blocks go is measured, not assumed: one greedy pass on the parent removes, each time, the
block whose removal costs the least held-out top-1 (in PVT-v2 from any stage, each stage keeping
one); a depth (a share of all the blocks) then keeps the blocks that pass left last.

An architecture is named by the shapes of all its tensors (`arch_key`): two candidates with the
same key run the same kernels, so a latency measured for one is the other's.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from edgevit.models.checkpoint import fresh_model
from edgevit.prune.engine import backbone_of, count, family, importance_signal, prune_model

logger = logging.getLogger("edgevit.compress")
EVAL_IMAGES = 512  # block ranking evaluates on at most this many held-out images


@dataclass
class Arch:
    """One candidate architecture: its name in the search folder, the model and its metadata."""

    name: str
    model: nn.Module
    meta: dict[str, Any]
    depth: int | None
    keep: float
    macs: float
    params: int

    def description(self) -> str:
        return describe(self.model, self.depth)


def arch_key(model: nn.Module, img_size: int) -> str:
    """The architecture as the runtime sees it: every tensor's name and shape, and the input size."""
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps({"img_size": img_size, "shapes": shapes}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def describe(model: nn.Module, depth: int | None = None) -> str:
    """A short human name: blocks, embedding width, MLP width and heads of the first block."""
    net = backbone_of(model)
    lists = block_lists(model)
    if len(lists) > 1:  # PVT-v2: blocks per stage
        parts = ["blocks " + "-".join(str(len(b)) for b in lists.values())]
    else:
        blocks = getattr(net, "blocks", None)
        parts = [f"{len(blocks) if blocks is not None else depth} blocks"] if blocks is not None or depth else []
    width = getattr(net, "num_features", None)
    if width:
        parts.append(f"width {width}")
    fc1 = next((m.mlp.fc1 for m in net.modules() if hasattr(m, "mlp") and hasattr(m.mlp, "fc1")), None)
    if fc1 is not None:
        parts.append(f"mlp {fc1.out_features}")
    attn = next((m for m in net.modules() if hasattr(m, "num_heads") and hasattr(m, "head_dim")), None)
    if attn is not None:
        parts.append(f"{attn.num_heads}x{attn.head_dim} heads")
    return ", ".join(parts)


def block_lists(model: nn.Module) -> dict[str, nn.Module]:
    """The block sequences whose depth is searched, by path in the backbone: DeiT's and ConvMixer's
    `blocks`, PVT-v2's `stages.<i>.blocks`; {} for a family whose depth is fixed."""
    net, fam = backbone_of(model), family(model)
    if fam in ("deit", "convmixer") and isinstance(getattr(net, "blocks", None), nn.Sequential):
        return {"blocks": net.blocks}
    if fam == "pvt_v2":
        return {f"stages.{i}.blocks": stage.blocks for i, stage in enumerate(net.stages)}
    return {}


def n_blocks(model: nn.Module) -> int | None:
    lists = block_lists(model)
    return sum(len(b) for b in lists.values()) if lists else None


def _accuracy(model: nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> float:
    x, y = images
    with torch.inference_mode():
        return float((model(x).argmax(1) == y).float().mean())


Block = tuple[str, int]  # (path of its sequence, index in it)


def removal_order(model: nn.Module, images: tuple[torch.Tensor, torch.Tensor]) -> list[Block]:
    """Blocks in the order a greedy pass removes them (least harmful first; every sequence keeps one);
    [] when the family's depth is not searched."""
    lists = block_lists(model)
    alive = [(path, i) for path, blocks in lists.items() for i in range(len(blocks))]
    order: list[Block] = []
    while True:
        left = {path: sum(p == path for p, _ in alive) for path in lists}
        removable = [b for b in alive if left[b[0]] > 1]
        if not removable:
            return order
        scores = [(-_accuracy(_with_blocks(model, [a for a in alive if a != b]), images), b) for b in removable]
        _, worst = min(scores)  # the block whose removal keeps the highest accuracy
        order.append(worst)
        alive.remove(worst)


def _with_blocks(model: nn.Module, keep: list[Block]) -> nn.Module:
    """A shallow copy of `model` whose block sequences hold only `keep` (the weights are shared)."""
    clone = _shallow(model)
    net = clone
    if backbone_of(model) is not model:
        clone.backbone = net = _shallow(model.backbone)
    for path, blocks in block_lists(model).items():
        *parents, leaf = path.split(".")
        holder = net
        for name in parents:  # copy each module on the way, so the original keeps its blocks
            child = _shallow(holder._modules[name])
            holder._modules[name] = child
            holder = child
        kept = [blocks[i] for p, i in keep if p == path]
        holder._modules[leaf] = nn.Sequential(*kept) if isinstance(blocks, nn.Sequential) else nn.ModuleList(kept)
    return clone


def _shallow(module: nn.Module) -> nn.Module:
    clone = copy.copy(module)
    clone._modules = dict(module._modules)  # a child set on the copy must not land in the original
    return clone


def drop_blocks(model: nn.Module, meta: dict[str, Any], order: list[Block], depth: int) -> tuple[nn.Module, dict]:
    """A copy with `depth` blocks in all (the first removed in `order` go) and metadata that rebuilds it."""
    lists = block_lists(model)
    gone = set(order[: n_blocks(model) - depth])
    out = copy.deepcopy(
        _with_blocks(model, [(p, i) for p, b in lists.items() for i in range(len(b)) if (p, i) not in gone])
    )
    meta = copy.deepcopy(meta)
    kept = [len(b) for b in block_lists(out).values()]
    size = {"depths": tuple(kept)} if family(model) == "pvt_v2" else {"depth": kept[0]}
    meta["create_kwargs"] = {**meta["create_kwargs"], **size}
    _match_fresh(out, meta)
    return out, meta


def _match_fresh(model: nn.Module, meta: dict[str, Any]) -> None:
    """Parameterless modules (DropPath or Identity, chosen per depth index) as a fresh build at the new
    depth has them, so the student file rebuilds the model exactly."""
    fresh = dict(fresh_model(meta["model_name"], meta["create_kwargs"]).named_modules())
    for name, module in list(model.named_modules()):
        ref = fresh.get(name)
        if ref is None or type(ref) is type(module) or any(True for _ in module.parameters()):
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, copy.deepcopy(ref).to("cpu"))


def depths_for(model: nn.Module, shares: Iterable[float]) -> list[int | None]:
    """The block counts the depth shares name (deduplicated, at least 1); [None] where depth is fixed."""
    n = n_blocks(model)
    if n is None:
        return [None]
    least = len(block_lists(model))  # every sequence keeps a block
    return sorted({max(least, round(s * n)) for s in shares}, reverse=True)


def architectures(
    student: nn.Module,
    meta: dict[str, Any],
    depths: list[float],
    keeps: list[float],
    images: tuple[torch.Tensor, torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    round_to: int | None = None,
    skip: Iterable[str] = (),
) -> Iterable[Arch]:
    """Every (depth, keep) architecture of the grid, the parent's first; names in `skip` are only
    named (a resumed search has them), not built. Duplicate architectures are dropped."""
    img = int(meta["img_size"])
    example = torch.zeros(1, 3, img, img)
    images = (images[0][:EVAL_IMAGES], images[1][:EVAL_IMAGES])
    order = removal_order(student, images) if n_blocks(student) is not None and min(depths) < 1 else []
    if order:
        logger.info("blocks by usefulness (removed first to last): %s", order)
    skip, seen = set(skip), set()
    for depth in depths_for(student, depths):
        base, base_meta = None, meta
        for keep in sorted(set(keeps), reverse=True):
            name = f"d{depth if depth is not None else 'x'}-k{round(keep * 100):03d}"
            if name in skip:
                yield Arch(name, None, {}, depth, keep, math.nan, 0)  # type: ignore[arg-type]
                continue
            if base is None:
                full = depth is None or depth == n_blocks(student)
                base, base_meta = (student, meta) if full else drop_blocks(student, meta, order, depth)
                if batches:
                    importance_signal(base, batches, "taylor")
            model = base if keep >= 1 else _pruned(base, example, keep, round_to, bool(batches))
            key = arch_key(model, img)
            if key in seen:
                continue
            seen.add(key)
            macs, params = count(model, example)
            yield Arch(name, model, base_meta, depth, keep, macs, params)


def _pruned(model: nn.Module, example: torch.Tensor, keep: float, round_to: int | None, taylor: bool) -> nn.Module:
    out, _ = prune_model(
        model, example, keep, importance="taylor" if taylor else "magnitude", embed=True, round_to=round_to
    )
    return out
