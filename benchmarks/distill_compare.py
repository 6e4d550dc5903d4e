"""Held-out accuracy of distillation settings on one recipe, several seeds each: mean +- std.

    python benchmarks/distill_compare.py [--recipe quickstart] [--teacher regnety_160] [--seeds 0 1 2]
        [--epochs N] [--settings none hard soft dkd soft_std dkd_std feature attention self ensemble]
        [--publish benchmarks/results/distill_settings.xeon.json --title T --text T]

Every setting uses the recipe's epochs, student and augmentation; teachers are fine-tuned once
and reused across seeds and settings (edgevit's teacher cache). Prints a table, writes JSON.
--publish adds (or replaces) a section titled --title in a committed results file that docs/gen.py
renders: the table below, generated from the runs, with the runs themselves beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _machine import machine, machine_id, write_results  # noqa: E402  (benchmarks/: where each result was measured)

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
    ap.add_argument("--publish", help="a committed results file to add this table to, as section --title")
    ap.add_argument("--title", help="the published section's title")
    ap.add_argument("--text", default="", help="the published section's prose (what was run, what it shows)")
    a = ap.parse_args()
    if a.publish and not a.title:
        ap.error("--publish needs --title")
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
                "student_img_s": student_img_s(Path(a.runs) / key.replace("/", "-")),
                "machine": machine(),
            }
            out.write_text(json.dumps(results, indent=2))
    rows = [r for r in results.values() if r["setting"] in a.settings and r["seed"] in a.seeds]
    for r in rows:  # runs measured before the field existed
        r.setdefault("student_img_s", student_img_s(Path(a.runs) / f"{r['setting']}-seed{r['seed']}-ep{r['epochs']}"))
    table = summary(rows, a.settings)
    print("\n" + " | ".join(table["columns"]))
    for row in table["rows"]:
        print(" | ".join(str(c) for c in row))
    if a.publish:
        publish(Path(a.publish), a.title, a.text, [compact(rows, a.settings), table], rows, recipe=a.recipe)
        print(f"published section {a.title!r} in {a.publish}")
    print(f"\nwrote {out}")


def student_img_s(run: Path) -> float | None:
    """The median of the student's per-epoch training images/s (teacher forward or cache lookup included)."""
    lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
    rates = [r["train_img_s"] for r in map(json.loads, filter(None, lines)) if r.get("stage") == "student"]
    return statistics.median(rates) if rates else None


def mean_sd(accs: list[float]) -> str:
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{statistics.mean(accs):.2f} ± {sd:.2f}"


def compact(rows: list[dict], settings: list[str]) -> dict:
    """The short table (the README's): per setting, top-1 mean +- std at each epoch count, and img/s."""
    epochs = sorted({r["epochs"] for r in rows}, reverse=True)
    out = []
    for setting in settings:
        mine = [r for r in rows if r["setting"] == setting]
        if not mine:
            continue
        cells = []
        for e in epochs:
            accs = [r["val_top1"] for r in mine if r["epochs"] == e]
            cells.append(mean_sd(accs) if accs else "-")
        rates = [r["student_img_s"] for r in mine if r.get("student_img_s")]
        out.append([setting, *cells, f"{statistics.median(rates):.0f}" if rates else "-"])
    columns = ["setting", *(f"top-1 %, {e} epochs" for e in epochs), "img/s"]
    return {"columns": columns, "align": ["left"] + ["right"] * (len(columns) - 1), "rows": out}


def summary(rows: list[dict], settings: list[str]) -> dict:
    """One table row per (setting, epochs): top-1 mean +- std over the seeds, each seed's, each head's mean, wall."""
    out = []
    for setting in settings:
        for epochs in sorted({r["epochs"] for r in rows if r["setting"] == setting}, reverse=True):
            group = sorted(
                (r for r in rows if r["setting"] == setting and r["epochs"] == epochs), key=lambda r: r["seed"]
            )
            accs = [r["val_top1"] for r in group]
            teachers = ", ".join(f"{t['name']} {t['val_top1']:.1f} %" for t in group[0]["teachers"]) or "-"
            heads = [f"{statistics.mean(r[k] for r in group):.2f}" for k in ("val_top1_cls", "val_top1_dist")]
            out.append(
                [
                    setting,
                    epochs,
                    len(group),
                    mean_sd(accs),
                    ", ".join(f"{x:.2f}" for x in accs),
                    " / ".join(heads),
                    teachers,
                    ", ".join(f"{r['seconds']:.0f}" for r in group),
                    ", ".join(f"{r['student_img_s']:.0f}" if r.get("student_img_s") else "-" for r in group),
                ]
            )
    return {
        "columns": [
            "setting",
            "epochs",
            "seeds",
            "top-1 % mean ± std",
            "per seed",
            "cls / dist head",
            "teacher",
            "wall s per run",
            "student img/s",
        ],
        "align": ["left", "right", "right", "right", "left", "right", "left", "right", "right"],
        "rows": out,
    }


def publish(path: Path, title: str, text: str, tables: list[dict], rows: list[dict], recipe: str) -> None:
    """Add (or replace) the section `title` in the committed results file; the machine is this one."""
    data = json.loads(path.read_text()) if path.exists() else {"benchmark": path.name.split(".")[0]}
    data.setdefault("script", "benchmarks/distill_compare.py")
    loads = [x for r in rows for x in (r["machine"].get("load_average") or [])[:1]]
    span = f"1-minute load average {min(loads):.2f}-{max(loads):.2f} at the runs' ends" if loads else "load unknown"
    section = {
        "title": title,
        "recipe": recipe,
        "blocks": [{"text": f"{text} *Load*: {span}."}, *({"table": t} for t in tables)],
        "runs": rows,
    }
    data["sections"] = [s for s in data.get("sections", []) if s["title"] != title] + [section]
    write_results(path, {k: v for k, v in data.items() if k != "machine"}, None, machine_id())


if __name__ == "__main__":
    main()
