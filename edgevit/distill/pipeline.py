"""The distill stage: data -> teacher(s) -> student -> a trained student in its run folder.

`distill(recipe, run_dir)` writes runs/<run>/recipe.yaml (resolved), metrics.jsonl, checkpoint.pt
(for --resume), teachers/<key>.pt (fine-tuned teachers, reused by later runs in the same runs
folder), student.pt (what export reads), summary.json, and its row in the runs ledger ('failed'
with the reason if anything raises or the run is interrupted).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

import timm
import torch
import yaml
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from edgevit import openmp
from edgevit.config import Recipe
from edgevit.data import Datasets, build_datasets, labelled_only
from edgevit.distill.cache import TeacherCache
from edgevit.errors import EdgevitError
from edgevit.files import read_torch, torch_save, write_bytes, write_json, write_text
from edgevit.models import teachers as T
from edgevit.models.checkpoint import STUDENT_FILE, save_student
from edgevit.models.students import check_model_name, count_macs, create_student, student_kwargs
from edgevit.paths import default_runs_dir, numbered_run_dir
from edgevit.runs import Ledger
from edgevit.train import (
    AttentionDistillationTask,
    ClassificationTask,
    DistillationTask,
    DistInfo,
    FeatureDistillationTask,
    Hooks,
    TrainConfig,
    Trainer,
    evaluate,
    init_distributed,
    speed,
)

Log = Callable[[str], None]
SPEED_DIR = ".speed"  # measured precision choices, per runs folder


def student_build(recipe: Recipe, num_classes: int) -> tuple[str, dict[str, Any]]:
    s = recipe.student
    return s.name, student_kwargs(s.name, num_classes, recipe.data.img_size, s.patch_size, s.drop_path, s.kwargs)


def _check_input(model: nn.Module, img_size: int, what: str) -> None:
    """Fail early, in one line, when a model cannot take the data's image size."""
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(2, 3, img_size, img_size))
    except Exception as exc:  # noqa: BLE001 - shape errors come in many types
        raise EdgevitError(
            f"{what} cannot take {img_size}x{img_size} inputs ({str(exc).splitlines()[0][:160]}); "
            f"change data.img_size or the model",
            "data.img_size",
        ) from None


def _check_attention_blocks(model: nn.Module, recipe: Recipe, who: str) -> None:
    """An attention recipe's blocks exist in this model (a teacher: before it is fine-tuned)."""
    from edgevit.distill.attention import resolve

    a = recipe.distill.attention
    resolve(model, [getattr(b, who) for b in a.blocks] if a is not None else [], who)


def _config(recipe: Recipe, num_classes: int, runs_root: Path, **changes: Any) -> TrainConfig:
    cfg = TrainConfig(
        epochs=recipe.epochs,
        batch_size=recipe.data.batch_size,
        workers=recipe.data.workers,
        optim=recipe.optim,
        aug=recipe.aug,
        num_classes=num_classes,
        seed=recipe.seed,
        amp=recipe.amp,
        channels_last=recipe.channels_last,
        fused_attn=recipe.fused_attn,
        speed_memo=runs_root / SPEED_DIR,
    )
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def teacher_schedule(recipe: Recipe, num_classes: int, runs_root: Path, self_teacher: bool) -> TrainConfig:
    """How a teacher is trained on the data. A `self` teacher is the student's architecture trained
    from scratch, so it gets the student's own schedule and the next seed; other teachers are
    fine-tuned with teacher.finetune_* (absolute lr, 1 warm-up epoch) in the teacher's precision."""
    tc = recipe.teacher
    aug = (
        recipe.aug
        if tc.finetune_aug == "recipe"
        else recipe.aug.model_copy(update={"mixup": 0.0, "cutmix": 0.0, "auto_augment": None, "reprob": 0.0})
    )
    if self_teacher:
        return _config(recipe, num_classes, runs_root, aug=aug, seed=recipe.seed + 1)
    return _config(
        recipe,
        num_classes,
        runs_root,
        aug=aug,
        epochs=tc.finetune_epochs,
        seed=0,
        lr_absolute=True,
        amp=tc.amp,
        channels_last=tc.channels_last,
        fused_attn=tc.fused_attn,
        checkpoint_every_s=tc.checkpoint_every_s,
        optim=recipe.optim.model_copy(update={"lr": tc.finetune_lr, "warmup_epochs": 1, "min_lr": 1e-6}),
    )


def _teacher_model(
    recipe: Recipe, name: str, ckpt: str | None, data: Datasets, runs_root: Path, log: Log
) -> tuple[nn.Module, str, bool, dict[str, Any]]:
    """(model, source, needs training, what identifies it) for one teacher name."""
    tc = recipe.teacher
    if name.startswith(T.RUN_PREFIX):
        model, path = T.run_student(runs_root, name, data.classes)
        return model, f"run {path.parent.name}", False, {"run_student": T.file_hash(path)}
    arch = recipe.student.name if name == T.SELF else name
    check_model_name(arch)
    if name == T.SELF:
        _, kwargs = student_build(recipe, data.num_classes)
        torch.manual_seed(recipe.seed + 1)  # its own initial weights, not a copy of the student's
        return create_student(arch, kwargs), "self", True, {"student": kwargs}
    if ckpt is None and tc.pretrained:
        model, pretrained = T.create_pretrained(arch, data.num_classes, log)
        source = "pretrained" if pretrained else "scratch"
    else:
        model, source = timm.create_model(arch, pretrained=False, num_classes=data.num_classes), "scratch"
    needs_training = True
    if ckpt is not None:
        needs_training, source = T.load_checkpoint_into(model, ckpt), f"checkpoint {ckpt}"
    return model, source, needs_training, {"ckpt": T.file_hash(ckpt) if ckpt else None}


def build_teacher(
    recipe: Recipe,
    data: Datasets,
    runs_root: Path,
    run_dir: Path,
    dist: DistInfo,
    log: Log,
    progress: Any,
    metrics_path: Path,
) -> tuple[T.Teacher, list[dict[str, Any]]]:
    """Every teacher of the recipe, trained or fine-tuned where its head does not fit (cached per key)."""
    tc = recipe.teacher
    if tc.checkpoints and len(tc.checkpoints) != len(tc.names):
        raise EdgevitError(
            f"{len(tc.names)} teacher(s) but {len(tc.checkpoints)} checkpoint(s): give one "
            f"teacher.checkpoints entry per teacher.names entry, or none",
            ("teacher.checkpoints", "teacher.names"),
        )
    members, sizes, info = [], [], []
    for i, name in enumerate(tc.names):
        ckpt = tc.checkpoints[i] if tc.checkpoints else None
        model, source, needs_training, ident = _teacher_model(recipe, name, ckpt, data, runs_root, log)
        if i == 0 and recipe.distill.type == "attention":  # before any fine-tune: a CNN cannot give attention maps
            _check_attention_blocks(model, recipe, "teacher")
        pretrained = source == "pretrained" or source.startswith("checkpoint")
        size = T.input_size(model, tc.img_size, recipe.data.img_size, pretrained)
        _check_input(model, size, f"teacher {name}")
        if size != recipe.data.img_size:
            log(f"teacher {name}: fed at its own {size} px (the student's {recipe.data.img_size} px images resized)")
        self_from_scratch = name == T.SELF and ckpt is None
        schedule = teacher_schedule(recipe, data.num_classes, runs_root, self_teacher=self_from_scratch)
        key = T.teacher_key(
            {
                "arch": type(model).__name__
                if name.startswith(T.RUN_PREFIX)
                else (recipe.student.name if name == T.SELF else name),
                "source": source,
                **ident,
                "data": recipe.data.spec,
                "img": recipe.data.img_size,
                **({"teacher_img": size} if size != recipe.data.img_size else {}),
                "classes": data.classes,
                **({"labelled": recipe.data.labelled} if recipe.data.labelled < 1 else {}),
                "epochs": schedule.epochs,
                "lr": tc.finetune_lr if not self_from_scratch else None,
                "aug": recipe.aug.model_dump() if tc.finetune_aug == "recipe" else "light",
                "amp": schedule.amp,
                "bn": "precise",
                **(
                    {"self_schedule": [recipe.optim.model_dump(), recipe.seed, recipe.data.batch_size]}
                    if self_from_scratch
                    else {}
                ),
            }
        )
        if needs_training and schedule.epochs > 0:
            _train_teacher(
                model, size, name, key, schedule, recipe, data, runs_root, run_dir, dist, log, progress, metrics_path
            )
        model = model.to(dist.device)  # scored where it will run (a GPU), not on the CPU it was built on
        acc = evaluate(T.Resized.at(model, size, recipe.data.img_size), data.val)["top1"] if dist.main else float("nan")
        log(f"teacher {name}: {acc:.2f}% top-1 on the held-out split")
        members.append(model)
        sizes.append(size)
        info.append({"name": name, "arch": type(model).__name__, "source": source, "key": key, "val_top1": acc})
    sample = torch.randn(recipe.data.batch_size, 3, recipe.data.img_size, recipe.data.img_size, device=dist.device)
    probe = T.Teacher(
        members,
        list(tc.names),
        tc.ensemble,
        student_mean=IMAGENET_DEFAULT_MEAN,
        student_std=IMAGENET_DEFAULT_STD,
        sizes=sizes,
    ).to(dist.device)
    precision = (
        speed.choose(
            probe,
            sample,
            amp=tc.amp,
            channels_last=tc.channels_last,
            fused_attn=tc.fused_attn,
            train=False,
            memo_dir=runs_root / SPEED_DIR,
            label="teacher forward",
            log=log,
        )
        if dist.main
        else None
    )
    precision = dist.broadcast(precision)
    teacher = T.Teacher(
        members,
        list(tc.names),
        tc.ensemble,
        precision=precision,
        student_mean=IMAGENET_DEFAULT_MEAN,
        student_std=IMAGENET_DEFAULT_STD,
        sizes=sizes,
    ).to(dist.device)
    return teacher, info


def _train_teacher(
    model: nn.Module,
    size: int,
    name: str,
    key: str,
    schedule: TrainConfig,
    recipe: Recipe,
    data: Datasets,
    runs_root: Path,
    run_dir: Path,
    dist: DistInfo,
    log: Log,
    progress: Any,
    metrics_path: Path,
) -> None:
    """Fine-tune (or train) a teacher on the training split, unless a run in this runs folder already did."""
    tdir = run_dir / "teachers"
    tdir.mkdir(exist_ok=True)
    done = tdir / f"{key}.pt"
    cached = done if done.exists() else T.find_cached_teacher(runs_root, key)
    if cached is not None:
        model.load_state_dict(read_torch(cached, "fine-tuned teacher", "delete it and the teacher is trained again"))
        log(f"teacher {name}: reusing fine-tuned weights from {cached}")
        if cached != done:
            write_bytes(done, cached.read_bytes())
        return
    if dist.main:
        verb = "training" if name == T.SELF else "fine-tuning"
        arch = recipe.student.name if name == T.SELF else name
        log(f"teacher {name}: {verb} {arch} on the training split for {schedule.epochs} epochs")
        train = labelled_only(build_datasets(recipe.data, schedule.aug, crop_pct=recipe.aug.crop_pct).train)

        class EpochLog(Hooks):
            def after_epoch(self, trainer: Trainer, epoch: int, r: dict) -> None:
                log(
                    f"teacher {name} epoch {epoch}/{schedule.epochs}: loss {r['train_loss']:.3f}  "
                    f"val top-1 {r['val_top1']:.2f}%  {r['train_img_s']:.0f} img/s"
                )

        ckpt = tdir / f"{key}.ckpt"
        Trainer(
            # on the student's images, at the teacher's size
            ClassificationTask(T.Resized.at(model, size, recipe.data.img_size)),
            train,
            data.val,
            schedule,
            checkpoint=ckpt,
            metrics_path=metrics_path,
            progress=progress,
            label=f"teacher {name}",
            hooks=[EpochLog()],
            log=log,
        ).fit(resume=ckpt.exists())
        torch_save(model.state_dict(), done)
        ckpt.unlink(missing_ok=True)
    dist.barrier()
    if not dist.main:
        model.load_state_dict(read_torch(done, "fine-tuned teacher", "delete it and the teacher is trained again"))


def _cache(
    recipe: Recipe, tinfo: list[dict], teacher: T.Teacher, data: Datasets, runs_root: Path, dist: DistInfo
) -> TeacherCache | None:
    """The teacher-logit cache when asked for, or (auto) when rounds repeat within this run."""
    d = recipe.distill
    rounds = min(recipe.epochs, d.cache_rounds or recipe.epochs)
    use = d.cache_teacher if d.cache_teacher != "auto" else rounds < recipe.epochs
    if not use or d.type in ("none", "feature", "attention"):  # these losses need the live teacher
        return None
    key = T.teacher_key(
        {
            "teachers": [t["key"] for t in tinfo],
            "ens": recipe.teacher.ensemble,
            "data": recipe.data.model_dump(),
            "aug": recipe.aug.model_dump(),
            "seed": recipe.seed,
            "world": dist.world,
            "rounds": rounds,
            "topk": d.cache_topk,
            "precision": vars(teacher.precision),
        }
    )
    return TeacherCache(runs_root / ".teacher-cache" / key, d.cache_topk, data.num_classes, dist.rank)


def distill(
    recipe: Recipe,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    parent: str | None = None,
    log: Log = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Train the recipe's student in run_dir (default: runs/<recipe name>, numbered if taken).

    Returns the summary also written to summary.json and the ledger."""
    t_start = time.perf_counter()
    dist = init_distributed()
    run_dir = Path(run_dir) if run_dir is not None else numbered_run_dir(default_runs_dir(), recipe.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(run_dir.parent) if dist.main else None
    scope = (
        ledger.recording(
            run_dir.name, kind="distill", path=run_dir, parent=parent, recipe=recipe.model_dump(mode="json")
        )
        if ledger
        else contextlib.nullcontext()
    )
    with scope:
        if dist.main:
            write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        summary = _distill(recipe, run_dir, dist, resume, log, progress, t_start)
        if ledger:
            ledger.record_run(run_dir.name, status="done", summary=summary)
    dist.barrier()
    return summary


def _distill(
    recipe: Recipe, run_dir: Path, dist: DistInfo, resume: bool, log: Log, progress: Any, t_start: float
) -> dict[str, Any]:
    runs_root = run_dir.parent
    metrics_path = run_dir / "metrics.jsonl"
    data = build_datasets(recipe.data, recipe.aug)
    if recipe.data.labelled < 1 and (recipe.aug.mixup > 0 or recipe.aug.cutmix > 0):
        raise EdgevitError(
            "data.labelled < 1 cannot mix images (unlabelled ones have no target): set aug.mixup and aug.cutmix to 0"
        )
    torch.manual_seed(recipe.seed)  # the student's initial weights follow the recipe's seed
    name, kwargs = student_build(recipe, data.num_classes)
    student = create_student(name, kwargs)
    _check_input(student, recipe.data.img_size, f"student {name}")
    if recipe.student.checkpoint and T.load_checkpoint_into(student, recipe.student.checkpoint):
        log(f"student {name}: classifier reset (checkpoint head does not fit {data.num_classes} classes)")
    d = recipe.distill
    if d.type == "attention":
        _check_attention_blocks(student, recipe, "student")
    teacher, tinfo, cache = None, [], None
    if d.type != "none":
        teacher, tinfo = build_teacher(recipe, data, runs_root, run_dir, dist, log, progress, metrics_path)
        cache = _cache(recipe, tinfo, teacher, data, runs_root, dist)
    if teacher is None:
        task = ClassificationTask(student)
    elif d.type == "feature":
        task = FeatureDistillationTask.from_config(student, teacher, d, img_size=recipe.data.img_size)
        log(
            f"feature distillation: student {', '.join(task.pairs)} teacher ({task.feature_kind}), "
            "live teacher (no logit cache); projectors train with the student, kept in checkpoint.pt only"
        )
    elif d.type == "attention":
        task = AttentionDistillationTask.from_config(student, teacher, d, img_size=recipe.data.img_size)
        log(
            f"attention distillation: student {', '.join(task.pairs)} teacher ({'+'.join(task.kinds)}), "
            "live teacher (no logit cache); no learned parameters: student.pt holds the student alone"
        )
    else:
        task = DistillationTask.from_config(student, teacher, d, cache=cache)
    ckpt = run_dir / "checkpoint.pt"
    if resume and not ckpt.exists():
        log(f"resuming: the teacher is ready; the student starts at epoch 1 of {recipe.epochs}")
    ledger = Ledger(runs_root) if dist.main else None

    class EpochLog(Hooks):
        def after_epoch(self, trainer: Trainer, epoch: int, row: dict) -> None:
            ledger.record_eval(
                run_dir.name,
                epoch=epoch,
                split="val",
                metrics={
                    **{k[4:]: v for k, v in row.items() if k.startswith("val_")},
                    **{
                        k: v for k, v in row.items() if k.startswith("train_") or k in ("lr", "teacher_label_agreement")
                    },
                },
            )
            heads = (
                f" (cls {row['val_top1_cls']:.2f}, dist {row['val_top1_dist']:.2f})" if "val_top1_cls" in row else ""
            )
            log(
                f"epoch {epoch}/{recipe.epochs}: loss {row['train_loss']:.3f}  val top-1 {row['val_top1']:.2f}%"
                f"{heads}  {row['train_img_s']:.0f} img/s"
            )

    if openmp.chosen and dist.main:
        log(openmp.chosen)
    t_train = time.perf_counter()
    train = data.train if teacher is not None else labelled_only(data.train)  # no teacher: labelled images only
    trainer = Trainer(
        task,
        train,
        data.val,
        _config(recipe, data.num_classes, runs_root, cache_rounds=d.cache_rounds),
        checkpoint=ckpt,
        metrics_path=metrics_path,
        dist=dist,
        progress=progress,
        label="student",
        hooks=[EpochLog()] if dist.main else [],
        log=log,
    )
    final = trainer.fit(resume=resume)
    if isinstance(task, (FeatureDistillationTask, AttentionDistillationTask)):
        task.remove_hooks()
    if not dist.main:
        return {}
    meta = {
        "model_name": name,
        "create_kwargs": kwargs,
        "class_names": data.classes,
        "num_classes": data.num_classes,
        "img_size": recipe.data.img_size,
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
        "crop_pct": recipe.aug.crop_pct,
        "data": recipe.data.model_dump(mode="json"),
        "distill": d.type,
        "teachers": [t["name"] for t in tinfo],
    }
    save_student(run_dir / STUDENT_FILE, student, meta)
    summary = {
        "student": name,
        "teachers": tinfo,
        "distillation": d.type,
        "epochs": recipe.epochs,
        "val_top1": final.get("val_top1"),
        "val_top1_cls": final.get("val_top1_cls"),
        "val_top1_dist": final.get("val_top1_dist"),
        "precision": trainer.precision.describe(),
        "train_seconds": time.perf_counter() - t_train,
        "wall_seconds": time.perf_counter() - t_start,
        "params_m": sum(p.numel() for p in student.parameters()) / 1e6,
        "macs_g": count_macs(student, recipe.data.img_size) / 1e9,
        "cache": {"hits": cache.hits, "misses": cache.misses} if cache else None,
    }
    write_json(run_dir / "summary.json", summary)
    return summary
