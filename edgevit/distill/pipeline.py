"""`distill(recipe, run_dir)`: data -> teacher(s) -> student -> trained student in the run folder.

Writes runs/<run>/recipe.yaml (resolved), metrics.jsonl, checkpoint.pt (every epoch, for --resume),
teachers/<key>.pt (fine-tuned teachers, reused by later runs), student.pt (what export reads) and
one row per stage in the runs ledger.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import yaml
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from edgevit.config import Recipe
from edgevit.data import Datasets, build_datasets
from edgevit.distill.cache import TeacherCache
from edgevit.distill.engine import DistInfo, FitConfig, evaluate, fit, init_distributed
from edgevit.errors import EdgevitError
from edgevit.models import teachers as T
from edgevit.models.students import check_model_name, create_student, save_student, student_kwargs
from edgevit.runs import Ledger

Log = Callable[[str], None]


def _student_build(recipe: Recipe, num_classes: int) -> tuple[str, dict[str, Any]]:
    s = recipe.student
    return s.name, student_kwargs(s.name, num_classes, recipe.data.img_size, s.patch_size, s.drop_path, s.kwargs)


def _check_input(model: nn.Module, img_size: int, what: str) -> None:
    """Fail early, in one line, when a model cannot take the data's image size."""
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(2, 3, img_size, img_size))
    except Exception as exc:  # noqa: BLE001 - shape errors come in many types
        raise EdgevitError(f"{what} cannot take {img_size}x{img_size} inputs ({str(exc).splitlines()[0][:160]}); "
                           f"change data.img_size (--img-size) or the model") from None


def _teacher_schedule(recipe: Recipe, num_classes: int, self_teacher: bool) -> FitConfig:
    """How a teacher is trained on the data. A `self` teacher is the student's architecture trained
    from scratch, so it gets the student's own schedule (epochs, optimizer, warm-up, lr scaling) and
    the next seed; other teachers are fine-tuned with teacher.finetune_* (absolute lr, 1 warm-up epoch)."""
    tc = recipe.teacher
    aug = recipe.aug if tc.finetune_aug == "recipe" else recipe.aug.model_copy(
        update={"mixup": 0.0, "cutmix": 0.0, "auto_augment": None, "reprob": 0.0})
    common = {"batch_size": recipe.data.batch_size, "workers": recipe.data.workers, "aug": aug, "num_classes": num_classes}
    if self_teacher:
        return FitConfig(epochs=recipe.epochs, optim=recipe.optim, seed=recipe.seed + 1, amp=recipe.amp,
                         channels_last=recipe.channels_last, **common)
    return FitConfig(epochs=tc.finetune_epochs, seed=0, lr_absolute=True, **common,
                     optim=recipe.optim.model_copy(update={"lr": tc.finetune_lr, "warmup_epochs": 1, "min_lr": 1e-6}))


def build_teacher(recipe: Recipe, data: Datasets, runs_root: Path, run_dir: Path, dist: DistInfo, log: Log,
                  progress: Any, metrics_path: Path) -> tuple[T.Teacher, list[dict[str, Any]]]:
    """Every teacher of the recipe, fine-tuned where its head does not fit (cached per key)."""
    tc = recipe.teacher
    if tc.checkpoints and len(tc.checkpoints) != len(tc.names):
        raise EdgevitError(f"{len(tc.names)} teacher(s) but {len(tc.checkpoints)} checkpoint(s): give one "
                           f"--teacher-checkpoint per --teacher, or none")
    members, info = [], []
    for i, name in enumerate(tc.names):
        ckpt = tc.checkpoints[i] if tc.checkpoints else None
        arch = recipe.student.name if name == T.SELF else name
        check_model_name(arch)
        kwargs: dict[str, Any] = {}
        if name == T.SELF:
            _, kwargs = _student_build(recipe, data.num_classes)
            torch.manual_seed(recipe.seed + 1)  # its own initial weights, not a copy of the student's
            model = create_student(arch, kwargs)
            source, needs_training = "self", True
        elif ckpt is None and tc.pretrained:
            model, pretrained = T.create_pretrained(arch, data.num_classes, log)
            source, needs_training = ("pretrained" if pretrained else "scratch"), True
        else:
            model = timm.create_model(arch, pretrained=False, num_classes=data.num_classes)
            source, needs_training = "scratch", True
        if ckpt is not None:
            needs_training, source = T.load_checkpoint_into(model, ckpt), f"checkpoint {ckpt}"
        _check_input(model, recipe.data.img_size, f"teacher {name}")
        self_from_scratch = name == T.SELF and ckpt is None
        schedule = _teacher_schedule(recipe, data.num_classes, self_teacher=self_from_scratch)
        key = T.teacher_key({"arch": arch, "source": source, "ckpt": T.file_hash(ckpt) if ckpt else None,
                             "data": recipe.data.spec, "img": recipe.data.img_size, "classes": data.classes,
                             "epochs": schedule.epochs, "lr": tc.finetune_lr,
                             "aug": recipe.aug.model_dump() if tc.finetune_aug == "recipe" else "light",
                             "student": kwargs if name == T.SELF else None,
                             **({"self_schedule": [recipe.optim.model_dump(), recipe.seed, recipe.data.batch_size]}
                                if self_from_scratch else {})})
        cached = T.find_cached_teacher(runs_root, key) if needs_training else None
        tdir = run_dir / "teachers"
        tdir.mkdir(exist_ok=True)
        if cached is not None:
            model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
            log(f"teacher {name}: reusing fine-tuned weights from {cached}")
            needs_training = False
            if cached.parent != tdir:
                (tdir / cached.name).write_bytes(cached.read_bytes())
        if needs_training and schedule.epochs > 0:
            if dist.main:
                verb = "training" if name == T.SELF else "fine-tuning"
                log(f"teacher {name}: {verb} {arch} on the training split for {schedule.epochs} epochs")
                train = build_datasets(recipe.data, schedule.aug, crop_pct=recipe.aug.crop_pct).train
                fit(model, train, data.val, schedule, checkpoint=tdir / f"{key}.ckpt",
                    resume=(tdir / f"{key}.ckpt").exists(),
                    metrics_path=metrics_path, progress=progress, label=f"teacher {name}",
                    on_epoch=lambda e, r: log(f"teacher {name} epoch {e}/{schedule.epochs}: loss {r['train_loss']:.3f}"
                                              f"  val top-1 {r['val_top1']:.2f}%  {r['train_img_s']:.0f} img/s"))
                tmp = tdir / f"{key}.pt.tmp"
                torch.save(model.state_dict(), tmp)
                tmp.replace(tdir / f"{key}.pt")
                (tdir / f"{key}.ckpt").unlink(missing_ok=True)
            dist.barrier()
            if not dist.main:
                model.load_state_dict(torch.load(tdir / f"{key}.pt", map_location="cpu", weights_only=True))
        acc = evaluate(model, data.val)["top1"] if dist.main else float("nan")
        log(f"teacher {name}: {acc:.2f}% top-1 on the held-out split")
        members.append(model.to(dist.device))
        info.append({"name": name, "arch": arch, "source": source, "key": key, "val_top1": acc})
    teacher = T.Teacher(members, list(tc.names), tc.ensemble, bf16=tc.bf16 and dist.device.type == "cpu",
                        student_mean=IMAGENET_DEFAULT_MEAN, student_std=IMAGENET_DEFAULT_STD).to(dist.device)
    return teacher, info


def distill(recipe: Recipe, run_dir: Path, *, resume: bool = False, log: Log = print,
            progress: Any = None) -> dict[str, Any]:
    """Train the recipe's student in run_dir; returns the summary written to the ledger."""
    t_start = time.perf_counter()
    dist = init_distributed()
    runs_root = run_dir.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(runs_root) if dist.main else None
    metrics_path = run_dir / "metrics.jsonl"
    if dist.main:
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        ledger.record_run(run_dir.name, kind="distill", status="running", path=str(run_dir),
                          recipe=recipe.model_dump(mode="json"))
    data = build_datasets(recipe.data, recipe.aug)
    torch.manual_seed(recipe.seed)  # the student's initial weights follow the recipe's seed
    name, kwargs = _student_build(recipe, data.num_classes)
    student = create_student(name, kwargs)
    _check_input(student, recipe.data.img_size, f"student {name}")
    if recipe.student.checkpoint and T.load_checkpoint_into(student, recipe.student.checkpoint):
        log(f"student {name}: classifier reset (checkpoint head does not fit {data.num_classes} classes)")
    d = recipe.distill
    teacher, tinfo = (None, [])
    if d.type != "none":
        teacher, tinfo = build_teacher(recipe, data, runs_root, run_dir, dist, log, progress, metrics_path)
    cache = None
    if d.cache_teacher and d.type != "none":
        key = T.teacher_key({"teachers": [t["key"] for t in tinfo], "ens": recipe.teacher.ensemble,
                             "data": recipe.data.model_dump(), "aug": recipe.aug.model_dump(), "seed": recipe.seed,
                             "world": dist.world, "rounds": d.cache_rounds or recipe.epochs, "topk": d.cache_topk,
                             "bf16": recipe.teacher.bf16})
        cache = TeacherCache(runs_root / ".teacher-cache" / key, d.cache_topk, data.num_classes, dist.rank)
    cfg = FitConfig(epochs=recipe.epochs, batch_size=recipe.data.batch_size, workers=recipe.data.workers,
                    optim=recipe.optim, aug=recipe.aug, num_classes=data.num_classes, seed=recipe.seed,
                    amp=recipe.amp, channels_last=recipe.channels_last, cache_rounds=d.cache_rounds)
    ckpt = run_dir / "checkpoint.pt"

    def on_epoch(epoch: int, row: dict) -> None:
        ledger.record_eval(run_dir.name, epoch=epoch, split="val",
                           metrics={k[4:]: v for k, v in row.items() if k.startswith("val_")})
        log(f"epoch {epoch}/{recipe.epochs}: loss {row['train_loss']:.3f}  val top-1 {row['val_top1']:.2f}%"
            + (f" (cls {row['val_top1_cls']:.2f}, dist {row['val_top1_dist']:.2f})" if "val_top1_cls" in row else "")
            + f"  {row['train_img_s']:.0f} img/s")

    t_train = time.perf_counter()
    final = fit(student, data.train, data.val, cfg, distill=(d.type, d.alpha, d.tau), teacher=teacher, cache=cache,
                checkpoint=ckpt, resume=resume and ckpt.exists(), metrics_path=metrics_path, dist=dist, progress=progress,
                label="student", on_epoch=on_epoch if dist.main else None)
    summary: dict[str, Any] = {}
    if dist.main:
        meta = {"model_name": name, "create_kwargs": kwargs, "class_names": data.classes,
                "num_classes": data.num_classes, "img_size": recipe.data.img_size,
                "mean": list(IMAGENET_DEFAULT_MEAN), "std": list(IMAGENET_DEFAULT_STD), "crop_pct": recipe.aug.crop_pct,
                "data": recipe.data.model_dump(mode="json"), "distill": d.type, "teachers": [t["name"] for t in tinfo]}
        save_student(run_dir / "student.pt", student, meta)
        summary = {"student": name, "teachers": tinfo, "distillation": d.type, "epochs": recipe.epochs,
                   "val_top1": final.get("val_top1"), "val_top1_cls": final.get("val_top1_cls"),
                   "val_top1_dist": final.get("val_top1_dist"), "train_seconds": time.perf_counter() - t_train,
                   "wall_seconds": time.perf_counter() - t_start, "params_m": sum(p.numel() for p in student.parameters()) / 1e6,
                   "cache": {"hits": cache.hits, "misses": cache.misses} if cache else None}
        ledger.record_run(run_dir.name, kind="distill", status="done", path=str(run_dir), summary=summary)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    dist.barrier()
    return summary
