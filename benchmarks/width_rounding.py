"""Do widths that are multiples of 8/16/32/64 run faster at equal MACs? Per target and precision, on this CPU.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/width_rounding.py [--quick] [--repeats 5] [--threads 2]
        [--exports DIR] [--fresh] [--out benchmarks/results/width_rounding.<machine>.json (quick: in /tmp)]

A latency-budget search that prunes widths could round them to multiples the kernels like; this
measures whether that pays. Students: DeiT-style timm `deit_tiny_distilled_patch16_224` built with
edgevit's student builder as recipes/quickstart.yaml's (patch 8, 32 px, 10 classes; depth 4,
random weights seed 0: latency does not depend on the weights), in two sweeps around equal MACs:

- mlp: the MLP hidden width (embedding 192, 3 heads of 64) at 352 ... 416 in steps of 4 or 8, so each
  multiple of 16/32/64 has unaligned neighbours (not a multiple of 8) within a few % of its MACs;
- embed: the embedding width 184 ... 200 in steps of 4 (4 heads, head dims 46-50; MLP hidden 384).

Each model is exported for openvino-cpu (fp32; int8 with the target's NNCF defaults) and
tflite-mobile (fp32; int8 dynamic-range, the target's scheme) with edgevit's own exporters (the
LiteRT INT8 quantizes the FP32 flatbuffer with the exporter's own `_quantize`, saving a second
conversion), and every width of one (target, precision) is timed interleaved with
`edgevit.api.time_artifacts` (2 threads), `--repeats` times over, so the run-to-run spread is measured.

Analysis per (target, precision) and sweep: a straight line ms = a + b * MMAC is fitted to the
unaligned widths' medians (what an unaligned model of that size costs); each width's residual is
its time relative to that line. A class's gain is minus its mean residual, per repeat. It is
"measurably faster" when the gain is positive in every repeat and its mean exceeds twice the noise:
the larger of the gain's standard deviation over repeats and the median over widths of each
width's run-to-run standard deviation (%). The verdict is the smallest multiple (8 < 16 < 32 < 64)
that is measurably faster, or "no measurable gain". ms per MMAC by class is printed beside it.
`--quick` (about a minute): depth 2, three MLP widths, one repeat -- a smoke run, no verdicts to trust.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: spinning OpenMP starves 2 cores
os.environ.setdefault("CI", "true")  # OpenVINO's converter sends telemetry unless CI is set

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import load_average, machine_id, write_results  # noqa: E402

MODEL = "deit_tiny_distilled_patch16_224"
IMG, PATCH, CLASSES = 32, 8, 10
MLP_WIDTHS = [352, 360, 368, 372, 376, 380, 384, 388, 392, 396, 400, 416]
EMBED_WIDTHS = [184, 188, 192, 196, 200]
QUICK_MLP = [380, 384, 388]
JOBS = [("openvino-cpu", "fp32"), ("openvino-cpu", "int8"), ("tflite-mobile", "fp32"), ("tflite-mobile", "int8")]
CLASSES_ORDER = [64, 32, 16, 8]  # alignment classes: the largest power-of-two multiple (up to 64) a width is


CAVEAT = (
    "In the embed sweep the one multiple of 64 is 192, whose 4 heads are 48 wide (the other widths' are 46, 47, "
    "49 and 50) and whose MLP input and QKV output (576) are multiples of 64 too, and only two widths are "
    "unaligned, so the line through them fits exactly: a gain there says 192 is faster than its neighbours, "
    "not which of its dimensions makes it so. ms per MMAC by class (mean over the class's widths and the repeats):"
)


def alignment(width: int) -> str:
    """'64', '32', '16', '8' (the largest of these that divides the width) or 'none'."""
    return next((str(m) for m in CLASSES_ORDER if width % m == 0), "none")


def designs(quick: bool) -> list[dict[str, Any]]:
    """One dict per model: sweep, width, timm kwargs."""
    depth = 2 if quick else 4
    out = []
    for h in QUICK_MLP if quick else MLP_WIDTHS:
        # timm's Block builds int(dim * mlp_ratio) hidden units: + 0.25 keeps float rounding from giving h - 1
        kw = {"depth": depth, "embed_dim": 192, "num_heads": 3, "mlp_ratio": (h + 0.25) / 192}
        out.append({"sweep": "mlp", "width": h, "kwargs": kw})
    for e in [] if quick else EMBED_WIDTHS:
        kw = {"depth": depth, "embed_dim": e, "num_heads": 4, "mlp_ratio": (384 + 0.25) / e}
        out.append({"sweep": "embed", "width": e, "kwargs": kw})
    return out


def build(d: dict[str, Any]) -> Any:
    import torch

    from edgevit.models.students import create_student, student_kwargs

    torch.manual_seed(0)
    model = create_student(MODEL, student_kwargs(MODEL, CLASSES, IMG, PATCH, 0.0, d["kwargs"])).eval()
    hidden = {b.mlp.fc1.out_features for b in model.blocks}
    embed = model.embed_dim
    assert hidden == {d["width"] if d["sweep"] == "mlp" else 384}, hidden
    assert embed == (192 if d["sweep"] == "mlp" else d["width"]), embed
    return model


def export_one(model: Any, target_name: str, precision: str, calib: np.ndarray, folder: Path) -> Path:
    """edgevit's exporter for the target (LiteRT INT8: the exporter's quantizer on the FP32 flatbuffer)."""
    import torch

    from edgevit import formats
    from edgevit.artifact import MANIFEST, Artifact
    from edgevit.config import load_target

    if (folder / MANIFEST).is_file():
        return folder
    target = load_target(target_name)
    folder.mkdir(parents=True, exist_ok=True)
    sample = torch.from_numpy(calib[:1].copy())
    if target.format == "tflite" and precision == "int8":
        from edgevit.export import tflite

        fp32 = folder.parent / "fp32" / tflite.MODEL_FILE
        flat = fp32.read_bytes() if fp32.is_file() else tflite.convert(model, sample)
        flat, quant = tflite._quantize(flat, precision, target, calib)
        (folder / tflite.MODEL_FILE).write_bytes(flat)
        art = Artifact("tflite", precision, folder, [tflite.MODEL_FILE], list(sample.shape), {"quantization": quant})
        art.manifest["runtime"] = {}
    else:
        art = formats.get(target.format).export(model, sample, target, precision, calib, folder, {})
    art.write_manifest()
    return folder


def export_all(ds: list[dict[str, Any]], out: Path, fresh: bool) -> dict[tuple[str, int], dict[str, Any]]:
    import shutil

    from edgevit.models.students import count_macs

    calib = np.random.default_rng(1).standard_normal((32, 3, IMG, IMG), dtype=np.float32)
    models = {}
    for d in ds:
        t0 = time.perf_counter()
        model = build(d)
        base = out / f"{d['sweep']}-{d['width']}-depth{d['kwargs']['depth']}"
        if fresh and base.exists():
            shutil.rmtree(base)
        folders = {f"{t}/{p}": export_one(model, t, p, calib, base / t / p) for t, p in JOBS}
        models[(d["sweep"], d["width"])] = {**d, "mmac": count_macs(model, IMG) / 1e6, "folders": folders}
        print(f"  {d['sweep']} {d['width']}: {time.perf_counter() - t0:.0f} s", flush=True)
    return models


def time_all(models: dict, repeats: int, threads: int, iterations: int, rounds: int) -> dict[str, Any]:
    """job -> {"ms": {(sweep, width): [median per repeat]}, "load": [...]}: one interleaved group per job."""
    from edgevit.api import Timing, time_artifacts

    timing = Timing(iterations=iterations, warmup=10, threads=threads)
    out = {}
    for t, p in JOBS:
        job = f"{t}/{p}"
        arts = {f"{s}-{w}": m["folders"][job] for (s, w), m in models.items()}
        ms: dict[str, list[float]] = {k: [] for k in arts}
        loads = [load_average()]
        for r in range(repeats):
            res = time_artifacts(arts, timing, rounds)
            for k, v in res.items():
                ms[k].append(v.stats.median_ms)
            loads.append(load_average())
            print(f"  {job} repeat {r + 1}/{repeats} (load {loads[-1]})", flush=True)
        out[job] = {"ms": ms, "load": loads}
    return out


def analyse(models: dict, timed: dict[str, Any]) -> dict[str, Any]:
    """Per job and sweep: residuals against the unaligned trend, gains by class, verdict."""
    result = {}
    for job, t in timed.items():
        per_sweep = {}
        for sweep in sorted({s for s, _ in models}):
            widths = sorted(w for s, w in models if s == sweep)
            keys = [f"{sweep}-{w}" for w in widths]
            mmac = np.array([models[(sweep, w)]["mmac"] for w in widths])
            ms = np.array([t["ms"][k] for k in keys])  # widths x repeats
            cls = [alignment(w) for w in widths]
            un = np.array([c == "none" for c in cls])
            spread_w = ms.std(axis=1, ddof=1) / ms.mean(axis=1) * 100 if ms.shape[1] > 1 else np.zeros(len(widths))
            res = np.zeros_like(ms)
            for r in range(ms.shape[1]):
                if un.sum() >= 2:
                    b, a = np.polyfit(mmac[un], ms[un, r], 1)
                else:  # one unaligned width: the trend through it, proportional to MACs
                    a, b = 0.0, float(ms[un, r].mean() / mmac[un].mean())
                res[:, r] = (ms[:, r] / (a + b * mmac) - 1) * 100
            # run-to-run spread of each width's residual: the load's common drift cancels within a repeat
            res_sd = res.std(axis=1, ddof=1) if ms.shape[1] > 1 else np.zeros(len(widths))
            noise_runs = float(np.median(res_sd))
            scatter = float(np.sqrt((res[un] ** 2).mean())) if un.sum() > 2 else 0.0  # unaligned widths vs their line
            classes, verdict = {}, "no measurable gain"
            for c in [str(m) for m in sorted(CLASSES_ORDER)]:
                idx = [i for i, x in enumerate(cls) if x == c]
                if not idx:
                    continue
                gain = -res[idx].mean(axis=0)  # per repeat, % faster than the unaligned trend
                gain_sd = float(gain.std(ddof=1)) if len(gain) > 1 else float("nan")
                noise = max(noise_runs, scatter, gain_sd if gain_sd == gain_sd else 0.0)
                measurable = len(gain) > 1 and bool((gain > 0).all()) and float(gain.mean()) > 2 * noise
                classes[c] = {
                    "widths": [widths[i] for i in idx],
                    "gain_pct": round(float(gain.mean()), 2),
                    "gain_pct_per_repeat": [round(float(g), 2) for g in gain],
                    "gain_sd_pct": round(gain_sd, 2) if gain_sd == gain_sd else None,
                    "noise_pct": round(noise, 2),
                    "measurably_faster": measurable,
                    "ms_per_mmac": round(float((ms[idx].mean(axis=1) / mmac[idx]).mean()), 5),
                }
                if measurable and verdict == "no measurable gain":
                    verdict = f"multiple of {c}"
            none_idx = [i for i, x in enumerate(cls) if x == "none"]
            classes["none"] = {
                "widths": [widths[i] for i in none_idx],
                "ms_per_mmac": round(float((ms[none_idx].mean(axis=1) / mmac[none_idx]).mean()), 5),
                "residual_rms_pct": round(float(np.sqrt((res[none_idx] ** 2).mean())), 2),
            }
            rows = [
                {
                    "width": w,
                    "alignment": c,
                    "mmac": round(float(m), 3),
                    "ms_per_repeat": [round(float(x), 4) for x in ms[i]],
                    "median_ms": round(float(np.median(ms[i])), 4),
                    "ms_per_mmac": round(float(np.median(ms[i]) / m), 5),
                    "residual_pct": round(float(res[i].mean()), 2),
                    "run_to_run_sd_pct": round(float(spread_w[i]), 2),
                    "residual_sd_pct": round(float(res_sd[i]), 2),
                }
                for i, (w, c, m) in enumerate(zip(widths, cls, mmac))
            ]
            per_sweep[sweep] = {
                "verdict": verdict,
                "run_to_run_sd_pct": round(noise_runs, 2),
                "unaligned_scatter_pct": round(scatter, 2),
                "classes": classes,
                "rows": rows,
            }
        result[job] = {"sweeps": per_sweep, "load": t["load"]}
    return result


def print_tables(analysis: dict[str, Any]) -> None:
    for job, a in analysis.items():
        for sweep, s in a["sweeps"].items():
            print(
                f"\n== {job}, {sweep} width; residual run-to-run sd {s['run_to_run_sd_pct']} %, unaligned scatter "
                f"{s['unaligned_scatter_pct']} %; verdict: {s['verdict']}"
            )
            print(f"{'width':>6} {'class':>5} {'MMAC':>8} {'ms':>8} {'ms/MMAC':>9} {'vs trend %':>10} {'sd %':>6}")
            for r in s["rows"]:
                print(
                    f"{r['width']:6d} {r['alignment']:>5} {r['mmac']:8.2f} {r['median_ms']:8.3f} "
                    f"{r['ms_per_mmac']:9.5f} {r['residual_pct']:10.2f} {r['run_to_run_sd_pct']:6.2f}"
                )
            for c, v in s["classes"].items():
                if c != "none":
                    print(
                        f"  multiple of {c:>2}: {v['gain_pct']:+.2f} % vs unaligned (per repeat "
                        f"{v['gain_pct_per_repeat']}, noise {v['noise_pct']} %) -> "
                        f"{'measurably faster' if v['measurably_faster'] else 'not measurable'}"
                    )


def sections(analysis: dict[str, Any], ctx: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = {
        "columns": ["target", "precision", "sweep", "verdict", "gain by class (% vs unaligned trend)", "noise %"],
        "align": ["left", "left", "left", "left", "left", "right"],
        "rows": [
            [
                job.split("/")[0],
                job.split("/")[1],
                sweep,
                s["verdict"],
                ", ".join(f"x{c}: {v['gain_pct']:+.1f}" for c, v in s["classes"].items() if c != "none"),
                max(s["run_to_run_sd_pct"], s["unaligned_scatter_pct"]),
            ]
            for job, an in analysis.items()
            for sweep, s in an["sweeps"].items()
        ],
    }
    per_class = {
        "columns": ["target", "precision", "sweep", *[f"ms/MMAC x{c}" for c in (64, 32, 16, 8)], "ms/MMAC unaligned"],
        "align": ["left", "left", "left", "right", "right", "right", "right", "right"],
        "rows": [
            [
                job.split("/")[0],
                job.split("/")[1],
                sweep,
                *[s["classes"].get(str(c), {}).get("ms_per_mmac", "-") for c in (64, 32, 16, 8)],
                s["classes"]["none"]["ms_per_mmac"],
            ]
            for job, an in analysis.items()
            for sweep, s in an["sweeps"].items()
        ],
    }
    text = (
        f"DeiT-style students (patch 8, 32 px, depth {2 if ctx['quick'] else 4}, random weights), the MLP hidden "
        "width swept at embedding 192 and the embedding width swept at MLP hidden 384; each (target, "
        f"precision)'s widths timed interleaved with `time_artifacts`, {ctx['threads']} threads, "
        f"{ctx['repeats']} repeats of {ctx['iterations_per_repeat']} calls per width, "
        f"{ctx['seconds']['total']} s in all. "
        "Gain: how much faster than a line fitted through the unaligned widths' times (ms vs MMAC); "
        "measurable when positive in every repeat and above twice the noise (the larger of the gain's sd over "
        "repeats, the run-to-run sd of the widths' residuals and, with 3+ unaligned widths, their scatter about "
        f"their line). Load average before {ctx['load_average_before']}, after {ctx['load_average_after']}: "
        "the machine is shared with another engineer's jobs."
    )
    return [
        {
            "title": "Width rounding: aligned vs unaligned widths at equal MACs" + (" (quick)" if ctx["quick"] else ""),
            "blocks": [{"text": text}, {"table": verdicts}, {"text": CAVEAT}, {"table": per_class}],
        }
    ]


def reanalyse(path: Path) -> int:
    """The analysis and sections again from a saved run's per-repeat medians (machine and context kept)."""
    import json

    data = json.loads(path.read_text())
    models, timed = {}, {}
    for job, an in data["analysis"].items():
        timed[job] = {"ms": {}, "load": an["load"]}
        for sweep, sw in an["sweeps"].items():
            for r in sw["rows"]:
                models[(sweep, r["width"])] = {"sweep": sweep, "width": r["width"], "mmac": r["mmac"]}
                timed[job]["ms"][f"{sweep}-{r['width']}"] = r["ms_per_repeat"]
    analysis = analyse(models, timed)
    print_tables(analysis)
    data["analysis"] = analysis
    data["verdicts"] = {job: {sw: s["verdict"] for sw, s in an["sweeps"].items()} for job, an in analysis.items()}
    data["sections"] = sections(analysis, data["context"])
    data["reanalysed"] = "analysis redone by --reanalyse from the stored per-repeat medians (rounded to 0.1 us)"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
    print(f"rewrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="about a minute: depth 2, 3 MLP widths, 1 repeat")
    p.add_argument("--repeats", type=int, default=None, help="interleaved timing repeats (default 5; quick 1)")
    p.add_argument("--iterations", type=int, default=None, help="timed calls per artifact per repeat (default 400)")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds per repeat (default 10)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exports", default=str(Path(tempfile.gettempdir()) / "edgevit-width-rounding"))
    p.add_argument("--fresh", action="store_true", help="export again even if cached")
    p.add_argument("--out", default=None, help="default benchmarks/results/width_rounding.<machine>.json")
    p.add_argument("--reanalyse", default=None, metavar="JSON", help="redo a saved run's analysis from its times")
    a = p.parse_args(argv)
    if a.reanalyse:
        return reanalyse(Path(a.reanalyse))
    a.repeats = a.repeats or (1 if a.quick else 5)
    iterations = a.iterations or (50 if a.quick else 400)

    load_before = load_average()
    t0 = time.perf_counter()
    ds = designs(a.quick)
    print(f"{len(ds)} students x {len(JOBS)} exports in {a.exports}", flush=True)
    models = export_all(ds, Path(a.exports), a.fresh)
    t_export = time.perf_counter() - t0
    timed = time_all(models, a.repeats, a.threads, iterations, a.rounds)
    analysis = analyse(models, timed)
    print_tables(analysis)
    seconds = {"export": round(t_export), "total": round(time.perf_counter() - t0)}
    print(f"\nexport {seconds['export']} s, total {seconds['total']} s; load {load_before} -> {load_average()}")
    mid = machine_id()
    # a quick run is a smoke test: its JSON stays out of benchmarks/results/ (docs/gen.py renders every file there)
    where = Path(tempfile.gettempdir()) if a.quick else ROOT / "benchmarks" / "results"
    out = Path(a.out or where / f"width_rounding.{mid}.json")
    results = {
        "benchmark": "width_rounding",
        "script": "benchmarks/width_rounding.py",
        "context": {
            "model": f"{MODEL} via edgevit.models.students (patch {PATCH}, {IMG} px, {CLASSES} classes, seed 0)",
            "quick": a.quick,
            "repeats": a.repeats,
            "iterations_per_repeat": iterations,
            "rounds": a.rounds,
            "threads": a.threads,
            "seconds": seconds,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "models": [
                {"sweep": m["sweep"], "width": m["width"], "mmac": round(m["mmac"], 3), "kwargs": m["kwargs"]}
                for m in models.values()
            ],
        },
        "verdicts": {job: {sw: s["verdict"] for sw, s in an["sweeps"].items()} for job, an in analysis.items()},
        "analysis": analysis,
    }
    results["sections"] = sections(analysis, results["context"])
    write_results(out, results, load_before, mid)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
