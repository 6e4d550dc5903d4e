"""Decoupled KD and logit standardisation against the papers' formulas, written out here in numpy
(float64) on small hand-sized batches, independently of edgevit/distill/losses.py."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgevit.config import DistillConfig, Recipe, apply_overrides
from edgevit.distill.losses import DistillationLoss, dkd, soft_kd, standardize
from edgevit.errors import EdgevitError

# 3 images, 4 classes, written by hand
STUDENT = [[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5], [-1.0, 1.5, 0.3, 0.8]]
TEACHER = [[3.0, -0.5, 0.2, 1.0], [0.0, 1.0, 2.5, 0.5], [0.5, 2.0, -0.4, 1.2]]
LABELS = [0, 2, 3]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q)).sum())


def dkd_by_hand(zs, zt, labels, alpha, beta, tau):
    """Zhao et al. 2022, eq. (1)-(6): b = [p_t, 1 - p_t], p_hat = softmax over the non-target classes;
    DKD = alpha * KL(b_T || b_S) + beta * KL(p_hat_T || p_hat_S), times tau^2, batch mean."""
    total = 0.0
    for s, t, y in zip(np.asarray(zs, float), np.asarray(zt, float), labels):
        ps, pt = _softmax(s / tau), _softmax(t / tau)
        bs, bt = np.array([ps[y], 1 - ps[y]]), np.array([pt[y], 1 - pt[y]])
        rest = [k for k in range(len(s)) if k != y]
        hs, ht = ps[rest] / ps[rest].sum(), pt[rest] / pt[rest].sum()
        total += tau * tau * (alpha * _kl(bt, bs) + beta * _kl(ht, hs))
    return total / len(labels)


def zscore_by_hand(z):
    """Sun et al. 2024, eq. (5): (z - mean) / sigma with sigma = sqrt(1/K * sum (z_k - mean)^2)."""
    z = np.asarray(z, float)
    mean = z.sum(-1, keepdims=True) / z.shape[-1]
    sigma = np.sqrt(((z - mean) ** 2).sum(-1, keepdims=True) / z.shape[-1])
    return (z - mean) / sigma


def soft_by_hand(zs, zt, tau):
    return sum(
        tau * tau * _kl(_softmax(t / tau), _softmax(s / tau)) for s, t in zip(np.asarray(zs), np.asarray(zt))
    ) / len(zs)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


@pytest.mark.parametrize("alpha,beta,tau", [(1.0, 8.0, 1.0), (0.5, 2.0, 4.0), (1.0, 0.0, 2.0)])
def test_dkd_is_the_papers_tckd_plus_nckd(alpha, beta, tau):
    got = dkd(t(STUDENT), t(TEACHER), torch.tensor(LABELS), alpha, beta, tau).item()
    assert got == pytest.approx(dkd_by_hand(STUDENT, TEACHER, LABELS, alpha, beta, tau), rel=1e-5)


def test_dkd_reformulates_kd_as_tckd_plus_teacher_weighted_nckd():
    """The paper's eq. (4), on each image: KD = TCKD + (1 - p_t^T) * NCKD."""
    for s, tt, y in zip(STUDENT, TEACHER, LABELS):
        tau = 2.0
        weight = 1 - _softmax(np.array(tt) / tau)[y]
        reformulated = dkd(t([s]), t([tt]), torch.tensor([y]), 1.0, float(weight), tau).item()
        assert reformulated == pytest.approx(soft_kd(t([s]), t([tt]), tau).item(), rel=1e-5)


def test_dkd_stays_finite_when_the_teacher_is_certain():
    """p_t^T rounds to 1 in float32: log(1 - p_t) must not be -inf, nor its gradient NaN."""
    s = t([[0.0, 1.0, -1.0]]).requires_grad_()
    loss = dkd(s, t([[60.0, 0.0, 1.0]]), torch.tensor([0]), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_standardize_is_the_z_score_with_the_population_std():
    assert np.allclose(standardize(t(TEACHER)).numpy(), zscore_by_hand(TEACHER), atol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_standardized_soft_kd_is_kl_of_z_scored_logits(tau):
    cls, y = t(STUDENT).flip(0), torch.tensor(LABELS)
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), "soft", alpha=0.4, tau=tau, standardize=True)
    got = loss((cls, t(STUDENT)), y, t(TEACHER)).item()
    ce = F.cross_entropy(cls, y).item()
    kd = soft_by_hand(zscore_by_hand(STUDENT), zscore_by_hand(TEACHER), tau)
    assert got == pytest.approx(0.6 * ce + 0.4 * kd, rel=1e-5)
    # what standardisation is for: the teacher's range and offset no longer matter
    rescaled = loss((cls, t(STUDENT)), y, 5 * t(TEACHER) - 2).item()
    assert rescaled == pytest.approx(got, rel=1e-5)


def test_dkd_loss_weights_labels_mixup_and_pseudo_labels():
    cls = t(STUDENT).flip(0)
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), "dkd", alpha=0.5, tau=2.0, dkd_alpha=1.0, dkd_beta=4.0)
    y = torch.tensor(LABELS)
    got = loss((cls, t(STUDENT)), y, t(TEACHER)).item()
    expect = 0.5 * F.cross_entropy(cls, y).item() + 0.5 * dkd_by_hand(STUDENT, TEACHER, LABELS, 1.0, 4.0, 2.0)
    assert got == pytest.approx(expect, rel=1e-5)
    # an unlabelled image (-1) takes the teacher's argmax as its target class; a Mixup target its dominant class
    teacher_argmax = int(np.argmax(TEACHER[1]))
    _, part = loss.parts((cls, t(STUDENT)), torch.tensor([0, -1, 3]), t(TEACHER))
    assert part.item() == pytest.approx(dkd_by_hand(STUDENT, TEACHER, [0, teacher_argmax, 3], 1.0, 4.0, 2.0), rel=1e-5)
    mixed = 0.7 * F.one_hot(y, 4) + 0.3 * F.one_hot(y.flip(0), 4)
    from timm.loss import SoftTargetCrossEntropy

    soft_loss = DistillationLoss(SoftTargetCrossEntropy(), "dkd", tau=2.0, dkd_alpha=1.0, dkd_beta=4.0)
    _, part = soft_loss.parts((cls, t(STUDENT)), mixed, t(TEACHER))
    assert part.item() == pytest.approx(dkd_by_hand(STUDENT, TEACHER, LABELS, 1.0, 4.0, 2.0), rel=1e-5)


def test_bad_combinations_are_one_line_from_the_recipe_model():
    with pytest.raises(ValueError, match="standardize applies to soft and dkd"):
        DistillConfig(type="hard", standardize=True)
    cfg = DistillConfig(type="dkd", standardize=True)
    with pytest.raises(ValueError, match="standardize applies"):  # checked again when a field changes
        cfg.type = "hard"
    with pytest.raises(EdgevitError) as err:
        apply_overrides(Recipe(), {"distill.type": "none", "distill.standardize": True})
    assert "\n" not in str(err.value) and "distill" in str(err.value) and "standardize" in str(err.value)


def test_the_cli_accepts_dkd_and_its_weights():
    from edgevit.distill.command import add_arguments, resolve_recipe

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--distillation", "dkd", "--dkd-alpha", "0.5", "--dkd-beta", "2", "--standardize"])
    d = resolve_recipe(a).distill
    assert (d.type, d.dkd_alpha, d.dkd_beta, d.standardize) == ("dkd", 0.5, 2.0, True)
    with pytest.raises(EdgevitError, match="standardize"):
        resolve_recipe(p.parse_args(["--distillation", "hard", "--standardize"]))
