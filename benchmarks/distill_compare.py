"""Held-out accuracy of distillation settings on one recipe, several seeds each: mean +- std.

    python benchmarks/distill_compare.py [--recipe quickstart] [--teacher regnety_160] [--seeds 0 1 2]
        [--epochs N] [--settings none hard soft dkd soft_std dkd_std feature attention self ensemble]

Every setting uses the recipe's epochs, student and augmentation; teachers are fine-tuned once
and reused across seeds and settings (edgevit's teacher cache). Prints a table, writes JSON.
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

SETTINGS = {
    "none": {"distill.type": "none"},
    "hard": {"distill.type": "hard"},
    "soft": {"distill.type": "soft", "distill.tau": 1.0},
    "dkd": {"distill.type": "dkd", "distill.tau": 4.0, "distill.dkd_alpha": 1.0, "distill.dkd_beta": 8.0},  # CIFAR's
    "soft_std": {"distill.type": "soft", "distill.tau": 2.0, "distill.standardize": True},
    "dkd_std": {"distill.type": "dkd", "distill.tau": 2.0, "distill.standardize": True},
    "feature": {"distill.type": "feature"},  # + hard; default layers; the live teacher (no logit cache)
    # + hard; last block's head-averaged attention maps (kl); a ViT teacher: the student's architecture
    "attention": {"distill.type": "attention", "teacher.names": ["self"]},
    "self": {"distill.type": "hard", "teacher.names": ["self"]},
    "ensemble": {"distill.type": "hard", "teacher.names": "ENSEMBLE"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--teacher", help="replaces the recipe's teacher, as `edgevit distill --teacher` does")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--second-teacher", default="resnet26", help="added to the recipe's teacher for 'ensemble'")
    ap.add_argument("--runs", default="benchmarks/results/distill_compare_runs")
    ap.add_argument("--out", default="benchmarks/results/distill_compare.json")
    a = ap.parse_args()
    base, _ = load_recipe(a.recipe)
    if a.epochs:
        base = apply_overrides(base, {"epochs": a.epochs})
    if a.teacher:
        base = apply_overrides(base, {"teacher.names": [a.teacher]})
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for setting in a.settings:
        for seed in a.seeds:
            key = f"{setting}/seed{seed}/ep{base.epochs}"
            if key in results:
                continue
            changes = dict(SETTINGS[setting], seed=seed)
            if changes.get("teacher.names") == "ENSEMBLE":
                changes["teacher.names"] = [*base.teacher.names, a.second_teacher]
            recipe = apply_overrides(base, changes)
            t0 = time.perf_counter()
            s = distill(recipe, Path(a.runs) / key.replace("/", "-"), log=lambda m: print(f"  [{key}] {m}", flush=True))
            results[key] = {
                "setting": setting,
                "seed": seed,
                "epochs": base.epochs,
                "val_top1": s["val_top1"],
                "val_top1_cls": s["val_top1_cls"],
                "val_top1_dist": s["val_top1_dist"],
                "teachers": s["teachers"],
                "seconds": time.perf_counter() - t0,
                "machine": machine(),
            }
            out.write_text(json.dumps(results, indent=2))
    print(f"\n{'setting':<10} {'epochs':>6} {'seeds':>5} {'top-1 mean':>10} {'std':>6}  teachers")
    for setting in a.settings:
        rows = [r for r in results.values() if r["setting"] == setting and r["epochs"] == base.epochs]
        if not rows:
            continue
        accs = [r["val_top1"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        teachers = ", ".join(f"{t['name']} {t['val_top1']:.1f}%" for t in rows[0]["teachers"]) or "-"
        print(f"{setting:<10} {base.epochs:>6} {len(rows):>5} {statistics.mean(accs):>10.2f} {sd:>6.2f}  {teachers}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
