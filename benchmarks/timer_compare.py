"""edgevit's timer against the vendors' own tools, on the same artifacts: OpenVINO's benchmark_app, LiteRT's benchmark.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/timer_compare.py --run RUN [--pairs 5] [--iterations 1000]
        [--threads 2] [--copy-to DIR] [--out benchmarks/results/timer_compare.<machine>.json]

Exports RUN's student (or reuses its exports) for openvino-cpu and tflite-mobile, INT8 and FP32
(`edgevit.api.export_targets`, no ledger rows), then times every artifact in `--pairs` alternating
pairs: edgevit's timer (`edgevit.profile.runners.profile_artifact`, what `edgevit profile` runs:
`--iterations` timed calls after 10 warm-up ones) and the vendor's tool as a subprocess (argv
list, no shell) with the same thread count and the artifact's own input shape -- even pairs time
edgevit first, odd pairs the tool first, so a shared machine's drifting load falls on both. The
tools: `benchmark_app -hint none -nstreams 1 -nthreads T -api sync -niter N -infer_precision P`
(P: the inference precision edgevit's predictor runs, from the export's manifest) and
`litert-benchmark --num_threads T --num_runs N --warmup_runs 10` (LiteRT's CompiledModel API).
Their reported medians are parsed from what they print (2 decimals; benchmark_app prints
microseconds when its average is under 1 ms, litert-benchmark always milliseconds).

What the medians measure differs: benchmark_app quotes `InferRequest.latency`, timed in C++ inside
the infer call, while edgevit (and LiteRT's tool) time the Python call with `perf_counter` -- so
benchmark_app's own wall time per iteration (Duration / Count) is reported beside its median, and
for OpenVINO edgevit's per-call overhead over that C++ latency is read on the same calls (wall
minus `InferRequest.latency`), beside the bare `InferRequest.infer()`'s: the floor of any Python caller.

Prints and writes, per artifact: each tool's median per pair, the median of those medians, the
ratio edgevit / vendor, the median of the per-pair ratios (adjacent in time, so a shared machine's
drifting load cancels) and whether edgevit is within 5 %. `--compare-with` keeps an earlier run's
table (e.g. before a fix) in the JSON; `--copy-to` copies RUN (without its exports and teachers)
there first, for a run folder that must not be written to.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: spinning OpenMP starves 2 cores
os.environ.setdefault("CI", "true")  # OpenVINO's converter sends telemetry unless CI is set

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import load_average, machine_id, write_results  # noqa: E402

ARTIFACTS = [("openvino-cpu", "int8"), ("openvino-cpu", "fp32"), ("tflite-mobile", "int8"), ("tflite-mobile", "fp32")]
WARMUP = 10
TOLERANCE = 0.05  # the goal: edgevit's median within 5 % of the vendor tool's
# OpenVINO properties that decide the speed; edgevit's compiled model and benchmark_app's must agree
OV_PROPERTIES = ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT", "ENABLE_CPU_PINNING")


# ------------------------------------------------------------------------------------ the tools
def tool(name: str) -> str:
    """A vendor tool's executable: beside this Python (the venv's bin/) or on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found beside {sys.executable} nor on PATH")
    return found


def benchmark_app_argv(model: Path, threads: int, iterations: int, precision: str) -> list[str]:
    return [
        tool("benchmark_app"),
        "-m",
        str(model),
        "-d",
        "CPU",
        "-hint",
        "none",
        "-nstreams",
        "1",
        "-nthreads",
        str(threads),
        "-api",
        "sync",
        "-niter",
        str(iterations),
        "-infer_precision",
        precision,
    ]


def litert_argv(model: Path, threads: int, iterations: int, warmup: int = WARMUP) -> list[str]:
    return [
        tool("litert-benchmark"),
        "--model",
        str(model),
        "--num_threads",
        str(threads),
        "--num_runs",
        str(iterations),
        "--warmup_runs",
        str(warmup),
    ]


_NUM = r"([-+]?\d+(?:\.\d+)?)"
_TO_MS = {"s": 1e3, "ms": 1.0, "us": 1e-3, "\u00b5s": 1e-3, "ns": 1e-6}


def _grab(pattern: str, text: str, what: str) -> float:
    m = re.search(pattern, text, re.M)
    if not m:
        raise ValueError(f"no {what} in the tool's output")
    return float(m.group(1))


def _grab_time(label: str, text: str) -> float:
    """ "Median:  942.73 us" -> 0.94273: benchmark_app switches to microseconds below 1 ms."""
    m = re.search(rf"^\[ INFO \]\s+{label}:\s+{_NUM}\s*(s|ms|us|\u00b5s|ns)\s*$", text, re.M)
    if not m:
        raise ValueError(f"no '{label}' latency in benchmark_app's output")
    return float(m.group(1)) * _TO_MS[m.group(2)]


def parse_benchmark_app(text: str) -> dict[str, Any]:
    """benchmark_app's statistics (in ms) and the CPU properties it ran with.

    Its report ends "Count: N iterations / Duration: D ms / Latency: / Median: M ms / Average: /
    Min: / Max:" (each latency in us when the average is under 1 ms) and its step 8 lists the
    compiled model's properties ("INFERENCE_NUM_THREADS: 2").
    """
    latency = text[text.rindex("Latency:") :] if "Latency:" in text else ""
    out: dict[str, Any] = {
        key: _grab_time(label, latency)
        for key, label in (("median_ms", "Median"), ("mean_ms", "Average"), ("min_ms", "Min"), ("max_ms", "Max"))
    }
    out["count"] = int(_grab(rf"^\[ INFO \] Count:\s+{_NUM} iterations", text, "iteration count"))
    out["duration_ms"] = _grab(rf"^\[ INFO \] Duration:\s+{_NUM} ms", text, "duration")
    out["wall_ms_per_iteration"] = out["duration_ms"] / out["count"]
    props = {}
    for key in OV_PROPERTIES:
        m = re.search(rf"^\[ INFO \]\s+{key}: (.+)$", text, re.M)
        if m:
            props[key] = normalise_ov(m.group(1))
    out["properties"] = props
    return out


def normalise_ov(value: Any) -> str:
    """One spelling for an OpenVINO property however it was printed ("<Type: 'bfloat16'>" -> "bf16")."""
    s = str(value).strip()
    m = re.match(r"<Type: '(\w+)'>", s)
    s = m.group(1) if m else s
    return {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}.get(s, s)


def parse_litert_benchmark(text: str) -> dict[str, Any]:
    """litert-benchmark's "BENCHMARK RESULTS" block: "Inference (median):    0.85 ms" and its siblings."""
    out: dict[str, Any] = {
        f"{key}_ms": _grab(rf"^Inference \({key}\):\s+{_NUM} ms", text, f"inference {key}")
        for key in ("median", "avg", "min", "max")
    }
    out["mean_ms"] = out.pop("avg_ms")
    out["count"] = int(_grab(r"^Inference \(avg\):\s+[\d.]+ ms \((\d+) runs\)", text, "run count"))
    m = re.search(r"^Fully accelerated:\s+(\w+)", text, re.M)
    out["fully_accelerated"] = m.group(1) == "True" if m else None
    return out


def run_tool(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    text = done.stdout + "\n" + done.stderr
    if done.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}:\n{tail}")
    return text


# ------------------------------------------------------------------------------------ edgevit's side
def edgevit_settings(folder: Path, threads: int) -> dict[str, str]:
    """What edgevit's predictor runs with: for OpenVINO the compiled model's own properties."""
    from edgevit.runtimes import open_predictor

    p = open_predictor(folder, threads=threads)
    settings = {k: str(v) for k, v in p.settings.items()}
    if p.runtime == "openvino":
        compiled = p.native.get_compiled_model()
        settings.update({k: normalise_ov(compiled.get_property(k)) for k in OV_PROPERTIES})
    p.close()
    return settings


def time_edgevit(folder: Path, threads: int, iterations: int) -> dict[str, Any]:
    from edgevit.profile.runners import profile_artifact

    r = profile_artifact(folder, threads=threads, iterations=iterations, warmup=WARMUP)
    s = r.stats
    return {"median_ms": s.median_ms, "mean_ms": s.mean_ms, "min_ms": s.min_ms, "count": s.iterations}


def openvino_overhead(folder: Path, threads: int, iterations: int) -> dict[str, float]:
    """Load-robust: edgevit's predictor's wall time per call minus the C++ `InferRequest.latency` of the
    same call (what benchmark_app quotes), median over calls; and the same for the bare
    `InferRequest.infer()` on the bound input, interleaved with it: the floor of any Python caller."""
    import numpy as np

    from edgevit.profile.runners import make_input
    from edgevit.runtimes import open_predictor

    p = open_predictor(folder, threads=threads)
    request = p.native
    x = make_input(request.get_compiled_model().input(0).get_shape())
    for _ in range(WARMUP):
        p(x)
    calls = {"edgevit": lambda: p(x), "bare": lambda: request.infer(share_outputs=True)}
    wall: dict[str, list[float]] = {k: [] for k in calls}
    gap: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(max(1, iterations // 50)):
        for key, call in calls.items():
            for _ in range(50):
                t0 = time.perf_counter_ns()
                call()
                ms = (time.perf_counter_ns() - t0) / 1e6
                wall[key].append(ms)
                gap[key].append(ms - request.latency)
    p.close()
    return {
        "wall_ms": float(np.median(wall["edgevit"])),
        "gap_ms": float(np.median(gap["edgevit"])),
        "bare_infer_wall_ms": float(np.median(wall["bare"])),
        "bare_infer_gap_ms": float(np.median(gap["bare"])),
    }


def time_vendor(key: str, folder: Path, settings: dict[str, str], threads: int, iterations: int) -> dict[str, Any]:
    from edgevit.artifact import Artifact

    art = Artifact.load(folder)
    if art.format == "openvino":
        argv = benchmark_app_argv(art.model_path, threads, iterations, settings["INFERENCE_PRECISION_HINT"])
        got = parse_benchmark_app(run_tool(argv))
        differ = {k: (settings.get(k), v) for k, v in got["properties"].items() if settings.get(k) != v}
        if differ:
            raise RuntimeError(f"{key}: benchmark_app ran with other settings than edgevit (edgevit, tool): {differ}")
    else:
        argv = litert_argv(art.model_path, threads, iterations)
        got = parse_litert_benchmark(run_tool(argv))
    got["argv"] = [Path(argv[0]).name, *argv[1:]]
    return got


# ------------------------------------------------------------------------------------ main
def prepare_run(run: Path, copy_to: str | None) -> Path:
    if not copy_to:
        return run
    dst = Path(copy_to) / run.name
    if not dst.exists():
        shutil.copytree(run, dst, ignore=shutil.ignore_patterns("exports", "teachers", "*.sqlite", "cache*"))
    return dst


def export_all(run: Path) -> dict[str, Path]:
    from edgevit.api import export_targets

    folders = {}
    targets = list(dict.fromkeys(t for t, _ in ARTIFACTS))
    for job in export_targets(run, targets, ["int8", "fp32"], ledger=False, reuse=True):
        key = f"{job.target.name}/{job.precision}"
        if job.error:
            raise SystemExit(f"export {key} failed: {job.error}")
        folders[key] = job.folder
        print(f"  {key}: {'reused' if job.reused else 'exported'} {job.folder}", flush=True)
    return {f"{t}/{p}": folders[f"{t}/{p}"] for t, p in ARTIFACTS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a run folder holding student.pt")
    p.add_argument("--pairs", type=int, default=5, help="alternating (edgevit, tool) pairs per artifact (default 5)")
    p.add_argument("--iterations", type=int, default=1000, help="timed calls per measurement (default 1000)")
    p.add_argument("--threads", type=int, default=2, help="threads for both timers (default 2)")
    p.add_argument("--only", default="", help="comma-separated artifacts (e.g. openvino-cpu/int8); default all four")
    p.add_argument("--copy-to", default=None, help="copy RUN here (no exports/teachers) and export into the copy")
    p.add_argument("--label", default="", help="a word for this measurement in the JSON (e.g. before, after)")
    p.add_argument(
        "--compare-with",
        default=None,
        help="an earlier JSON of this script (e.g. before a fix): its sections and rows are kept beside this run's",
    )
    p.add_argument("--out", default=None, help="default benchmarks/results/timer_compare.<machine>.json")
    a = p.parse_args(argv)

    load_before = load_average()
    run = prepare_run(Path(a.run), a.copy_to)
    print(f"run {run}; exports:", flush=True)
    folders = export_all(run)
    if a.only:
        folders = {k: v for k, v in folders.items() if k in a.only.split(",")}
    rows, raw = [], {}
    for key, folder in folders.items():
        settings = edgevit_settings(folder, a.threads)
        ours, theirs = [], []
        for i in range(a.pairs):
            first_ours = i % 2 == 0
            for side in ("edgevit", "vendor") if first_ours else ("vendor", "edgevit"):
                if side == "edgevit":
                    ours.append(time_edgevit(folder, a.threads, a.iterations))
                else:
                    theirs.append(time_vendor(key, folder, settings, a.threads, a.iterations))
            print(
                f"  {key} pair {i + 1}/{a.pairs}: edgevit {ours[-1]['median_ms']:.3f} ms, "
                f"{theirs[-1]['argv'][0]} {theirs[-1]['median_ms']:.2f} ms (load {load_average()})",
                flush=True,
            )
        e, v = median(r["median_ms"] for r in ours), median(r["median_ms"] for r in theirs)
        row = {
            "artifact": key,
            "tool": theirs[0]["argv"][0],
            "edgevit_medians_ms": [round(r["median_ms"], 3) for r in ours],
            "tool_medians_ms": [r["median_ms"] for r in theirs],
            "edgevit_median_ms": round(e, 3),
            "tool_median_ms": round(v, 3),
            "ratio": round(e / v, 3),
            # each pair's two measurements are adjacent in time: their ratio cancels the load's slow drift
            "pair_ratio_median": round(median(o["median_ms"] / t["median_ms"] for o, t in zip(ours, theirs)), 3),
            "within_5pct": e <= v * (1 + TOLERANCE),
            "settings": settings,
        }
        if "wall_ms_per_iteration" in theirs[0]:
            row["tool_wall_ms_per_iteration"] = round(median(r["wall_ms_per_iteration"] for r in theirs), 3)
            o = openvino_overhead(folder, a.threads, a.iterations)
            row["edgevit_overhead"] = {k: round(v, 4) for k, v in o.items()}
            print(
                f"  {key}: wall - C++ request latency, same calls: edgevit {o['gap_ms'] * 1e3:.0f} us, "
                f"bare InferRequest.infer() {o['bare_infer_gap_ms'] * 1e3:.0f} us",
                flush=True,
            )
        rows.append(row)
        raw[key] = {"edgevit": ours, "tool": theirs}
    print_table(rows, a, load_before)
    mid = machine_id()
    out = Path(a.out or ROOT / "benchmarks" / "results" / f"timer_compare.{mid}.json")
    results = {
        "benchmark": "timer_compare",
        "script": "benchmarks/timer_compare.py",
        "label": a.label,
        "context": {
            "run": str(Path(a.run)),
            "pairs": a.pairs,
            "iterations": a.iterations,
            "warmup": WARMUP,
            "threads": a.threads,
            "tolerance": TOLERANCE,
            "tool_resolution_ms": 0.01,
        },
        "rows": rows,
        "raw": raw,
        "sections": sections(rows, a, load_before),
    }
    if a.compare_with:
        import json

        earlier = json.loads(Path(a.compare_with).read_text())
        results["earlier"] = {k: earlier.get(k) for k in ("label", "context", "rows")} | {
            "machine": {k: earlier["machine"].get(k) for k in ("load_average_before", "load_average", "date")}
        }
        results["sections"] += earlier["sections"]
    write_results(out, results, load_before, mid)
    print(f"wrote {out}")
    return 0


def print_table(rows: list[dict], a: argparse.Namespace, load_before: Any) -> None:
    print(
        f"\n== edgevit's timer vs the vendors' tools: {a.pairs} alternating pairs of {a.iterations} calls, "
        f"{a.threads} threads; load before {load_before}, after {load_average()}"
    )
    head = f"{'artifact':<20} {'tool':<16} {'edgevit ms':>10} {'tool ms':>8} {'ratio':>6} {'pairs':>6}"
    print(f"{head}  within 5%  per pair (edgevit | tool)")
    for r in rows:
        pairs = (
            " ".join(f"{x:.3f}" for x in r["edgevit_medians_ms"])
            + " | "
            + " ".join(f"{x:.2f}" for x in r["tool_medians_ms"])
        )
        wall = f" (tool wall/iter {r['tool_wall_ms_per_iteration']:.3f})" if "tool_wall_ms_per_iteration" in r else ""
        print(
            f"{r['artifact']:<20} {r['tool']:<16} {r['edgevit_median_ms']:10.3f} {r['tool_median_ms']:8.2f} "
            f"{r['ratio']:6.3f} {r['pair_ratio_median']:6.3f}  {'yes' if r['within_5pct'] else 'NO':<9}  {pairs}{wall}"
        )


def sections(rows: list[dict], a: argparse.Namespace, load_before: Any) -> list[dict]:
    table = {
        "columns": [
            "artifact",
            "vendor tool",
            "edgevit median ms",
            "tool median ms",
            "edgevit / tool",
            "median of per-pair ratios",
            "within 5 %",
            "edgevit per pair",
            "tool per pair",
            "tool wall ms / iteration",
            "edgevit wall - C++ latency, same calls (us)",
            "bare infer() wall - C++ latency (us)",
        ],
        "align": ["left", "left", *["right"] * 4, "left", "left", "left", *["right"] * 3],
        "rows": [
            [
                r["artifact"],
                r["tool"],
                r["edgevit_median_ms"],
                r["tool_median_ms"],
                r["ratio"],
                r["pair_ratio_median"],
                "yes" if r["within_5pct"] else "no",
                " ".join(f"{x:.3f}" for x in r["edgevit_medians_ms"]),
                " ".join(f"{x:.2f}" for x in r["tool_medians_ms"]),
                r.get("tool_wall_ms_per_iteration", "-"),
                round(r["edgevit_overhead"]["gap_ms"] * 1e3) if "edgevit_overhead" in r else "-",
                round(r["edgevit_overhead"]["bare_infer_gap_ms"] * 1e3) if "edgevit_overhead" in r else "-",
            ]
            for r in rows
        ],
    }
    text = (
        f"{a.pairs} alternating pairs per artifact (edgevit first in even pairs, the tool first in odd ones), "
        f"{a.iterations} timed calls each, {a.threads} threads in both, the artifact's own input shape; "
        f"medians of the per-pair medians. Load average before {load_before}, after {load_average()} "
        "(the machine is shared). The tools print 2 decimals. benchmark_app quotes the C++-side "
        "`InferRequest.latency`; its wall time per iteration (Duration / Count) is beside it, and the last "
        "last two columns are the wall time over that C++ latency on the same calls (load-robust): edgevit's "
        "predictor, and the bare `InferRequest.infer()` on its bound input, interleaved -- the floor any Python "
        "caller pays."
    )
    return [
        {
            "title": f"edgevit's timer vs benchmark_app and litert-benchmark{f' ({a.label})' if a.label else ''}",
            "blocks": [{"text": text}, {"table": table}],
        }
    ]


if __name__ == "__main__":
    sys.exit(main())
