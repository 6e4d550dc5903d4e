"""What one training step computes: tasks in timm.task's form, `task(x, target) -> dict`.

The dict holds timm's keys: `loss` (what is backpropagated), `output` (the class head, for train
accuracy), `task_loss` and, when distilling, `kd_loss` (logged per epoch as `train_distill_loss`),
plus edgevit's `teacher_logits` (teacher agreement). Unlike timm's TokenDistillationTask, the
teacher here is a `TeacherLogits` source: the live teacher (one model or an ensemble) or the
teacher-logit cache when it holds the round, so ensembles and cached rounds feed the same DeiT loss
(edgevit/distill/losses.py). What edgevit's tasks add to timm's protocol — `set_criterion`,
`begin_epoch(round)` / `end_epoch()`, `forward(..., batch=)` — the trainer uses where a task has it,
so timm's own tasks run in the trainer unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from timm.task import TrainingTask
from torch import nn

from edgevit.distill.cache import TeacherCache
from edgevit.distill.losses import LOGIT_TYPES, DistillationLoss


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


class TeacherLogits:
    """Teacher logits for batch b of augmentation round r: replayed from the cache when it holds the
    round, otherwise the teacher's forward (stored in the cache when there is one)."""

    def __init__(self, teacher: Callable[[torch.Tensor], torch.Tensor], cache: TeacherCache | None = None):
        self.teacher, self.cache = teacher, cache
        self.round, self.replay = 0, False

    def begin_round(self, rnd: int) -> None:
        self.round = rnd
        self.replay = self.cache is not None and self.cache.has(rnd)

    def __call__(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        if self.replay:
            return self.cache.get(self.round, batch).to(x.device)
        logits = self.teacher(x)
        return self.cache.put(self.round, logits) if self.cache is not None else logits

    def end_round(self) -> None:
        if self.cache is not None and not self.replay:
            self.cache.finish_round(self.round)


class ClassificationTask(TrainingTask):
    """Plain supervised training; a two-head student trains the average of its heads."""

    kind = "none"

    def __init__(self, model: nn.Module):
        super().__init__(verbose=False)
        self.trainable_module = model
        self.loss_fn: DistillationLoss | None = None  # the trainer sets it (Mixup decides the criterion)

    @property
    def model(self) -> nn.Module:
        return unwrap(self.trainable_module)

    def set_criterion(self, criterion: nn.Module) -> None:
        self.loss_fn = DistillationLoss(criterion, "none")

    def prepare_distributed(self, device_ids: list | None = None, **ddp_kwargs: Any) -> "ClassificationTask":
        self.trainable_module = nn.parallel.DistributedDataParallel(
            self.trainable_module, device_ids=device_ids, **ddp_kwargs
        )
        return self

    def begin_epoch(self, rnd: int) -> None:
        if hasattr(self.model, "set_distilled_training"):
            self.model.set_distilled_training(self.kind != "none")

    def end_epoch(self) -> None:
        pass

    def forward(self, input: torch.Tensor, target: torch.Tensor, batch: int = 0) -> dict[str, torch.Tensor]:
        output = self.trainable_module(input)
        task_loss, _ = self.loss_fn.parts(output, target)
        return {"loss": task_loss, "output": output[0] if isinstance(output, tuple) else output, "task_loss": task_loss}


class DistillationTask(ClassificationTask):
    """DeiT distillation: (1 - alpha) * CE(cls head, y) + alpha * distill(dist head, teacher)."""

    def __init__(
        self,
        model: nn.Module,
        teacher: Callable[[torch.Tensor], torch.Tensor] | TeacherLogits,
        kind: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        cache: TeacherCache | None = None,
        *,
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        standardize: bool = False,
    ):
        super().__init__(model)
        if kind not in LOGIT_TYPES or kind == "none":
            raise ValueError(f"distillation kind must be one of {', '.join(LOGIT_TYPES[1:])}, not {kind!r}")
        self.kind, self.alpha, self.tau = kind, alpha, tau
        self.loss_options = {"dkd_alpha": dkd_alpha, "dkd_beta": dkd_beta, "standardize": standardize}
        self.teacher_logits = teacher if isinstance(teacher, TeacherLogits) else TeacherLogits(teacher, cache)

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        teacher: Any,
        d: Any,
        cache: TeacherCache | None = None,
        kind: str | None = None,
        **kw: Any,
    ) -> "DistillationTask":
        """The logit task a recipe's `distill:` section (DistillConfig) asks for; `kind` overrides its
        type (pruning recovery of an undistilled run uses hard). A feature or attention recipe's logit
        part is hard."""
        kind = kind or d.type
        return cls(
            model,
            teacher,
            "hard" if kind in ("feature", "attention") else kind,
            d.alpha,
            d.tau,
            cache=cache,
            dkd_alpha=d.dkd_alpha,
            dkd_beta=d.dkd_beta,
            standardize=d.standardize,
            **kw,
        )

    def set_criterion(self, criterion: nn.Module) -> None:
        self.loss_fn = DistillationLoss(criterion, self.kind, self.alpha, self.tau, **self.loss_options)

    def begin_epoch(self, rnd: int) -> None:
        super().begin_epoch(rnd)
        self.teacher_logits.begin_round(rnd)

    def end_epoch(self) -> None:
        self.teacher_logits.end_round()

    def forward(self, input: torch.Tensor, target: torch.Tensor, batch: int = 0) -> dict[str, torch.Tensor]:
        t_logits = self.teacher_logits(input, batch)
        output = self.trainable_module(input)
        task_loss, distill_loss = self.loss_fn.parts(output, target, t_logits)
        return {
            "loss": self.loss_fn.combine(task_loss, distill_loss),
            "output": output[0],
            "task_loss": task_loss,
            "kd_loss": distill_loss,
            "teacher_logits": t_logits,
        }


class FeatureDistillationTask(DistillationTask):
    """DeiT hard distillation plus intermediate features (edgevit/distill/features.py):
    loss = (1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax teacher) + sum_i w_i * L(P_i(s_i), t_i).

    The live teacher runs every step (its hooked maps are the targets); the trainable module is the
    student with its projectors, the eval model (what is evaluated, saved and exported) the student."""

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        layers: list[dict[str, Any]],
        loss: str = "mse",
        alpha: float = 0.5,
        img_size: int = 32,
    ):
        from edgevit.distill import features as feat

        super().__init__(model, teacher, "hard", alpha)
        t_model = teacher.members[0].model if hasattr(teacher, "members") else teacher
        t_names, s_names = [spec["teacher"] for spec in layers], [spec["student"] for spec in layers]
        self.weights, self.feature_kind = [float(spec.get("weight", 1.0)) for spec in layers], loss
        self.teacher_taps = feat.Taps(t_model, t_names, "teacher")
        t_device = next(t_model.parameters()).device
        teacher(torch.zeros(2, 3, img_size, img_size, device=t_device))
        t_shapes = [m.shape for m in self.teacher_taps.take()]
        s_device = next(model.parameters()).device
        s_shapes = feat.shapes(model, s_names, torch.zeros(2, 3, img_size, img_size, device=s_device), "student")
        projectors = nn.ModuleList(nn.Conv2d(s[1], t[1], 1, device=s_device) for s, t in zip(s_shapes, t_shapes))
        self.trainable_module = feat.FeatureStudent(model, s_names, projectors)
        self.pairs = [f"{s} -> {t}" for s, t in zip(s_names, t_names)]

    @classmethod
    def from_config(
        cls, model: nn.Module, teacher: Any, d: Any, cache: TeacherCache | None = None, kind: str | None = None, **kw
    ) -> "FeatureDistillationTask":
        from edgevit.distill.features import default_layers

        f = d.features
        layers = [spec.model_dump() for spec in f.layers] if f is not None and f.layers else []
        if not layers:
            layers = default_layers(teacher.members[0].model if hasattr(teacher, "members") else teacher, model)
        return cls(model, teacher, layers, f.loss if f is not None else "mse", d.alpha, **kw)

    @property
    def model(self) -> nn.Module:
        return unwrap(self.trainable_module).student

    def remove_hooks(self) -> None:
        """Leave both models as they were built (no forward hooks), e.g. before an export."""
        self.teacher_taps.remove()
        unwrap(self.trainable_module).taps.remove()

    def get_eval_model(self, module: nn.Module | None = None, ema: bool = False) -> nn.Module:
        return self.model

    def get_task_state(self, module: nn.Module | None = None, ema: bool = False) -> dict[str, Any]:
        return {"projectors": unwrap(self.trainable_module).projectors.state_dict()}

    def load_task_state(self, state: dict[str, Any] | None, strict: bool = True, **kw: Any) -> None:
        if state and "projectors" in state:
            unwrap(self.trainable_module).projectors.load_state_dict(state["projectors"], strict=strict)

    def forward(self, input: torch.Tensor, target: torch.Tensor, batch: int = 0) -> dict[str, torch.Tensor]:
        from edgevit.distill.features import feature_loss

        t_logits = self.teacher_logits(input, batch)
        t_maps = [m.clone() for m in self.teacher_taps.take()]  # out of inference mode: loss targets
        output, s_maps = self.trainable_module(input)
        task_loss, hard = self.loss_fn.parts(output, target, t_logits)
        feature = sum(w * feature_loss(s, t, self.feature_kind) for w, s, t in zip(self.weights, s_maps, t_maps))
        return {
            "loss": self.loss_fn.combine(task_loss, hard) + feature,
            "output": output[0],
            "task_loss": task_loss,
            "kd_loss": hard,
            "feature_loss": feature,
            "teacher_logits": t_logits,
        }


class AttentionDistillationTask(DistillationTask):
    """DeiT hard distillation plus a ViT teacher's attention (edgevit/distill/attention.py):
    loss = (1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax teacher) + weight * sum_i w_i * L(s_i, t_i).

    The live teacher runs every step (its hooked q/k/v are the targets). The loss learns nothing, so
    the trainable module is the student itself and there is no task state to checkpoint."""

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        blocks: list[dict[str, Any]],
        loss: list[str] | tuple[str, ...] = ("kl",),
        weight: float = 1.0,
        alpha: float = 0.5,
        img_size: int = 32,
    ):
        from edgevit.distill import attention as att

        super().__init__(model, teacher, "hard", alpha)
        t_model = teacher.members[0].model if hasattr(teacher, "members") else teacher
        t_paths = att.resolve(t_model, [spec["teacher"] for spec in blocks], "teacher")
        s_paths = att.resolve(model, [spec["student"] for spec in blocks], "student")
        self.kinds, self.weight = list(loss), float(weight)
        self.weights = [float(spec.get("weight", 1.0)) for spec in blocks]
        values = "value" in self.kinds
        self.teacher_taps = att.AttentionTaps(t_model, t_paths, "teacher", values)
        t_device = next(t_model.parameters()).device
        teacher(torch.zeros(2, 3, img_size, img_size, device=t_device))  # through the teacher's own resize
        t_shapes = att.dims(self.teacher_taps.take())
        s_device = next(model.parameters()).device
        s_shapes = att.shapes(model, s_paths, torch.zeros(2, 3, img_size, img_size, device=s_device), "student")
        att.check_pairs(t_paths, t_shapes, s_paths, s_shapes, values)
        self.student_taps = att.AttentionTaps(model, s_paths, "student", values)
        self.pairs = [f"{s} -> {t}" for s, t in zip(s_paths, t_paths)]

    @classmethod
    def from_config(
        cls, model: nn.Module, teacher: Any, d: Any, cache: TeacherCache | None = None, kind: str | None = None, **kw
    ) -> "AttentionDistillationTask":
        from edgevit.distill.attention import default_blocks

        a = d.attention
        blocks = [spec.model_dump() for spec in a.blocks] if a is not None and a.blocks else []
        if not blocks:
            blocks = default_blocks(teacher.members[0].model if hasattr(teacher, "members") else teacher, model)
        loss, weight = (a.loss, a.weight) if a is not None else (["kl"], 1.0)
        return cls(model, teacher, blocks, loss, weight, d.alpha, **kw)

    def remove_hooks(self) -> None:
        """Leave both models as they were built (no forward hooks), e.g. before an export."""
        self.teacher_taps.remove()
        self.student_taps.remove()

    def forward(self, input: torch.Tensor, target: torch.Tensor, batch: int = 0) -> dict[str, torch.Tensor]:
        from edgevit.distill.attention import attention_loss

        t_logits = self.teacher_logits(input, batch)
        # out of inference mode: loss targets
        t_caps = [{k: v.clone() if torch.is_tensor(v) else v for k, v in c.items()} for c in self.teacher_taps.take()]
        output = self.trainable_module(input)
        s_caps = self.student_taps.take()
        task_loss, hard = self.loss_fn.parts(output, target, t_logits)
        attention = self.weight * sum(
            w * attention_loss(s, t, self.kinds) for w, s, t in zip(self.weights, s_caps, t_caps)
        )
        return {
            "loss": self.loss_fn.combine(task_loss, hard) + attention,
            "output": output[0],
            "task_loss": task_loss,
            "kd_loss": hard,
            "attention_loss": attention,
            "teacher_logits": t_logits,
        }
