"""`edgevit prune RUN`: prune a distilled run's student, recover it by distillation, write a new run.

Flags not given fall back to the run's recipe (`prune:` section), then to the defaults."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edgevit.config import PruneConfig
from edgevit.errors import EdgevitError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="a finished distill run: its name in the runs folder, or its folder")
    p.add_argument("--ratio", type=float, help="share of the MACs (or params) to remove, in (0, 1); default 0.5")
    p.add_argument("--by", choices=["macs", "params"], help="what --ratio counts (default macs)")
    p.add_argument("--importance", help="taylor (default) | magnitude | hessian")
    p.add_argument(
        "--isomorphic",
        action="store_true",
        default=None,
        help="rank channels globally within isomorphic groups (Torch-Pruning's isomorphic pruning)",
    )
    p.add_argument(
        "--attention",
        choices=["dims", "heads", "both"],
        help="what attention loses: head dims (default), whole heads, or both",
    )
    p.add_argument("--embed", action="store_true", default=None, help="also prune the DeiT embedding width")
    p.add_argument("--steps", type=int, help="prune a little, recover a little, this many times (default 1)")
    p.add_argument("--recover-epochs", type=int, help="distillation epochs after pruning, over all steps (default 10)")
    p.add_argument(
        "--recover-teacher",
        choices=["teacher", "student", "none"],
        help="distil from the run's teacher (default), the unpruned student, or labels only",
    )
    p.add_argument("--lr", type=float, help="recovery learning rate at the recipe's lr_base_batch")
    p.add_argument("--seed", type=int, help="recovery seed (default: the run's; then the teacher-logit cache applies)")
    p.add_argument("--out", metavar="DIR", help="new run folder (default: <runs>/<run>-prune<percent>, numbered)")
    p.add_argument("--runs-dir", metavar="DIR", help="where run names are looked up (default: runs or $EDGEVIT_RUNS)")


def options(a: argparse.Namespace, section: PruneConfig | None) -> dict[str, Any]:
    """The flags given, over the run recipe's `prune:` section, over the defaults."""
    base = (section or PruneConfig()).model_dump()
    given = {
        "ratio": a.ratio,
        "by": a.by,
        "importance": a.importance,
        "isomorphic": a.isomorphic,
        "attention": a.attention,
        "embed": a.embed,
        "steps": a.steps,
        "recover_epochs": a.recover_epochs,
        "recover_teacher": a.recover_teacher,
        "lr": a.lr,
    }
    return {**base, **{k: v for k, v in given.items() if v is not None}}


def _row(label: str, params: float, macs: float, top1: float | None) -> str:
    acc = f"{top1:6.2f}%" if top1 is not None else "      -"
    return f"  {label:<22} {params / 1e6:8.3f} M {macs / 1e6:10.2f} M {acc}"


def print_summary(s: dict[str, Any], seconds: float) -> None:
    """Params, MACs and top-1 of the parent, the pruned student and the recovered one."""
    print(f"{'':24} {'params':>10} {'MACs':>12} {'top-1':>7}")
    print(_row(f"parent {s['parent']}", s["params_before"], s["macs_before"], s["val_top1_parent"]))
    print(_row("pruned", s["params_after"], s["macs_after"], s["val_top1_pruned"]))
    if s["epochs"]:
        print(_row(f"recovered ({s['epochs']} epochs)", s["params_after"], s["macs_after"], s["val_top1"]))
    print(
        f"done in {seconds:.0f} s; MACs x{s['macs_after'] / s['macs_before']:.2f}, "
        f"params x{s['params_after'] / s['params_before']:.2f}; run folder: {s['path']}"
    )


def prune_and_print(parent: Path, opts: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Run the stage with progress bars and print params, MACs and top-1 before and after."""
    from edgevit.config import check_fields
    from edgevit.console import progress_bars

    check_fields(PruneConfig, opts, "prune")  # bad flags fail in one line before torch-pruning is imported
    try:
        from edgevit.prune.pipeline import prune
    except ModuleNotFoundError as exc:
        raise EdgevitError(f"pruning needs the package '{exc.name}': pip install 'edgevit[prune]'") from None

    print(
        f"edgevit prune: {parent} -> remove {opts['ratio']:.0%} of the {opts['by']} ({opts['importance']}"
        f"{', isomorphic' if opts['isomorphic'] else ''}, {opts['steps']} step(s)), recover "
        f"{opts['recover_epochs']} epochs from the {opts['recover_teacher']}"
    )
    t0 = time.perf_counter()
    with progress_bars() as bars:
        s = prune(parent, **opts, progress=bars, **kw)
    print_summary(s, time.perf_counter() - t0)
    return s


def run(a: argparse.Namespace) -> int:
    from edgevit.config import check_fields, load_recipe
    from edgevit.prune.pipeline import find_run

    check_fields(PruneConfig, options(a, None), "prune")  # what was typed is checked before the run is looked up
    parent = find_run(a.run, a.runs_dir)
    section = load_recipe(str(parent / "recipe.yaml"))[0].prune if (parent / "recipe.yaml").is_file() else None
    prune_and_print(parent, options(a, section), out=a.out, seed=a.seed, runs_dir=a.runs_dir)
    return 0
