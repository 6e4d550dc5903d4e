"""The trainer on tiny real models and the embedded digits: loss components, hooks, structural
changes mid-training, repeated augmentation, and the measured precision choice."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from edgevit.config import AugConfig, OptimConfig
from edgevit.data import build_datasets
from edgevit.models.students import create_student, student_kwargs
from edgevit.train import ClassificationTask, DistillationTask, Hooks, TrainConfig, Trainer, speed
from edgevit.train.sampling import SeededAugment, make_loader

NAME = "deit_tiny_distilled_patch16_224"
AUG = AugConfig(auto_augment=None, hflip=0.0, scale=(0.6, 1.0), color_jitter=0.0, reprob=0.0, mixup=0.8, cutmix=1.0)


@pytest.fixture(scope="module")
def digits():
    ds = build_datasets({"spec": "digits", "img_size": 16}, AUG)
    return torch.utils.data.Subset(ds.train, range(256)), torch.utils.data.Subset(ds.val, range(64))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_student(NAME, student_kwargs(NAME, 10, 16, 4, 0.0, {"depth": 1, "embed_dim": 32, "num_heads": 2}))


def config(**kw) -> TrainConfig:
    base = dict(
        epochs=2,
        batch_size=32,
        workers=0,
        optim=OptimConfig(lr=4e-3, warmup_epochs=0),
        aug=AUG,
        num_classes=10,
        seed=0,
        amp="off",
        channels_last=False,
        fused_attn=True,
    )
    return TrainConfig(**{**base, **kw})


class Counting(Hooks):
    def __init__(self) -> None:
        self.backward = self.steps = 0
        self.epochs: list[int] = []

    def after_backward(self, trainer: Trainer) -> None:
        self.backward += 1
        assert all(p.grad is not None for p in trainer.model.head.parameters())

    def after_step(self, trainer: Trainer, step: int) -> None:
        self.steps = step

    def after_epoch(self, trainer: Trainer, epoch: int, row: dict) -> None:
        self.epochs.append(epoch)


def test_distillation_logs_components_that_add_up_to_the_total(digits, tmp_path: Path) -> None:
    train, val = digits
    teacher = tiny(1).eval()
    hooks = Counting()
    task = DistillationTask(tiny(), lambda x: teacher(x).detach(), "hard", alpha=0.3)
    trainer = Trainer(task, train, val, config(), metrics_path=tmp_path / "m.jsonl", hooks=[hooks], log=lambda m: None)
    row = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and row == {k: v for k, v in rows[-1].items() if k != "stage"}
    for r in rows:  # the epoch means obey the loss's own linear combination
        assert r["train_loss"] == pytest.approx(0.7 * r["train_task_loss"] + 0.3 * r["train_distill_loss"], rel=1e-4)
        assert r["train_distill_loss"] > 0 and 0 <= r["teacher_label_agreement"] <= 100 and "val_top1_dist" in r
    assert hooks.backward == hooks.steps == 2 * (256 // 32) and hooks.epochs == [1, 2]


def test_a_structural_change_mid_training_keeps_the_schedule(digits) -> None:
    """A hook narrows an MLP after step 3 (as a pruner would) and rebuilds the optimizer: training goes
    on over the new parameters and the learning rate continues from where the schedule was."""
    train, val = digits

    class Narrow(Hooks):
        def after_step(self, trainer: Trainer, step: int) -> None:
            if step != 3:
                return
            mlp = trainer.model.blocks[0].mlp
            mlp.fc1 = nn.Linear(32, 40)
            mlp.fc2 = nn.Linear(40, 32)
            lr = trainer.optimizer.param_groups[0]["lr"]
            trainer.rebuild_optimizer()
            assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr)
            assert any(p is mlp.fc1.weight for g in trainer.optimizer.param_groups for p in g["params"])

    model = tiny()
    cfg = config(epochs=2, optim=OptimConfig(lr=4e-3, warmup_epochs=1))
    Trainer(ClassificationTask(model), train, val, cfg, hooks=[Narrow()], log=lambda m: None).fit()
    assert model.blocks[0].mlp.fc1.weight.shape == (40, 32)
    assert not torch.equal(model.blocks[0].mlp.fc1.weight, nn.Linear(32, 40).weight)  # it trained after the change


def test_the_optimizer_uses_pytorchs_fused_kernel_where_it_has_one(digits) -> None:
    """AdamW and SGD get fused=True (faster here); LAMB has no fused kernel and runs as timm builds it."""
    train, val = digits
    for opt, fused in (("adamw", True), ("sgd", True), ("lamb", None)):
        trainer = Trainer(
            ClassificationTask(tiny()), train, val, config(optim=OptimConfig(opt=opt)), log=lambda m: None
        )
        trainer._setup(resume=False)
        assert trainer.optimizer.defaults.get("fused") == fused, opt
    trainer.fit()  # LAMB, unfused, trains
    assert trainer.history[-1]["train_loss"] > 0


def test_repeated_augmentation_gives_each_copy_its_own_augmentation(digits) -> None:
    train, _ = digits
    data = SeededAugment(train, seed=0)
    loader = make_loader(data, 32, 0, rnd=0, repeats=3)
    index = list(loader.sampler)
    base = [i % len(train) for i in index]
    assert len(set(base)) < len(base)  # images repeat within the round
    copies = [j for j in index if j % len(train) == base[0]]
    assert len(copies) >= 2
    a, b = (data[j][0] for j in copies[:2])
    assert not torch.equal(a, b)
    assert torch.equal(data[copies[0]][0], data[copies[0]][0])  # and each copy is replayable


def test_the_recipes_repeated_aug_reaches_the_trainers_loader(digits) -> None:
    train, val = digits
    hooks = Counting()
    cfg = config(epochs=1, aug=AUG.model_copy(update={"repeated_aug": True}))
    trainer = Trainer(ClassificationTask(tiny()), train, val, cfg, hooks=[hooks], log=lambda m: None)
    base = [i % len(train) for i in trainer._loader(SeededAugment(train, 0), 0).sampler]
    assert len(set(base)) < len(base)  # the round repeats images: timm's RepeatAugSampler is in use
    plain = Trainer(ClassificationTask(tiny()), train, val, config(epochs=1), log=lambda m: None)
    assert len(set(plain._loader(SeededAugment(train, 0), 0).sampler)) == len(train)
    trainer.fit()
    assert hooks.epochs == [1] and hooks.steps > 0


def test_the_precision_probe_picks_a_candidate_and_is_remembered(tmp_path: Path) -> None:
    model = create_student(
        "convmixer_256_8_ks5_p2", student_kwargs("convmixer_256_8_ks5_p2", 10, 16, None, 0.0, {"depth": 1, "dim": 32})
    )
    x = torch.randn(8, 3, 16, 16)
    lines: list[str] = []
    first = speed.choose(model, x, memo_dir=tmp_path, label="probe", log=lines.append)
    assert first in speed.candidates(model, x.device, "auto", "auto") and len(lines) == 1
    assert "fp32" in lines[0] and "ms" in lines[0]
    (memo,) = tmp_path.glob("*.json")
    assert json.loads(memo.read_text())["choice"] == {
        "amp": first.amp,
        "channels_last": first.channels_last,
        "fused_attn": None,
    }  # a ConvMixer has no attention
    again = speed.choose(model, x, memo_dir=tmp_path, label="probe", log=lines.append)
    assert again == first and len(lines) == 1  # read back, not measured again
    assert speed.choose(model, x, amp="off", channels_last=False, memo_dir=tmp_path) == speed.Precision("off", False)
    amps = 2 if speed.cpu_has_bf16() is not False else 1  # bf16 is tried only where the CPU computes it
    assert len(speed.candidates(tiny(), x.device, "auto", "auto")) == 2 * amps  # a ViT: fused/explicit attention,
    assert len(speed.candidates(model, x.device, "auto", "auto")) == 2 * amps  # a ConvMixer: both layouts


def test_explicit_attention_computes_what_the_fused_kernel_does() -> None:
    """The probe may swap timm's fused attention (SDPA) for its explicit form: same model, same numbers."""
    model, x = tiny().eval(), torch.randn(4, 3, 16, 16)
    fused = speed.Precision("off", False, True).apply(model)(x)
    explicit_model = speed.Precision("off", False, False).apply(model)
    assert [m.fused_attn for m in speed.attention_layers(explicit_model)] == [False]  # one block, one layer
    assert "explicit attention" in speed.Precision("off", False, False).describe()
    assert torch.allclose(explicit_model(x), fused, atol=1e-5)


def test_accuracy_and_teacher_agreement_count_labelled_images_only() -> None:
    """With data.labelled < 1 most targets are -1: an image with no label can neither be right nor
    agree with the teacher, so the epoch's percentages divide by the labelled count, not the batch."""
    sums = {k: torch.zeros(()) for k in ("loss", "task_loss", "distill_loss", "correct", "agree", "labelled")}
    y = torch.tensor([0, 1, -1, -1, 2, -1])
    teacher = nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 0, 2]), 3).float()  # right on 0 and 1, wrong on 2
    output = nn.functional.one_hot(torch.tensor([0, 0, 0, 1, 2, 2]), 3).float()  # right on 0 and 2
    out = {
        "loss": torch.tensor(1.0),
        "task_loss": torch.tensor(1.0),
        "distill_loss": None,
        "output": output,
        "teacher_logits": teacher,
    }
    Trainer._accumulate(sums, out, y, y)
    assert (int(sums["labelled"]), int(sums["agree"]), int(sums["correct"])) == (3, 2, 2)


class Fragile(nn.Module):
    """Finite in fp32; under bf16 autocast its linear output 256.5 rounds to 256 and the logits become -inf."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3 * 16 * 16, 10)
        nn.init.zeros_(self.lin.weight)
        nn.init.constant_(self.lin.bias, 256.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.lin(x.flatten(1)) - 256)


def test_a_measured_bf16_that_breaks_the_loss_falls_back_to_fp32(digits, tmp_path: Path) -> None:
    if speed.cpu_has_bf16() is False:
        pytest.skip("bf16 is not among the measured candidates on a CPU without native bf16")
    train, val = digits
    model = Fragile()
    memo = tmp_path / f"{speed.memo_key(model, (32, 3, 16, 16), True, torch.device('cpu'))}.json"
    memo.write_text(json.dumps({"choice": {"amp": "bf16", "channels_last": False, "fused_attn": None}}))
    cfg = config(epochs=1, amp="auto", fused_attn="auto", optim=OptimConfig(lr=1e-7, warmup_epochs=0))
    lines: list[str] = []
    with pytest.raises(Exception, match=r"loss became (nan|inf) at epoch 1 under bf16 autocast; .*set amp: off"):
        Trainer(ClassificationTask(Fragile()), train, val, config(epochs=1, amp="bf16"), log=lines.append).fit()
    trainer = Trainer(ClassificationTask(model), train, val, replace(cfg, speed_memo=tmp_path), log=lines.append)
    row = trainer.fit()
    assert trainer.precision.amp == "off" and math.isfinite(row["train_loss"])
    assert any(line.endswith("at epoch 1 under bf16 autocast; training again in fp32") for line in lines)
    # the memo now holds fp32 for this model and shape: the next run does not try bf16 and fail again
    assert json.loads(memo.read_text())["choice"]["amp"] == "off"
    lines.clear()
    again = Trainer(ClassificationTask(Fragile()), train, val, replace(cfg, speed_memo=tmp_path), log=lines.append)
    again.fit()
    assert again.precision.amp == "off" and not any("training again" in line for line in lines)
