"""`edgevit distill`: flags override the recipe (default: recipes/quickstart.yaml)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from edgevit.config import Recipe, StudentConfig, apply_overrides, load_recipe
from edgevit.console import progress_bars
from edgevit.errors import EdgevitError
from edgevit.models.checkpoint import STUDENT_FILE
from edgevit.paths import default_runs_dir, numbered_run_dir
from edgevit.runs import check_run_name
from edgevit.vocab import DISTILL_TYPES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="recipe name (edgevit recipes) or YAML path; default: quickstart")
    p.add_argument(
        "--teacher",
        action="append",
        metavar="NAME",
        help="timm teacher name; repeat for an ensemble; 'self' = the student's own architecture; "
        "run:NAME = an earlier run's student",
    )
    p.add_argument(
        "--teacher-checkpoint", action="append", metavar="PATH", help="local teacher weights, one per --teacher"
    )
    p.add_argument("--teacher-epochs", type=int, help="epochs to fine-tune a teacher whose head does not fit")
    p.add_argument("--no-pretrained", action="store_true", help="do not look for pretrained teacher weights")
    p.add_argument("--ensemble", choices=["logits", "probs"], help="how an ensemble combines its teachers")
    p.add_argument("--student", metavar="NAME", help="timm student name (e.g. deit_tiny_distilled_patch16_224)")
    p.add_argument("--student-checkpoint", metavar="PATH", help="initial student weights")
    p.add_argument(
        "--data", metavar="SPEC", help="digits | PATH (ImageFolder) | cifar10[:ROOT] | cifar100[:ROOT] | hf:NAME"
    )
    p.add_argument("--img-size", type=int)
    p.add_argument("--patch-size", type=int)
    p.add_argument("--distillation", choices=DISTILL_TYPES)
    p.add_argument("--alpha", type=float, help="weight of the distillation term (DeiT: 0.5)")
    p.add_argument("--tau", type=float, help="temperature of soft and dkd distillation")
    p.add_argument("--dkd-alpha", type=float, help="dkd: weight of the target-class part (TCKD)")
    p.add_argument("--dkd-beta", type=float, help="dkd: weight of the non-target part (NCKD)")
    p.add_argument(
        "--standardize", action="store_true", default=None, help="soft/dkd: z-score the logits (Sun et al., 2024)"
    )
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate at the recipe's lr_base_batch")
    p.add_argument("--workers", type=int, help="data-loading processes")
    p.add_argument("--seed", type=int)
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--cache-teacher", action="store_true", default=None, help="cache the teacher's top-k logits")
    p.add_argument("--cache-topk", type=int)
    p.add_argument("--cache-rounds", type=int, help="distinct augmentation rounds replayed from the cache")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<recipe>, numbered if taken)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "teacher.names": a.teacher,
        "teacher.checkpoints": a.teacher_checkpoint,
        "teacher.finetune_epochs": a.teacher_epochs,
        "teacher.pretrained": False if a.no_pretrained else None,
        "teacher.ensemble": a.ensemble,
        "student.name": a.student,
        "student.checkpoint": a.student_checkpoint,
        "student.patch_size": a.patch_size,
        "data.spec": a.data,
        "data.img_size": a.img_size,
        "data.batch_size": a.batch_size,
        "data.workers": a.workers,
        "distill.type": a.distillation,
        "distill.alpha": a.alpha,
        "distill.tau": a.tau,
        "distill.dkd_alpha": a.dkd_alpha,
        "distill.dkd_beta": a.dkd_beta,
        "distill.standardize": a.standardize,
        "distill.cache_teacher": a.cache_teacher,
        "distill.cache_topk": a.cache_topk,
        "distill.cache_rounds": a.cache_rounds,
        "epochs": a.epochs,
        "optim.lr": a.lr,
        "seed": a.seed,
        "amp": a.amp,
    }


def resolve_recipe(a: argparse.Namespace) -> Recipe:
    """The recipe with the flags applied. A student named on the command line gets its own defaults:
    the recipe's student.kwargs and patch size were written for the recipe's student, not for it."""
    recipe, _ = load_recipe(a.recipe)
    overrides = _overrides(a)
    if a.student and a.student != recipe.student.name:
        recipe = recipe.model_copy(
            update={"student": StudentConfig(name=a.student, drop_path=recipe.student.drop_path)}
        )
    return apply_overrides(recipe, overrides)


def resume_recipe(a: argparse.Namespace, run_dir: Path) -> Recipe:
    """--resume continues with the run's own resolved recipe. The same command again is fine; a recipe
    or flags that would change it are refused (they would make the resumed run another run)."""
    saved = load_recipe(str(run_dir / "recipe.yaml"))[0]
    if not a.recipe and not any(v is not None for v in _overrides(a).values()):
        return saved
    asked = resolve_recipe(a) if a.recipe else apply_overrides(saved, _overrides(a))
    old, new = _flat(saved.model_dump(mode="json")), _flat(asked.model_dump(mode="json"))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        raise EdgevitError(
            f"--resume continues {run_dir} with its own recipe ({run_dir / 'recipe.yaml'}), but "
            f"this command changes {', '.join(changed[:4])}; drop those flags or start a new run"
        )
    return saved


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _run_dir(out: str | None, recipe_name: str, resume: bool) -> Path:
    if resume:
        if not out:
            raise EdgevitError("--resume needs --out: the run folder to continue")
        path = Path(out)
        if (path / STUDENT_FILE).exists():
            raise EdgevitError(f"{path} is already finished ({STUDENT_FILE} exists); nothing to resume")
        if not (path / "recipe.yaml").exists():
            raise EdgevitError(f"--resume: {path} holds no started run (no recipe.yaml); start it without --resume")
        return path
    if out:
        path = Path(out)
        check_run_name(path.name)
        if (path / STUDENT_FILE).exists() or (path / "recipe.yaml").exists():
            raise EdgevitError(f"{path} already holds a run; pass --resume to continue it or another --out")
        return path
    return numbered_run_dir(default_runs_dir(), check_run_name(recipe_name))


def run(a: argparse.Namespace) -> int:
    import torch

    if a.resume:
        run_dir = _run_dir(a.out, "", True)
        recipe = resume_recipe(a, run_dir)
    else:
        recipe = resolve_recipe(a)
        run_dir = _run_dir(a.out, recipe.name, False)
    if recipe.teacher.names == ["self"] and recipe.distill.type == "none":
        raise EdgevitError(
            f"--teacher self needs a distillation: --distillation {' | '.join(t for t in DISTILL_TYPES if t != 'none')}"
        )
    threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads()
    torch.set_num_threads(threads)
    main = int(os.environ.get("RANK", "0")) == 0
    log = print if main else (lambda _m: None)
    log(
        f"edgevit distill: {'resuming ' if a.resume else ''}recipe {recipe.name}, student {recipe.student.name}, "
        f"teacher {'+'.join(recipe.teacher.names) if recipe.distill.type != 'none' else '-'} "
        f"({recipe.distill.type}), data {recipe.data.spec} at {recipe.data.img_size} px, {recipe.epochs} epochs "
        f"-> {run_dir}"
    )
    from edgevit.chain import run_recipe

    t0 = time.perf_counter()
    with progress_bars() as bars:
        done = run_recipe(recipe, run_dir, resume=a.resume, log=log, progress=bars)
    summary = done["distill"]
    if main:
        for t in summary.get("teachers", []):
            log(f"teacher  {t['name']:<28} {t['val_top1']:6.2f}% top-1 ({t['source']})")
        heads = (
            f" (cls head {summary['val_top1_cls']:.2f}%, dist head {summary['val_top1_dist']:.2f}%)"
            if summary.get("val_top1_cls") is not None
            else ""
        )
        log(
            f"student  {summary['student']:<28} {summary['val_top1']:6.2f}% top-1{heads}, "
            f"{summary['params_m']:.2f} M params, {summary['macs_g'] * 1000:.1f} M MACs, {summary['precision']}"
        )
        log(
            f"done in {time.perf_counter() - t0:.0f} s; run folder: {run_dir} "
            "(student.pt, metrics.jsonl, recipe.yaml); "
            f"next: edgevit export {run_dir} --target openvino-cpu"
        )
        if done["prune"] is not None:  # the recipe went on: distill -> prune -> recover
            from edgevit.prune.command import print_summary

            print_summary(done["prune"], time.perf_counter() - t0)
    return 0
