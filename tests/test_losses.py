"""The DeiT loss equals the paper's formula; teachers ensemble by the mean."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from edgevit.distill.cache import TeacherCache
from edgevit.distill.losses import DistillationLoss
from edgevit.models.teachers import Teacher


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(8, 5, generator=g),
        torch.randn(8, 5, generator=g),
        torch.randn(8, 5, generator=g),
        torch.randint(0, 5, (8,), generator=g),
    )


def _ce(logits, y):  # by hand: -log softmax at the label, batch mean
    rows = zip(logits.tolist(), y.tolist())
    return float(sum(-math.log(math.exp(row[k]) / sum(math.exp(v) for v in row)) for row, k in rows) / len(y))


def test_none(batch):
    cls, dist, _, y = batch
    assert DistillationLoss(torch.nn.CrossEntropyLoss(), "none")(cls, y).item() == pytest.approx(_ce(cls, y), rel=1e-5)


def test_hard_is_half_ce_label_half_ce_teacher_argmax(batch):
    cls, dist, teacher, y = batch
    got = DistillationLoss(torch.nn.CrossEntropyLoss(), "hard", alpha=0.5)((cls, dist), y, teacher).item()
    assert got == pytest.approx(0.5 * _ce(cls, y) + 0.5 * _ce(dist, teacher.argmax(1)), rel=1e-5)


@pytest.mark.parametrize("tau,alpha", [(1.0, 0.5), (3.0, 0.1)])
def test_soft_is_tau_squared_kl(batch, tau, alpha):
    cls, dist, teacher, y = batch
    ps, pt = F.softmax(dist / tau, 1), F.softmax(teacher / tau, 1)
    kl = float((pt * (pt.log() - ps.log())).sum(1).mean())  # KL(teacher || student), per sample, batch mean
    got = DistillationLoss(torch.nn.CrossEntropyLoss(), "soft", alpha=alpha, tau=tau)((cls, dist), y, teacher).item()
    assert got == pytest.approx((1 - alpha) * _ce(cls, y) + alpha * tau * tau * kl, rel=1e-5)


def test_works_with_mixup_soft_targets(batch):
    from timm.loss import SoftTargetCrossEntropy

    cls, dist, teacher, y = batch
    soft_y = 0.7 * F.one_hot(y, 5) + 0.3 * F.one_hot(y.flip(0), 5)
    got = DistillationLoss(SoftTargetCrossEntropy(), "hard")((cls, dist), soft_y, teacher).item()
    base = float((-soft_y * F.log_softmax(cls, 1)).sum(1).mean())
    assert got == pytest.approx(0.5 * base + 0.5 * _ce(dist, teacher.argmax(1)), rel=1e-5)


def test_ensemble_of_two_teachers_is_the_mean():
    torch.manual_seed(0)
    a = timm.create_model("resnet10t", num_classes=4)
    b = timm.create_model("resnet10t", num_classes=4)
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        la, lb = a.eval()(x), b.eval()(x)
        assert torch.allclose(Teacher([a, b], ["a", "b"])(x), (la + lb) / 2, atol=1e-5)
        probs = Teacher([a, b], ["a", "b"], ensemble="probs")(x).exp()
        assert torch.allclose(probs, (la.softmax(1) + lb.softmax(1)) / 2, atol=1e-5)


def test_teacher_stays_in_eval_mode():
    t = Teacher([timm.create_model("resnet10t", num_classes=4)], ["a"])
    t.train()
    assert not any(m.training for m in t.modules())


def test_logit_cache_roundtrip(tmp_path):
    logits = torch.randn(6, 20)
    cache = TeacherCache(tmp_path, topk=5, num_classes=20)
    cache.put(0, logits[:3])
    cache.put(0, logits[3:])
    cache.finish_round(0)
    again = TeacherCache(tmp_path, topk=5, num_classes=20)
    assert again.has(0) and not again.has(1)
    rebuilt = torch.cat([again.get(0, 0), again.get(0, 1)])
    assert torch.equal(rebuilt.argmax(1), logits.argmax(1))
    top = logits.topk(5, 1)
    assert torch.allclose(rebuilt.gather(1, top.indices), top.values, atol=1e-2)  # fp16 storage
    # probability mass outside the top-k is kept (spread evenly)
    assert torch.allclose(
        rebuilt.softmax(1).gather(1, top.indices), logits.softmax(1).gather(1, top.indices), atol=5e-3
    )


def test_unlabelled_images_take_the_teachers_label_on_the_class_head(batch):
    """data.labelled < 1: an unlabelled image (-1) is learnt by the class head from the teacher's label
    when there is a teacher, and left out of the task loss when there is none."""
    cls, dist, teacher, y = batch
    y = y.clone()
    y[::2] = -1
    filled = torch.where(y >= 0, y, teacher.argmax(-1))
    task, distill = DistillationLoss(torch.nn.CrossEntropyLoss(), "hard").parts((cls, dist), y, teacher)
    assert task.item() == pytest.approx(_ce(cls, filled), rel=1e-5)
    assert distill.item() == pytest.approx(_ce(dist, teacher.argmax(-1)), rel=1e-5)
    task, _ = DistillationLoss(torch.nn.CrossEntropyLoss(), "none").parts(cls, y)
    assert task.item() == pytest.approx(_ce(cls[y >= 0], y[y >= 0]), rel=1e-5)
