"""Prune the quickstart student to ~half its MACs and recover it: accuracy against the unpruned student.

    python benchmarks/prune_recover.py [--recipe quickstart] [--seeds 0 1 2] [--ratio 0.5]
        [--settings teacher none-recovery student] [--recover-epochs 10] [--importance taylor]

Per seed: the recipe distilled with that seed (reused when its run exists), then each setting
prunes that student: `teacher` recovers by distillation from the run's teacher, `student` from the
unpruned student, `none-recovery` not at all. Prints a table (mean +- std over seeds), writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _machine import machine  # noqa: E402  (benchmarks/: the machine each result was measured on)

from edgevit.config import apply_overrides, load_recipe  # noqa: E402
from edgevit.distill.pipeline import distill  # noqa: E402
from edgevit.prune import prune  # noqa: E402

SETTINGS = {
    "teacher": {"recover_teacher": "teacher"},
    "none-recovery": {"recover_epochs": 0},
    "student": {"recover_teacher": "student"},
}


def _parent(base, seed: int, runs: Path) -> Path:
    run = runs / f"{base.name}-s{seed}"
    if not (run / "student.pt").exists():
        t0 = time.perf_counter()
        distill(apply_overrides(base, {"seed": seed}), run, log=lambda m: print(f"  [distill s{seed}] {m}", flush=True))
        print(f"distill seed {seed}: {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    return run


def _stats(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _key(setting: str, a: argparse.Namespace, seed: int) -> str:
    epochs = SETTINGS[setting].get("recover_epochs", a.recover_epochs)
    return f"{setting}/r{a.ratio}/{a.importance}/ep{epochs}/lr{a.lr}{a.tag}/seed{seed}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--importance", default="taylor")
    ap.add_argument("--recover-epochs", type=int, default=10)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--tag", default="", help="a name for this variant in the JSON keys")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--runs", default="benchmarks/results/prune_recover_runs")
    ap.add_argument("--out", default="benchmarks/results/prune_recover.json")
    a = ap.parse_args()
    base, _ = load_recipe(a.recipe)
    runs, out = Path(a.runs), Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for seed in a.seeds:
        parent = _parent(base, seed, runs)
        for setting in a.settings:
            key = _key(setting, a, seed)
            if key in results:
                continue
            opts = {
                "ratio": a.ratio,
                "importance": a.importance,
                "recover_epochs": a.recover_epochs,
                "lr": a.lr,
                **SETTINGS[setting],
            }
            t0, load0 = time.perf_counter(), os.getloadavg()[0]
            s = prune(
                parent, **opts, out=runs / key.replace("/", "-"), log=lambda m: print(f"  [{key}] {m}", flush=True)
            )
            results[key] = {
                "setting": setting,
                "seed": seed,
                **{
                    k: s[k]
                    for k in (
                        "val_top1_parent",
                        "val_top1_pruned",
                        "val_top1",
                        "params_before",
                        "params_after",
                        "macs_before",
                        "macs_after",
                    )
                },
                "recover_epochs": opts["recover_epochs"],
                "wall_seconds": time.perf_counter() - t0,
                "load": [load0, os.getloadavg()[0]],
                "machine": machine(),
            }
            out.write_text(json.dumps(results, indent=2))
            print(
                f"{key}: parent {s['val_top1_parent']:.2f}  pruned {s['val_top1_pruned']:.2f}  final "
                f"{s['val_top1']:.2f}  MACs x{s['macs_after'] / s['macs_before']:.3f}",
                flush=True,
            )
    print("\n| setting | seeds | params M | MACs M | parent top-1 | pruned top-1 | final top-1 | final - parent |")
    print("|---|---:|---|---|---|---|---|---|")
    for setting in a.settings:
        rows = [results[_key(setting, a, seed)] for seed in a.seeds if _key(setting, a, seed) in results]
        if not rows:
            continue
        r0 = rows[0]
        print(
            f"| {setting} | {len(rows)} | {r0['params_before'] / 1e6:.3f} -> {r0['params_after'] / 1e6:.3f} | "
            f"{r0['macs_before'] / 1e6:.2f} -> {r0['macs_after'] / 1e6:.2f} | "
            f"{_stats([r['val_top1_parent'] for r in rows])} | {_stats([r['val_top1_pruned'] for r in rows])} | "
            f"{_stats([r['val_top1'] for r in rows])} | "
            f"{_stats([r['val_top1'] - r['val_top1_parent'] for r in rows])} |"
        )


if __name__ == "__main__":
    main()
