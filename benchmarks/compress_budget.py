"""The latency-budget search against the path a user takes today, per target and budget, in one run.

    python benchmarks/compress_budget.py --run runs/quickstart --targets openvino-cpu,tflite-mobile \
        --budgets 0.3 0.5 0.7 [--recover-epochs 10] [--threads 2] [--machine-id xeon]

Budgets are fractions of the unpruned student's fastest-precision median on each target, timed here
first (interleaved, every precision). Per budget, side by side:

- naive: `prune --ratio 1-f` (the MACs shrink by the budget's fraction), recovered for the same
  epochs, then `benchmark`'s pick on the target (the fastest precision within 0.5 top-1 points);
- compress: one search serving every budget (`edgevit.api.compress`).

Every pick is re-measured afterwards with `profile` (same threads, 1000 iterations). Prints a table,
writes benchmarks/results/compress_budget.<machine>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from _machine import load_average, write_json  # noqa: E402

from edgevit.api import Timing, benchmark, profile, time_artifacts  # noqa: E402
from edgevit.compress import compress  # noqa: E402
from edgevit.config import load_target  # noqa: E402
from edgevit.export.targets import export_targets  # noqa: E402
from edgevit.prune.pipeline import prune  # noqa: E402


def parent_fastest(run: Path, target: str, timing: Timing) -> tuple[str, float, dict[str, float]]:
    """The unpruned student's fastest precision on the target and every precision's median (ms)."""
    jobs = [j for j in export_targets(run, target, "all", ledger=False, reuse=True) if not j.error]
    times = time_artifacts({j.precision: j.folder for j in jobs}, timing, rounds=10)
    medians = {p: r.stats.median_ms for p, r in times.items()}
    best = min(medians, key=medians.get)
    return best, medians[best], medians


def naive(run: Path, target: str, frac: float, epochs: int, timing: Timing, runs: Path) -> dict:
    """prune --ratio 1-frac, recover, then benchmark's pick on this target."""
    t0 = time.perf_counter()
    out = runs / f"{run.name}-naive{round(frac * 100)}"
    if not (out / "summary.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        prune(run, ratio=round(1 - frac, 4), recover_epochs=epochs, out=out, log=lambda m: None)
    table = benchmark(out, [target], "all", timing=timing, reuse_exports=True, max_drop=0.5)
    chosen = next(r for r in table.rows if r.pick and r.target == target)
    return {
        "run": out.name,
        "precision": chosen.precision,
        "macs": json.loads((out / "summary.json").read_text())["macs_after"],
        "top1": chosen.top1,
        "median_ms": chosen.median_ms,
        "seconds": time.perf_counter() - t0,
    }


def remeasure(run_dir: Path, target: str, precision: str, threads: int) -> float:
    return profile(
        run_dir, target, precision, timing=Timing(iterations=1000, threads=threads), ledger=False
    ).stats.median_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/quickstart")
    ap.add_argument("--targets", default="openvino-cpu,tflite-mobile")
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--recover-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--machine-id", default="xeon", help="names the result file: compress_budget.<id>.json")
    ap.add_argument("--label", default="Xeon (AMX)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    load_before = load_average()
    run = Path(a.run).resolve()
    runs = run.parent
    timing = Timing(iterations=300, threads=a.threads)
    results: dict = {"targets": {}}
    for target in [t.strip() for t in a.targets.split(",")]:
        tname = load_target(target).name
        fastest_p, fastest_ms, medians = parent_fastest(run, tname, timing)
        budgets = [round(f * fastest_ms, 4) for f in a.budgets]
        print(f"{tname}: parent fastest {fastest_p} {fastest_ms:.3f} ms ({medians}); budgets {budgets} ms", flush=True)
        t0 = time.perf_counter()
        out = runs / f"{run.name}-search-{tname}"
        resume = (out / "candidates").is_dir()  # a stopped benchmark continues its search: nothing re-timed
        s = compress(
            run,
            tname,
            budgets,
            threads=a.threads,
            recover_epochs=a.recover_epochs,
            out=out,
            resume=resume,
            log=lambda m: print(f"  [{tname}] {m}", flush=True),
        )
        search_s = time.perf_counter() - t0
        rows = []
        for frac, b in zip(a.budgets, s["budgets"]):
            n = naive(run, tname, frac, a.recover_epochs, timing, runs)
            n["profile_ms"] = remeasure(runs / n["run"], tname, n["precision"], a.threads)
            pick = b["pick"]
            c = {"met": False, "why": b["why"]}
            if pick:
                folder = Path(pick["folder"]).parents[2]
                c = {
                    "candidate": pick["candidate"],
                    "description": pick["description"],
                    "precision": pick["precision"],
                    "macs": pick["macs"],
                    "top1": pick["recovered_top1"],
                    "median_ms": pick["remeasured_ms"],
                    "profile_ms": remeasure(folder, tname, pick["precision"], a.threads),
                }
                c["met"] = c["profile_ms"] <= b["budget_ms"]
            n["met"] = n["profile_ms"] <= b["budget_ms"]
            rows.append({"fraction": frac, "budget_ms": b["budget_ms"], "naive": n, "compress": c})
            print(json.dumps(rows[-1]), flush=True)
        results["targets"][tname] = {
            "parent_medians_ms": medians,
            "parent_fastest": [fastest_p, fastest_ms],
            "parent_top1": s["val_top1_parent"],
            "search_seconds": search_s,
            "timed": s["timed"],
            "reused": s["reused"],
            "candidates": s["candidates"],
            "margin": s["margin"],
            "rows": rows,
        }
    results["sections"] = sections(results, a)
    for line in _table(results):
        print(line)
    path = Path(a.out or f"benchmarks/results/compress_budget.{a.machine_id}.json")
    write_json(
        path, {"benchmark": "compress_budget", "script": "benchmarks/compress_budget.py", **results}, load_before
    )
    data = json.loads(path.read_text())
    load = data["machine"]["load_average"]
    data["machine"].update(
        id=a.machine_id,
        label=a.label,
        conditions=f"load average {load_before[0]:.2f} before, {load[0]:.2f} after (1 min)",
    )
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(results: dict) -> list[str]:
    out = []
    for tname, t in results["targets"].items():
        out.append(f"{tname}: parent {t['parent_fastest'][0]} {t['parent_fastest'][1]:.3f} ms, {t['parent_top1']:.2f}%")
        for r in t["rows"]:
            n, c = r["naive"], r["compress"]
            out.append(
                f"  {r['fraction']:.1f} ({r['budget_ms']:.3f} ms): naive {n['precision']} "
                f"{_fmt(n['profile_ms'], '.3f')} ms "
                f"{'met' if n['met'] else 'MISSED'} {_fmt(n['top1'], '.2f')}% | compress {c.get('precision', '-')} "
                f"{_fmt(c.get('profile_ms'), '.3f')} ms {'met' if c['met'] else 'MISSED'} {_fmt(c.get('top1'), '.2f')}%"
            )
    return out


def sections(results: dict, a: argparse.Namespace) -> list[dict]:
    """The docs' tables (docs/gen.py renders them)."""
    out = []
    for tname, t in results["targets"].items():
        rows = []
        for r in t["rows"]:
            n, c = r["naive"], r["compress"]
            rows.append(
                [
                    f"{r['fraction']:g} ({r['budget_ms']:.3f} ms)",
                    f"{n['precision']}, {n['macs'] / 1e6:.1f} M MACs",
                    f"{n['profile_ms']:.3f} ({'met' if n['met'] else '**missed**'})",
                    f"{n['top1']:.2f}" if n["top1"] is not None else "-",
                    f"{c.get('precision', '-')}, {c.get('description', c.get('why', ''))}",
                    f"{c['profile_ms']:.3f} ({'met' if c['met'] else '**missed**'})" if c.get("profile_ms") else "-",
                    f"{c['top1']:.2f}" if c.get("top1") is not None else "-",
                ]
            )
        medians = ", ".join(f"{p} {ms:.3f}" for p, ms in t["parent_medians_ms"].items())
        out.append(
            {
                "title": f"compress vs prune --ratio + benchmark on {tname}",
                "blocks": [
                    {
                        "text": f"`python benchmarks/compress_budget.py --run {a.run} --targets {tname} --budgets "
                        f"{' '.join(map(str, a.budgets))} --recover-epochs {a.recover_epochs} --threads {a.threads}`. "
                        f"The unpruned quickstart student ({t['parent_top1']:.2f} % top-1) on {tname}, median ms "
                        f"per precision: {medians}; budgets are fractions of the fastest. One search served all "
                        f"budgets: {t['candidates']} architectures, {t['timed']} artifacts timed "
                        f"({t['reused']} from the cache), margin {t['margin']:.0%}, {t['search_seconds']:.0f} s "
                        f"with recovery. Both paths recover for {a.recover_epochs} epochs; every pick re-measured "
                        f"with `profile` (1000 iterations, {a.threads} threads)."
                    },
                    {
                        "table": {
                            "columns": [
                                "budget",
                                "naive pick",
                                "naive ms",
                                "naive top-1 %",
                                "compress pick",
                                "compress ms",
                                "compress top-1 %",
                            ],
                            "align": ["left", "left", "right", "right", "left", "right", "right"],
                            "rows": rows,
                        }
                    },
                ],
            }
        )
    return out


if __name__ == "__main__":
    main()
