"""The DeiT distillation loss (Touvron et al., 2021, eq. 2 and 3) as one small module.

    none: CE(student, y)
    soft: (1 - alpha) * CE(cls, y) + alpha * tau^2 * KL(softmax(dist / tau) || softmax(teacher / tau))
    hard: (1 - alpha) * CE(cls, y) + alpha * CE(dist, argmax(teacher))      (alpha = 0.5 in DeiT)
    dkd:  (1 - alpha) * CE(cls, y) + alpha * DKD(dist, teacher, y)           (Zhao et al., 2022)

Decoupled KD splits the soft term at the label t: with p = softmax(z / tau),
    TCKD = KL([p_t^T, 1 - p_t^T] || [p_t^S, 1 - p_t^S])              (target vs the rest, binary)
    NCKD = KL(softmax(z_T / tau)_{not t} || softmax(z_S / tau)_{not t})  (among the non-target classes)
    DKD  = tau^2 * (dkd_alpha * TCKD + dkd_beta * NCKD)                   (batch mean, as their code)
so plain KD is TCKD + (1 - p_t^T) * NCKD: DKD frees the non-target part from the teacher's confidence.
Its label is y (the dominant class of a Mixup target; the teacher's argmax for an unlabelled image).

Logit standardisation (`standardize`, Sun et al., 2024) z-scores each logit vector before the
temperature softmax of soft/DKD, for teacher and student alike: Z(z) = (z - mean(z)) / std(z) with
the population std of the paper's eq. (1/K; the authors' code takes torch's default 1/(K-1), the
same up to a temperature factor sqrt(K/(K-1))), so the student matches the teacher's logit
*relations*, not their range.

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

LOGIT_TYPES = ("none", "soft", "hard", "dkd")  # what this loss computes


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each row (Sun et al., 2024): zero mean, unit population std over the classes."""
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, correction=0)
    return (logits - mean) / (std + eps)


def soft_kd(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)), batch mean."""
    return F.kl_div(
        F.log_softmax(student / tau, dim=-1),
        F.log_softmax(teacher / tau, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (tau * tau)


def dkd(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float, beta: float, tau: float
) -> torch.Tensor:
    """Decoupled KD (Zhao et al., 2022): tau^2 * (alpha * TCKD + beta * NCKD), batch mean; `target`
    holds class indices."""
    gt = F.one_hot(target, student.shape[-1]).bool()
    zs, zt = student / tau, teacher / tau
    # among the non-target classes: the target's logit pushed out of the softmax (finite, so no NaN
    # gradients; its exp underflows to exactly 0, as the authors' `- 1000 * gt_mask` does)
    ms, mt = zs.masked_fill(gt, -1e4), zt.masked_fill(gt, -1e4)
    lse_s, lse_t = torch.logsumexp(zs, -1), torch.logsumexp(zt, -1)
    # binary (target, rest) distributions in log space: log p_t = z_t - lse, log(1 - p_t) = lse(rest) - lse
    # (exact even when p_t rounds to 1, where log1p(-p_t) would need a clamp)
    ls_bin = torch.stack([zs[gt] - lse_s, torch.logsumexp(ms, -1) - lse_s], -1)
    lt_bin = torch.stack([zt[gt] - lse_t, torch.logsumexp(mt, -1) - lse_t], -1)
    tckd = F.kl_div(ls_bin, lt_bin, reduction="batchmean", log_target=True)
    nckd = F.kl_div(F.log_softmax(ms, -1), F.log_softmax(mt, -1), reduction="batchmean", log_target=True)
    return (alpha * tckd + beta * nckd) * (tau * tau)


class DistillationLoss(nn.Module):
    def __init__(
        self,
        base_criterion: nn.Module,
        distillation_type: str = "hard",
        alpha: float = 0.5,
        tau: float = 1.0,
        *,
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        standardize: bool = False,
    ):
        super().__init__()
        if distillation_type not in LOGIT_TYPES:
            raise ValueError(f"distillation_type must be one of {', '.join(LOGIT_TYPES)}, not {distillation_type!r}")
        if standardize and distillation_type not in ("soft", "dkd"):
            raise ValueError(f"standardize applies to soft and dkd distillation, not {distillation_type!r}")
        self.base_criterion, self.type, self.alpha, self.tau = base_criterion, distillation_type, alpha, tau
        self.dkd_alpha, self.dkd_beta, self.standardize = dkd_alpha, dkd_beta, standardize

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
            raise ValueError(f"{self.type} distillation needs (cls, dist) student outputs and teacher logits")
        teacher_logits = teacher_logits.float()
        dist_out = dist_out.float()
        if self.type == "hard":
            return base, F.cross_entropy(dist_out, teacher_labels)
        if self.standardize:
            dist_out, teacher_logits = standardize(dist_out), standardize(teacher_logits)
        if self.type == "soft":
            return base, soft_kd(dist_out, teacher_logits, self.tau)
        labels = target.argmax(-1) if target.ndim == 2 else torch.where(target >= 0, target, teacher_labels)
        return base, dkd(dist_out, teacher_logits, labels, self.dkd_alpha, self.dkd_beta, self.tau)

    def combine(self, task_loss: torch.Tensor, distill_loss: torch.Tensor | None) -> torch.Tensor:
        return task_loss if distill_loss is None else (1 - self.alpha) * task_loss + self.alpha * distill_loss

    def forward(
        self,
        outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        target: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.combine(*self.parts(outputs, target, teacher_logits))
