"""The train/eval loop shared by students and teacher fine-tunes.

timm supplies the optimizer and scheduler factories, Mixup/CutMix, the soft-target losses and
gradient clipping. What this loop adds: teacher logits (live, or from the cache), deterministic
augmentation per (seed, round, sample) so that `--resume` and the teacher cache are exact,
atomic per-epoch checkpoints with every RNG state, DDP under torchrun, and per-epoch eval of
the cls head, the distillation head and their average.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import dispatch_clip_grad
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from edgevit.config import AugConfig, OptimConfig
from edgevit.data import seeded
from edgevit.distill.cache import TeacherCache
from edgevit.distill.losses import DistillationLoss
from edgevit.errors import EdgevitError


# ------------------------------------------------------------------------------------ distributed
@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()


def init_distributed() -> DistInfo:
    """DDP when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistInfo(torch_dist.get_rank(), world, local, device)


# ------------------------------------------------------------------------------------ data order
def _seed(*parts: int) -> int:
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


class SeededAugment(Dataset):
    """Augmentation as a pure function of (seed, round, index): replayable for resume and cache."""

    def __init__(self, base: Dataset, seed: int):
        self.base, self.seed, self.round = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        return seeded(lambda: self.base[i], _seed(self.seed, self.round, i))


def make_loader(ds: SeededAugment, batch_size: int, workers: int, rnd: int, dist: DistInfo,
                train: bool = True) -> DataLoader:
    ds.round = rnd
    g = torch.Generator().manual_seed(_seed(ds.seed, rnd, 7))
    if dist.world > 1:
        sampler: Any = DistributedSampler(ds, dist.world, dist.rank, shuffle=True, seed=ds.seed, drop_last=True)
        sampler.set_epoch(rnd)
    else:
        sampler = RandomSampler(ds, generator=g)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=train,
                      generator=g, persistent_workers=False)


# ------------------------------------------------------------------------------------ evaluation
@contextlib.contextmanager
def _both_heads(model: nn.Module):
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
def evaluate(model: nn.Module, ds: Dataset, batch_size: int = 128, device: torch.device | None = None) -> dict[str, float]:
    """Top-1 of the average (what deployment runs) and, for distilled students, of each head."""
    model = getattr(model, "module", model)
    model.eval()
    device = device or next(model.parameters()).device
    correct = {"top1": 0, "top1_cls": 0, "top1_dist": 0}
    loss_sum, n = 0.0, 0
    two_heads = hasattr(model, "set_distilled_training")
    for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        if two_heads:
            with _both_heads(model):
                cls_out, dist_out = model(x)
            avg = (cls_out + dist_out) / 2
            correct["top1_cls"] += int((cls_out.argmax(-1) == y).sum())
            correct["top1_dist"] += int((dist_out.argmax(-1) == y).sum())
        else:
            avg = model(x)
        correct["top1"] += int((avg.argmax(-1) == y).sum())
        loss_sum += float(F.cross_entropy(avg.float(), y, reduction="sum"))
        n += len(y)
    out = {k: 100.0 * v / max(n, 1) for k, v in correct.items() if two_heads or k == "top1"}
    out["loss"] = loss_sum / max(n, 1)
    return out


# ------------------------------------------------------------------------------------ checkpoints
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]]}


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomic: a crash mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise EdgevitError(f"{path} is not a readable edgevit checkpoint ({type(exc).__name__}); "
                           f"delete it to start over") from None


# ------------------------------------------------------------------------------------ training
@dataclass
class FitConfig:
    epochs: int
    batch_size: int
    workers: int
    optim: OptimConfig
    aug: AugConfig
    num_classes: int
    seed: int = 0
    amp: str = "off"
    channels_last: bool = False
    lr_absolute: bool = False  # teacher fine-tunes give lr as is; students scale it by batch size
    cache_rounds: int | None = None


def _criterion(aug: AugConfig, mixup_on: bool) -> nn.Module:
    if mixup_on:
        return SoftTargetCrossEntropy()  # Mixup carries the label smoothing in its targets
    if aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(aug.smoothing)
    return nn.CrossEntropyLoss()


def _autocast(amp: str, device: torch.device) -> Any:
    if amp == "off" or (amp == "auto" and device.type == "cpu"):
        return contextlib.nullcontext()  # measured: bf16 autocast slows small students on CPU
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def fit(model: nn.Module, train_ds: Dataset, val_ds: Dataset, cfg: FitConfig, *,
        distill: tuple[str, float, float] = ("none", 0.5, 1.0), teacher: Callable | None = None,
        cache: TeacherCache | None = None, checkpoint: Path | None = None, resume: bool = False,
        metrics_path: Path | None = None, dist: DistInfo | None = None,
        progress: Callable[..., Any] | None = None, label: str = "train",
        on_epoch: Callable[[int, dict], None] | None = None) -> dict[str, Any]:
    """Train `model` for cfg.epochs with optional distillation; returns the final metrics."""
    dist = dist or DistInfo()
    device = dist.device
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    dtype, alpha, tau = distill
    if dtype != "none" and hasattr(model, "set_distilled_training"):
        model.set_distilled_training(True)
    elif hasattr(model, "set_distilled_training"):
        model.set_distilled_training(False)  # no teacher: train the averaged output, both heads learn
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    per_step = cfg.batch_size * dist.world
    if per_step > len(train_ds) // dist.world * dist.world:
        raise EdgevitError(f"batch size {cfg.batch_size} x {dist.world} process(es) is larger than the training "
                           f"split ({len(train_ds)} images); lower --batch-size")
    lr = cfg.optim.lr if cfg.lr_absolute else cfg.optim.lr * per_step / cfg.optim.lr_base_batch
    optimizer = create_optimizer_v2(model, cfg.optim.opt, lr=lr, weight_decay=cfg.optim.weight_decay,
                                    momentum=cfg.optim.momentum)
    steps = len(train_ds) // per_step
    scheduler, _ = create_scheduler_v2(optimizer, sched=cfg.optim.sched, num_epochs=cfg.epochs,
                                       warmup_epochs=cfg.optim.warmup_epochs, warmup_lr=cfg.optim.warmup_lr,
                                       min_lr=cfg.optim.min_lr, step_on_epochs=False, updates_per_epoch=steps)
    scaler = torch.amp.GradScaler(enabled=cfg.amp == "fp16" and device.type == "cuda")
    net: nn.Module = model
    if dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    aug = cfg.aug
    mixup_on = aug.mixup > 0 or aug.cutmix > 0
    mixup = Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mixup_prob,
                  switch_prob=aug.mixup_switch_prob, label_smoothing=aug.smoothing,
                  num_classes=cfg.num_classes) if mixup_on else None
    loss_fn = DistillationLoss(_criterion(aug, mixup_on), dtype, alpha, tau)
    data = SeededAugment(train_ds, cfg.seed)
    rounds = max(1, min(cfg.epochs, cfg.cache_rounds or cfg.epochs))

    start, history = 0, []
    if resume and checkpoint is not None:
        if not checkpoint.exists():
            raise EdgevitError(f"--resume: no checkpoint at {checkpoint}; start the run without --resume")
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start, history = int(state["epoch"]), list(state.get("history", []))

    for epoch in range(start, cfg.epochs):
        rnd = epoch % rounds
        loader = make_loader(data, cfg.batch_size, cfg.workers, rnd, dist)
        use_cache = cache is not None and dtype != "none" and cache.has(rnd)
        net.train()
        t0, seen, loss_sum, correct, agree = time.perf_counter(), 0, 0.0, 0, 0
        task = progress(f"{label} epoch {epoch + 1}/{cfg.epochs}", len(loader)) if progress else None
        for b, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            target = y
            if mixup is not None:
                x, target = seeded(lambda: mixup(x, y), _seed(cfg.seed, rnd, b, dist.rank, 1))
            t_logits = None
            if dtype != "none":
                if use_cache:
                    t_logits = cache.get(rnd, b).to(device)
                else:
                    t_logits = teacher(x)
                    if cache is not None:
                        cache.put(rnd, t_logits)
            with _autocast(cfg.amp, device):
                out = net(x)
                loss = loss_fn(out, target, t_logits)
            if not math.isfinite(loss.item()):
                raise EdgevitError(f"{label}: loss became {loss.item()} at epoch {epoch + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.optim.clip_grad:
                scaler.unscale_(optimizer)
                dispatch_clip_grad(model.parameters(), cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step_update(epoch * steps + b + 1)
            main_out = out[0] if isinstance(out, tuple) else out
            if t_logits is not None:  # how often the teacher names the dominant class of the (mixed) image
                dominant = target.argmax(-1) if target.ndim == 2 else target
                agree += int((t_logits.argmax(-1) == dominant).sum())
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((main_out.argmax(-1) == y).sum())
            if task:
                task(b + 1, loss=loss_sum / seen, acc=100.0 * correct / seen, ips=seen * dist.world / (time.perf_counter() - t0))
        if cache is not None and not use_cache and dtype != "none":
            cache.finish_round(rnd)
        scheduler.step(epoch + 1)
        train_s = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": loss_sum / max(seen, 1),
               "train_top1": 100.0 * correct / max(seen, 1), "train_img_s": seen * dist.world / train_s,
               "train_seconds": train_s}
        if dtype != "none":
            row["teacher_label_agreement"] = 100.0 * agree / max(seen, 1)
        if dist.main:
            row.update({f"val_{k}": v for k, v in evaluate(model, val_ds, device=device).items()})
            history.append(row)
            if metrics_path is not None:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps({"stage": label, **row}) + "\n")
            if checkpoint is not None:
                save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                                             "epoch": epoch + 1, "rng": _rng_state(), "history": history})
            if on_epoch:
                on_epoch(epoch + 1, row)
        dist.barrier()
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(False)
    model.eval()
    return history[-1] if history else {}
