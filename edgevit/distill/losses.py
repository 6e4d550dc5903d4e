"""The DeiT distillation loss (Touvron et al., 2021, eq. 2 and 3) as one small module.

    none: CE(student, y)
    soft: (1 - alpha) * CE(cls, y) + alpha * tau^2 * KL(softmax(dist / tau) || softmax(teacher / tau))
    hard: (1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax(teacher))      (alpha = 0.5 in DeiT)

`y` may be Mixup/CutMix soft targets: the base criterion decides (timm's SoftTargetCrossEntropy).
An unlabelled image (y = -1, data.labelled < 1) takes the teacher's argmax as its `y` (pseudo-label):
with DeiT's split alone the class head would learn from the few labelled images only (few_labels:
91.1 % -> 94.8 % held-out with pseudo-labels, 3 seeds).
The KL is averaged over the batch ("batchmean"), as in the paper and in timm's distillation tasks;
facebookresearch/deit divides by batch x classes instead, which shrinks the soft term by a factor
of the class count. Teacher logits come in as a tensor, not a teacher module, so that ensembles
and the teacher-logit cache feed the same loss (timm's TokenDistillationTask runs the teacher
inside the task and can do neither).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    def __init__(
        self, base_criterion: nn.Module, distillation_type: str = "hard", alpha: float = 0.5, tau: float = 1.0
    ):
        super().__init__()
        if distillation_type not in ("none", "soft", "hard"):
            raise ValueError(f"distillation_type must be none, soft or hard, not {distillation_type!r}")
        self.base_criterion, self.type, self.alpha, self.tau = base_criterion, distillation_type, alpha, tau

    def parts(
        self,
        outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(task loss on the class head, distillation loss on the distillation head or None)."""
        cls_out, dist_out = outputs if isinstance(outputs, tuple) else (outputs, None)
        teacher_labels = teacher_logits.argmax(-1) if teacher_logits is not None and self.type != "none" else None
        if target.ndim == 1 and teacher_labels is not None:
            # an unlabelled image (y = -1) has only the teacher's label: the class head learns it too
            # (pseudo-labelling), or that head would learn from the few labelled images alone; a no-op
            # when every image is labelled, so no host sync to find out
            base = self.base_criterion(cls_out, torch.where(target >= 0, target, teacher_labels))
        elif target.ndim == 1 and bool((target < 0).any()):  # unlabelled images, no teacher: labelled ones only
            known = target >= 0
            base = self.base_criterion(cls_out[known], target[known]) if bool(known.any()) else cls_out.sum() * 0
        else:
            base = self.base_criterion(cls_out, target)
        if self.type == "none":
            return base, None
        if dist_out is None or teacher_logits is None:
            raise ValueError("soft/hard distillation needs (cls, dist) student outputs and teacher logits")
        teacher_logits = teacher_logits.float()
        dist_out = dist_out.float()
        if self.type == "soft":
            t = self.tau
            distill = F.kl_div(
                F.log_softmax(dist_out / t, dim=-1),
                F.log_softmax(teacher_logits / t, dim=-1),
                reduction="batchmean",
                log_target=True,
            ) * (t * t)
        else:
            distill = F.cross_entropy(dist_out, teacher_labels)
        return base, distill

    def combine(self, task_loss: torch.Tensor, distill_loss: torch.Tensor | None) -> torch.Tensor:
        return task_loss if distill_loss is None else (1 - self.alpha) * task_loss + self.alpha * distill_loss

    def forward(
        self,
        outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.combine(*self.parts(outputs, target, teacher_logits))
