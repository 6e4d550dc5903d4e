"""The prune stage: a distilled run's student -> pruned -> recovered by distillation -> a new run.

`prune(run, ratio)` writes runs/<new run>/ with student.pt (weights + pruned structure, no pickle),
recipe.yaml (the parent's recipe with its `prune:` section filled in), metrics.jsonl, summary.json,
and a ledger row of kind "prune" whose parent is the distilled run. Recovery is the one trainer
with a distillation task: from the run's teacher (its fine-tuned copy in the runs folder, and the
teacher-logit cache when the run used one), from the unpruned student itself (`run:PARENT`), or
from labels alone. With `steps > 1` it prunes a little and recovers a little, `steps` times.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from edgevit.config import PruneConfig, Recipe, check_fields, load_recipe
from edgevit.data import Datasets, build_datasets
from edgevit.errors import EdgevitError
from edgevit.files import write_json, write_text
from edgevit.models import teachers as T
from edgevit.models.checkpoint import STUDENT_FILE, load_student, save_student
from edgevit.models.students import count_macs
from edgevit.paths import default_runs_dir, numbered_run_dir
from edgevit.prune.engine import count, importance_signal, prune_model
from edgevit.runs import Ledger, check_run_name
from edgevit.train import ClassificationTask, DistillationTask, DistInfo, Hooks, TrainConfig, Trainer, evaluate

Log = Callable[[str], None]
IMPORTANCE_BATCHES = 8  # Taylor/Hessian scores from this many training batches (Torch-Pruning's ViT example: 10)


def find_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """A run folder given as a path or as a name in the runs folder; it must hold a student."""
    path = Path(run)
    if not path.is_dir():
        path = Path(runs_dir or default_runs_dir()) / str(run)
    if not (path / STUDENT_FILE).is_file():
        where = f"{path}" if path.is_dir() else f"no run folder {path}"
        raise EdgevitError(
            f"{where} has no {STUDENT_FILE}: prune a finished `edgevit distill` run (a run name or folder)"
        )
    return path


def parent_recipe(run_dir: Path) -> Recipe | None:
    return load_recipe(str(run_dir / "recipe.yaml"))[0] if (run_dir / "recipe.yaml").is_file() else None


def recovery_recipe(parent: Recipe | None, meta: dict[str, Any], cfg: PruneConfig, seed: int | None) -> Recipe:
    """The parent's recipe (data, augmentation, optimizer, distillation) with the recovery's epochs,
    lr, warm-up and seed; a run without recipe.yaml gets the defaults on its own data."""
    recipe = parent or Recipe(name=str(meta.get("model_name", "student")), data=meta.get("data") or {})
    optim = recipe.optim.model_copy(update={"warmup_epochs": cfg.warmup_epochs, **({"lr": cfg.lr} if cfg.lr else {})})
    return recipe.model_copy(update={"optim": optim, "prune": cfg, "seed": recipe.seed if seed is None else seed})


def importance_batches(data: Datasets, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few shuffled batches of the training split, without augmentation."""
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=gen)
    return [batch for batch, _ in zip(loader, range(IMPORTANCE_BATCHES))]


def recovery_teacher(
    kind: str,
    parent: Recipe | None,
    parent_dir: Path,
    recipe: Recipe,
    data: Datasets,
    run_dir: Path,
    log: Log,
    progress: Any,
) -> tuple[Any, list[dict[str, Any]], Any, int | None]:
    """(teacher, its description, the parent's teacher-logit cache or None, that cache's rounds)."""
    from edgevit.distill.pipeline import _cache, build_teacher  # the distill stage owns teachers and their cache

    if kind == "none":
        return None, [], None, None
    if kind == "teacher":
        source = parent  # as the parent built it: the same key finds its fine-tuned teacher and its cache
    else:
        source = recipe.model_copy(
            update={
                "teacher": recipe.teacher.model_copy(
                    update={"names": [f"{T.RUN_PREFIX}{parent_dir.resolve()}"], "checkpoints": []}
                )
            }
        )
    teacher, info = build_teacher(
        source, data, run_dir.parent, run_dir, DistInfo(), log, progress, run_dir / "metrics.jsonl"
    )
    cache = rounds = None
    if kind == "teacher" and recipe.seed == parent.seed:  # the cache holds the parent's rounds, for its seed
        cache = _cache(source, info, teacher, data, run_dir.parent, DistInfo())
        rounds = min(parent.epochs, parent.distill.cache_rounds or parent.epochs)
    return teacher, info, cache, rounds


def recover(
    model: torch.nn.Module,
    teacher: Any,
    recipe: Recipe,
    data: Datasets,
    epochs: int,
    run_dir: Path,
    label: str,
    log: Log,
    progress: Any = None,
    cache: Any = None,
    cache_rounds: int | None = None,
) -> dict:
    """Distil the pruned student from `teacher` (or train on labels when None) for `epochs`; with the
    parent's cache, epoch e replays its round e (same seed, same augmentation: the same images)."""
    from edgevit.distill.pipeline import SPEED_DIR

    d = recipe.distill
    kind = d.type if d.type != "none" else "hard"
    task = (
        DistillationTask.from_config(model, teacher, d, cache=cache, kind=kind)
        if teacher is not None
        else ClassificationTask(model)
    )
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=recipe.data.batch_size,
        workers=recipe.data.workers,
        optim=recipe.optim,
        aug=recipe.aug,
        num_classes=data.num_classes,
        seed=recipe.seed,
        amp=recipe.amp,
        channels_last=recipe.channels_last,
        fused_attn=recipe.fused_attn,
        speed_memo=run_dir.parent / SPEED_DIR,
        cache_rounds=cache_rounds if cache is not None else None,
    )

    class EpochLog(Hooks):
        def after_epoch(self, trainer: Trainer, epoch: int, row: dict) -> None:
            log(
                f"{label} epoch {epoch}/{epochs}: loss {row['train_loss']:.3f}  val top-1 {row['val_top1']:.2f}%  "
                f"{row['train_img_s']:.0f} img/s"
            )

    trainer = Trainer(
        task,
        data.train,
        data.val,
        cfg,
        metrics_path=run_dir / "metrics.jsonl",
        progress=progress,
        label=label,
        hooks=[EpochLog()],
        log=log,
    )
    return trainer.fit()


def _split(total: int, steps: int) -> list[int]:
    return [total // steps + (1 if i < total % steps else 0) for i in range(steps)]


def prune(
    run: str | Path,
    ratio: float = 0.5,
    *,
    by: str = "macs",
    importance: str = "taylor",
    isomorphic: bool = False,
    steps: int = 1,
    recover_epochs: int = 10,
    recover_teacher: str = "teacher",
    out: str | Path | None = None,
    seed: int | None = None,
    attention: str = "dims",
    embed: bool = False,
    lr: float | None = None,
    warmup_epochs: int = 1,
    runs_dir: str | Path | None = None,
    log: Log = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Prune a distilled run's student to `1 - ratio` of its MACs (or params), recover it, save a new run.

    Returns the summary (also in summary.json and the ledger): params and MACs before/after,
    top-1 of the parent, of the pruned student before recovery, and after recovery.
    """
    cfg = check_fields(
        PruneConfig,
        dict(
            ratio=ratio,
            by=by,
            importance=importance,
            isomorphic=isomorphic,
            attention=attention,
            embed=embed,
            steps=steps,
            recover_epochs=recover_epochs,
            recover_teacher=recover_teacher,
            lr=lr,
            warmup_epochs=warmup_epochs,
        ),
        "prune",
    )
    parent_dir = find_run(run, runs_dir)
    student, meta = load_student(parent_dir)
    parent = parent_recipe(parent_dir)
    if recover_epochs and recover_teacher == "teacher" and (parent is None or parent.distill.type == "none"):
        raise EdgevitError(
            f"run {parent_dir.name} has no teacher to recover from (no recipe.yaml, or trained "
            f"without distillation): use recover_teacher student or none",
            "recover_teacher",
        )
    recipe = recovery_recipe(parent, meta, cfg, seed)
    run_dir = Path(out) if out else numbered_run_dir(parent_dir.parent, f"{parent_dir.name}-prune{round(ratio * 100)}")
    check_run_name(run_dir.name)
    if (run_dir / STUDENT_FILE).exists() or (run_dir / "recipe.yaml").exists():
        raise EdgevitError(f"{run_dir} already holds a run; give another out", "out")
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(run_dir.parent)
    with ledger.recording(
        run_dir.name, kind="prune", path=run_dir, parent=parent_dir.name, recipe=recipe.model_dump(mode="json")
    ):
        write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        summary = {
            **_prune(student, meta, parent_dir, parent, recipe, run_dir, ledger, log, progress),
            "path": str(run_dir),
        }
        ledger.record_run(run_dir.name, status="done", summary=summary)
    return summary


def _step(
    model: torch.nn.Module,
    i: int,
    base: float,
    epochs: int,
    recipe: Recipe,
    data: Datasets,
    plain: Datasets,
    run_dir: Path,
    log: Log,
    progress: Any,
    teacher: Any,
    cache: Any,
    rounds: int | None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Step i of `steps`: prune to base * (1 - ratio * i / steps) MACs (or params), then recover."""
    cfg = recipe.prune
    example = torch.zeros(1, 3, recipe.data.img_size, recipe.data.img_size)
    torch.manual_seed(recipe.seed + i)
    batches = (
        importance_batches(plain, recipe.data.batch_size, recipe.seed + i) if cfg.importance != "magnitude" else []
    )
    importance_signal(model, batches, cfg.importance)
    now = count(model, example)[0 if cfg.by == "macs" else 1]
    model, report = prune_model(
        model,
        example,
        base * (1 - cfg.ratio * i / cfg.steps) / now,
        by=cfg.by,
        importance=cfg.importance,
        isomorphic=cfg.isomorphic,
        attention=cfg.attention,
        embed=cfg.embed,
        log=log,
    )
    pruned_top1 = evaluate(model, data.val)["top1"]
    log(
        f"step {i}/{cfg.steps}: {report.macs_after / 1e6:.2f} M MACs, {report.params_after / 1e6:.3f} M params, "
        f"{pruned_top1:.2f}% top-1 before recovery"
    )
    if epochs > 0:
        recover(model, teacher, recipe, data, epochs, run_dir, f"recover {i}/{cfg.steps}", log, progress, cache, rounds)
    return model, {
        "step": i,
        **report.as_dict(),
        "val_top1_pruned": pruned_top1,
        "recover_epochs": epochs,
        "val_top1": evaluate(model, data.val)["top1"],
    }


def _prune(
    student: torch.nn.Module,
    meta: dict[str, Any],
    parent_dir: Path,
    parent: Recipe | None,
    recipe: Recipe,
    run_dir: Path,
    ledger: Ledger,
    log: Log,
    progress: Any,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = recipe.prune
    data = build_datasets(recipe.data, recipe.aug)
    plain = build_datasets(recipe.data, None, crop_pct=recipe.aug.crop_pct)
    img = recipe.data.img_size
    example = torch.zeros(1, 3, img, img)
    parent_top1 = evaluate(student, data.val)["top1"]
    macs0, params0 = count(student, example)
    base = macs0 if cfg.by == "macs" else params0
    log(f"parent {parent_dir.name}: {parent_top1:.2f}% top-1, {params0 / 1e6:.3f} M params, {macs0 / 1e6:.2f} M MACs")
    who = cfg.recover_teacher if cfg.recover_epochs else "none"
    teacher, tinfo, cache, rounds = recovery_teacher(who, parent, parent_dir, recipe, data, run_dir, log, progress)
    model, history = student, []
    for i, epochs in enumerate(_split(cfg.recover_epochs, cfg.steps), start=1):
        model, row = _step(model, i, base, epochs, recipe, data, plain, run_dir, log, progress, teacher, cache, rounds)
        ledger.record_eval(
            run_dir.name, epoch=i, split="val", metrics={"top1": row["val_top1"], "top1_pruned": row["val_top1_pruned"]}
        )
        history.append(row)
    macs1, params1 = count(model, example)
    final_top1 = evaluate(model, data.val)
    child_meta = {
        **{k: v for k, v in meta.items() if k not in ("sha256", "structure", "format", "version")},
        "parent": parent_dir.name,
        "pruning": cfg.model_dump(mode="json"),
    }
    save_student(run_dir / STUDENT_FILE, model, child_meta)
    summary = {
        "student": meta["model_name"],
        "parent": parent_dir.name,
        "teachers": tinfo,
        "pruning": cfg.model_dump(mode="json"),
        "seed": recipe.seed,
        "params_before": params0,
        "params_after": params1,
        "macs_before": macs0,
        "macs_after": macs1,
        "val_top1_parent": parent_top1,
        "val_top1_pruned": history[-1]["val_top1_pruned"],
        "val_top1": final_top1["top1"],
        "val_top1_cls": final_top1.get("top1_cls"),
        "val_top1_dist": final_top1.get("top1_dist"),
        "epochs": cfg.recover_epochs,
        "params_m": params1 / 1e6,
        "macs_g": count_macs(model, img) / 1e9,
        "steps": history,
        "cache": {"hits": cache.hits, "misses": cache.misses} if cache else None,
        "wall_seconds": time.perf_counter() - t0,
    }
    write_json(run_dir / "summary.json", summary)
    return summary
