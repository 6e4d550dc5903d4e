"""The one training loop: distillation, teacher fine-tunes, pruning recovery and QAT all run here.

A `Trainer` drives a task (edgevit/train/tasks.py) over seeded rounds of augmented batches: timm
supplies the optimizer and scheduler factories, Mixup/CutMix, the soft-target losses and gradient
clipping. The loop adds what distillation on small machines needs: exact `--resume` (atomic
checkpoints with every RNG state, augmentation a pure function of seed/round/sample), DDP under
torchrun, bf16/channels_last where a probe measures them faster (edgevit/train/speed.py), per-epoch
loss components and held-out accuracy of both heads, and hooks for the stages built on it:

    after_backward(trainer)            e.g. a pruner's regularizer on the gradients
    after_step(trainer, step)          e.g. an iterative pruning step, then trainer.rebuild_optimizer()
    after_epoch(trainer, epoch, row)   e.g. logging, the ledger

Any `timm.task.TrainingTask` drives it unchanged (e.g. timm's ClassificationTask or
FeatureDistillationTask): the loop reads timm's keys (`loss`, `output`, `task_loss`, `kd_loss`),
trains `get_trainable_module()` (a student plus its projectors), evaluates and hands back
`get_eval_model()` (the student alone), saves `get_task_state()` in checkpoint.pt beside the model,
and clips `get_clip_parameters()`. edgevit's own additions are duck-typed, used where a task has
them: `set_criterion` (the recipe's Mixup/smoothing criterion; a timm task keeps its own),
`begin_epoch(round)` / `end_epoch()`, a `batch=` argument (the teacher-logit cache's position) and
a `teacher_logits` key (teacher agreement).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import TrainingTask
from timm.utils import dispatch_clip_grad, unwrap_model
from torch import nn
from torch.utils.data import Dataset

from edgevit.config import AugConfig, OptimConfig
from edgevit.data import seeded
from edgevit.errors import EdgevitError
from edgevit.files import read_torch, torch_save
from edgevit.train import speed
from edgevit.train.evaluate import evaluate
from edgevit.train.sampling import SeededAugment, derive_seed, make_loader

Log = Callable[[str], None]
EXTRA_LOSSES = ("feature_loss", "attention_loss")  # a task's own loss terms, logged per epoch as train_<key>


class NonFiniteLoss(EdgevitError):
    """The training loss became inf or nan; the message names the precision it happened under."""

    def __init__(self, label: str, loss: float, epoch: int, precision: speed.Precision):
        self.what, self.epoch = f"loss became {loss} at epoch {epoch}", epoch
        fix = "lower the learning rate" + ("" if precision.amp == "off" else ", or set amp: off")
        super().__init__(f"{label}: {self.what} under {precision.describe()}; {fix}")


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

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (e.g. a measured choice every rank must share)."""
        if self.world == 1:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]


def init_distributed() -> DistInfo:
    """The run's device, and DDP when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if cuda:  # as timm's train.py: TF32 matmuls, cuDNN picks its fastest convolutions (teacher probes included)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if cuda else "cpu"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    return DistInfo(torch_dist.get_rank(), world, local, device)


# ------------------------------------------------------------------------------------ RNG state
def _rng_state() -> dict[str, Any]:
    np_state, py_state = np.random.get_state(), random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        # drop-path masks and dropout drawn on a GPU come from its own generators
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    if s.get("cuda") and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    return read_torch(path, "training checkpoint", "delete it to start that stage over, or restore a copy")


# ------------------------------------------------------------------------------------ config, hooks
@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    workers: int
    optim: OptimConfig
    aug: AugConfig
    num_classes: int
    seed: int = 0
    amp: str = "auto"  # auto: measured (edgevit/train/speed.py) | bf16 | fp16 | off
    channels_last: str | bool = "auto"
    fused_attn: str | bool = "auto"
    lr_absolute: bool = False  # teacher fine-tunes give lr as is; students scale it by batch size
    cache_rounds: int | None = None
    checkpoint_every_s: float = 0.0  # 0: a checkpoint every epoch; else at most one per this many seconds
    speed_memo: Path | None = None  # where measured precision choices are remembered (runs/.speed)
    precise_bn: bool = True  # re-estimate BatchNorm statistics with the final weights before the last evaluation


class Hooks:
    """Override what you need; every method is called on every hook the trainer was given."""

    def after_backward(self, trainer: "Trainer") -> None: ...

    def after_step(self, trainer: "Trainer", step: int) -> None: ...

    def after_epoch(self, trainer: "Trainer", epoch: int, row: dict[str, Any]) -> None: ...


def _criterion(aug: AugConfig, mixup_on: bool) -> nn.Module:
    if mixup_on:
        return SoftTargetCrossEntropy()  # Mixup carries the label smoothing in its targets
    if aug.smoothing > 0:
        return LabelSmoothingCrossEntropy(aug.smoothing)
    return nn.CrossEntropyLoss()


# ------------------------------------------------------------------------------------ the loop
class Trainer:
    def __init__(
        self,
        task: TrainingTask,
        train_ds: Dataset,
        val_ds: Dataset,
        cfg: TrainConfig,
        *,
        checkpoint: Path | None = None,
        metrics_path: Path | None = None,
        dist: DistInfo | None = None,
        progress: Callable[..., Any] | None = None,
        label: str = "train",
        hooks: Sequence[Hooks] = (),
        log: Log = print,
    ):
        self.task, self.train_ds, self.val_ds, self.cfg = task, train_ds, val_ds, cfg
        self.checkpoint, self.metrics_path, self.label = checkpoint, metrics_path, label
        self.dist = dist or DistInfo()
        self.progress, self.hooks, self.log = progress, list(hooks), log
        self.history: list[dict[str, Any]] = []
        self.update = 0  # optimizer steps taken: the scheduler's position
        self.precision = speed.Precision()
        self._pass_batch = "batch" in inspect.signature(task.forward).parameters

    @property
    def model(self) -> nn.Module:
        """The model being trained, without projectors or wrappers: what is evaluated and saved."""
        return unwrap_model(self.task.get_eval_model())

    @property
    def trainable(self) -> nn.Module:
        """What the optimizer updates: the model, plus whatever the task trains with it (projectors)."""
        return unwrap_model(self.task.get_trainable_module())

    @property
    def device(self) -> torch.device:
        return self.dist.device

    # ------------------------------------------------------------------ setup
    def _steps_per_epoch(self) -> int:
        per_step = self.cfg.batch_size * self.dist.world
        if per_step > len(self.train_ds) // self.dist.world * self.dist.world:
            raise EdgevitError(
                f"batch size {self.cfg.batch_size} x {self.dist.world} process(es) is larger than the "
                f"training split ({len(self.train_ds)} images); lower batch_size",
                "batch_size",
            )
        return len(self._loader(SeededAugment(self.train_ds, self.cfg.seed), 0))

    def _loader(self, data: SeededAugment, rnd: int) -> Any:
        return make_loader(
            data,
            self.cfg.batch_size,
            self.cfg.workers,
            rnd,
            self.dist.world,
            self.dist.rank,
            repeats=3 if self.cfg.aug.repeated_aug else 0,
            pin_memory=self.device.type == "cuda",  # so the non_blocking copies below overlap the step
        )

    def _lr(self) -> float:
        o = self.cfg.optim
        return o.lr if self.cfg.lr_absolute else o.lr * self.cfg.batch_size * self.dist.world / o.lr_base_batch

    def _create_optimizer(self) -> torch.optim.Optimizer:
        """timm's optimizer, with PyTorch's fused kernel where the optimizer has one (AdamW, Adam, SGD):
        one kernel per step instead of the default foreach kernels, which measured faster on the CPU
        (docs/results/timm_kd_compare.md). Others (LAMB, LARS...) say so with a TypeError and run unfused."""
        o = self.cfg.optim
        kwargs = dict(lr=self._lr(), weight_decay=o.weight_decay, momentum=o.momentum)
        try:
            return create_optimizer_v2(self.trainable, o.opt, fused=True, **kwargs)
        except (TypeError, RuntimeError):  # no fused kernel for this optimizer, device or dtype
            return create_optimizer_v2(self.trainable, o.opt, **kwargs)

    def rebuild_optimizer(self) -> None:
        """A new optimizer over the model's current parameters (after a structural change); the
        learning-rate schedule keeps its position. Optimizer moments start afresh."""
        o = self.cfg.optim
        self.optimizer = self._create_optimizer()
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched=o.sched,
            num_epochs=self.cfg.epochs,
            warmup_epochs=o.warmup_epochs,
            warmup_lr=o.warmup_lr,
            min_lr=o.min_lr,
            step_on_epochs=False,
            updates_per_epoch=self.steps,
        )
        self.scheduler.step_update(self.update)
        if self.dist.world > 1:  # DDP must see the new parameters too
            self.task.trainable_module = self.trainable
            self.task.prepare_distributed(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _choose_precision(self, state: dict[str, Any] | None) -> None:
        saved = speed.precision_of(state.get("precision")) if state else None
        if saved is None and self.dist.main:
            x = torch.randn(self.cfg.batch_size, 3, *self._image_size(), device=self.device)
            saved = speed.choose(
                self.model,
                x,
                amp=self.cfg.amp,
                channels_last=self.cfg.channels_last,
                fused_attn=self.cfg.fused_attn,
                memo_dir=self.cfg.speed_memo,
                label=self.label,
                log=self.log,
            )
        self.precision = self.dist.broadcast(saved)
        self.precision.apply(self.model)

    def _image_size(self) -> tuple[int, int]:
        x = self.val_ds[0][0]
        return int(x.shape[-2]), int(x.shape[-1])

    def _setup(self, resume: bool) -> dict[str, Any] | None:
        torch.manual_seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        self.task.to(self.device)
        self.steps = self._steps_per_epoch()
        state = None
        if resume and self.checkpoint is not None and self.checkpoint.exists():
            state = load_checkpoint(self.checkpoint)
        self._choose_precision(state)
        aug = self.cfg.aug
        mixup_on = aug.mixup > 0 or aug.cutmix > 0
        self.mixup = (
            Mixup(
                mixup_alpha=aug.mixup,
                cutmix_alpha=aug.cutmix,
                prob=aug.mixup_prob,
                switch_prob=aug.mixup_switch_prob,
                label_smoothing=aug.smoothing,
                num_classes=self.cfg.num_classes,
            )
            if mixup_on
            else None
        )
        if hasattr(self.task, "set_criterion"):  # edgevit's tasks; a timm task brings its own criterion
            self.task.set_criterion(_criterion(aug, mixup_on))
        self.scaler = torch.amp.GradScaler(enabled=self.precision.amp == "fp16" and self.device.type == "cuda")
        self.rebuild_optimizer()  # and, under DDP, wraps the trainable module
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.task.load_task_state(state.get("task_state"))
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if state.get("scaler"):  # empty when the checkpoint ran without fp16's scaler (another device)
                self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            self.history, self.update = list(state.get("history", [])), int(state.get("update", 0))
        return state

    # ------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train for cfg.epochs (from the checkpoint's epoch when resuming); returns the last epoch's row.

        A fresh run whose measured (`auto`) autocast turns the loss non-finite in its first epoch starts
        again in fp32: bf16's 8-bit mantissa is the likelier cause then, not the learning rate (a
        resnet10t fine-tune at 16 px did so on one CI machine and not on another)."""
        resuming = resume and self.checkpoint is not None and self.checkpoint.exists()
        retry = self.cfg.amp == "auto" and not resuming and self.dist.world == 1  # ranks must not diverge
        fresh = self._snapshot() if retry else None
        try:
            return self._fit(resume)
        except NonFiniteLoss as e:
            if fresh is None or e.epoch != 1 or self.precision.amp == "off":
                raise
            self.log(f"{self.label}: {e.what} under {self.precision.describe()}; training again in fp32")
            fp32 = replace(self.precision, amp="off")
            shape = (self.cfg.batch_size, 3, *self._image_size())
            speed.pin(self.model, shape, fp32, self.cfg.speed_memo, f"{e.what} under {self.precision.describe()}")
            self.model.load_state_dict(fresh[0])
            self.task.load_task_state(fresh[1])
            self.cfg = replace(self.cfg, amp="off", channels_last=fp32.channels_last)
            self.history, self.update = [], 0
            return self._fit(resume=False)

    def _snapshot(self) -> tuple[dict[str, Any], Any]:
        return copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.task.get_task_state())

    def _fit(self, resume: bool) -> dict[str, Any]:
        state = self._setup(resume)
        start = int(state["epoch"]) if state else 0
        if state and self.dist.main:
            self.log(f"resuming {self.label} at epoch {start + 1} of {self.cfg.epochs}")
        data = SeededAugment(self.train_ds, self.cfg.seed)
        rounds = max(1, min(self.cfg.epochs, self.cfg.cache_rounds or self.cfg.epochs))
        last_save = time.monotonic()
        for epoch in range(start, self.cfg.epochs):
            row = self._train_epoch(data, epoch, epoch % rounds)
            if self.cfg.precise_bn and epoch + 1 == self.cfg.epochs:
                self._precise_bn(data, epoch % rounds)
            if self.dist.main:
                row.update({f"val_{k}": v for k, v in evaluate(self.model, self.val_ds, device=self.device).items()})
                self.history.append(row)
                if self.metrics_path is not None:
                    with open(self.metrics_path, "a") as f:
                        f.write(json.dumps({"stage": self.label, **row}) + "\n")
                due = time.monotonic() - last_save >= self.cfg.checkpoint_every_s or epoch + 1 == self.cfg.epochs
                if self.checkpoint is not None and due:
                    self._save(epoch + 1)
                    last_save = time.monotonic()
                for h in self.hooks:
                    h.after_epoch(self, epoch + 1, row)
            self.dist.barrier()
        if hasattr(self.model, "set_distilled_training"):
            self.model.set_distilled_training(False)
        self.model.eval()
        return self.history[-1] if self.history else {}

    @torch.no_grad()
    def _precise_bn(self, data: SeededAugment, rnd: int) -> None:
        """BatchNorm's running statistics average the last ~10 steps' batches under weights that moved
        since; after a short high-lr schedule they no longer fit the weights (a RegNetY-160 trained from
        scratch on the digits lost most of its held-out accuracy to them). One pass over
        the training split with the final weights and a cumulative average fixes them."""
        bns = [
            m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        ]
        if not bns:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        self.model.train()
        p = self.precision
        for x, _ in self._loader(data, rnd):
            with p.autocast(self.device):
                self.model(p.input(x.to(self.device)))
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        self.model.eval()

    def _save(self, epoch: int) -> None:
        torch_save(
            {
                "model": self.model.state_dict(),
                "task_state": self.task.get_task_state(),  # e.g. projectors: trained, resumed, never exported
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epoch,
                "update": self.update,
                "rng": _rng_state(),
                "history": self.history,
                "precision": vars(self.precision).copy(),
            },
            self.checkpoint,
        )

    def _train_epoch(self, data: SeededAugment, epoch: int, rnd: int) -> dict[str, Any]:
        cfg, dist, p = self.cfg, self.dist, self.precision
        loader = self._loader(data, rnd)
        self.task.train()
        if hasattr(self.task, "begin_epoch"):
            self.task.begin_epoch(rnd)
        sync_every = 1 if self.device.type == "cpu" else 25  # host syncs cost time on a GPU only
        sums = {
            k: torch.zeros((), device=self.device)
            for k in ("loss", "task_loss", "kd_loss", *EXTRA_LOSSES, "correct", "agree", "labelled")
        }
        self._kd_seen, extras_seen = False, set()
        t0, seen = time.perf_counter(), 0
        bar = self.progress(f"{self.label} epoch {epoch + 1}/{cfg.epochs}", len(loader)) if self.progress else None
        for b, (x, y) in enumerate(loader):
            x, y = p.input(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)
            target = y
            if self.mixup is not None:
                x, target = seeded(lambda: self.mixup(x, y), derive_seed(cfg.seed, rnd, b, dist.rank, 1))
            with p.autocast(self.device):
                out = self.task(x, target, batch=b) if self._pass_batch else self.task(x, target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out["loss"]).backward()
            for h in self.hooks:
                h.after_backward(self)
            if cfg.optim.clip_grad:
                self.scaler.unscale_(self.optimizer)
                dispatch_clip_grad(self.task.get_clip_parameters(), cfg.optim.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.update += 1
            self.scheduler.step_update(self.update)
            seen += len(y)
            self._kd_seen |= self._accumulate(sums, out, target, y)
            for k in EXTRA_LOSSES:
                if out.get(k) is not None:
                    sums[k] += out[k].detach().float() * len(y)
                    extras_seen.add(k)
            if (b + 1) % sync_every == 0 or b + 1 == len(loader):
                loss = float(sums["loss"]) / seen
                if not math.isfinite(loss):
                    raise NonFiniteLoss(self.label, loss, epoch + 1, p)
                if bar:
                    bar(
                        b + 1,
                        loss=loss,
                        acc=100.0 * float(sums["correct"]) / max(float(sums["labelled"]), 1),
                        ips=seen * dist.world / (time.perf_counter() - t0),
                    )
            for h in self.hooks:
                h.after_step(self, self.update)
        if hasattr(self.task, "end_epoch"):
            self.task.end_epoch()
        self.scheduler.step(epoch + 1)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": float(sums["loss"]) / max(seen, 1),
            "train_task_loss": float(sums["task_loss"]) / max(seen, 1),
            "train_top1": 100.0 * float(sums["correct"]) / max(float(sums["labelled"]), 1),
            "train_img_s": seen * dist.world / seconds,
            "train_seconds": seconds,
        }
        if self._kd_seen:  # the ledger's name for the task's kd_loss
            row["train_distill_loss"] = float(sums["kd_loss"]) / max(seen, 1)
        for k in EXTRA_LOSSES:
            if k in extras_seen:
                row[f"train_{k}"] = float(sums[k]) / max(seen, 1)
        if getattr(self.task, "teacher_logits", None) is not None:
            row["teacher_label_agreement"] = 100.0 * float(sums["agree"]) / max(float(sums["labelled"]), 1)
        return row

    @staticmethod
    def _accumulate(
        sums: dict[str, torch.Tensor], out: dict[str, torch.Tensor], target: torch.Tensor, y: torch.Tensor
    ) -> bool:
        """Running sums for the epoch's row; True when the step had a distillation term. Accuracy and
        teacher agreement count labelled images only (data.labelled < 1 marks the others -1: no label
        to agree with). A timm task may return only `loss` and `output`."""
        n = len(y)
        known = y >= 0
        sums["labelled"] += known.sum()
        sums["loss"] += out["loss"].detach().float() * n
        sums["task_loss"] += out.get("task_loss", out["loss"]).detach().float() * n
        kd = out.get("kd_loss")
        if kd is not None:
            sums["kd_loss"] += kd.detach().float() * n
        output = out["output"][0] if isinstance(out["output"], tuple) else out["output"]
        sums["correct"] += (output.detach().argmax(-1) == y).sum()
        if out.get("teacher_logits") is not None:  # how often the teacher names the (mixed) image's dominant class
            dominant = target.argmax(-1) if target.ndim == 2 else target
            sums["agree"] += ((out["teacher_logits"].argmax(-1) == dominant) & known).sum()
        return kd is not None
