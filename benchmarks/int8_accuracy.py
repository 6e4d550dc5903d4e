"""INT8 that keeps its accuracy: PTQ, tune and QAT side by side per target, plus DeiT-Ti/224 on LiteRT.

    python benchmarks/int8_accuracy.py --take deit-ti=runs/quickstart --take pvt-v2-b0=RUN [--targets ...]
        [--methods ptq,tune,qat] [--max-drop 0.5] [--json benchmarks/results/int8_accuracy.json]
    python benchmarks/int8_accuracy.py --deit224 [--deit224-methods ptq,tune,qat]

Part 1 (students): for each run, each target (OpenVINO, ONNX Runtime, LiteRT full-integer, Jetson
Q/DQ) and each method, `edgevit.quantize.quantize` writes and verifies the artifact; the row has
top-1 on the held-out split vs FP32, agreement with FP32, size, the layers left in float, the
wall time, and latency (1 thread, batch 1, median of 50 after 10 warm-up) where the runtime runs
here (the Jetson ONNX runs in onnxruntime here, but its latency belongs to TensorRT: not timed).
Every family is a run folder given with --take (e.g. `edgevit distill --student pvt_v2_b0`).

Part 2 (--deit224): DeiT-Ti/224 with random weights (seed 0) and the crops benchmarks/latency.py
uses (64 calibration crops, 128 evaluation crops of scikit-learn's sample photos). With random
weights there are no labels, so FP32's own top-1 is the label and "top-1" is agreement with FP32:
`--deit224-max-drop 10` asks for >= 90 % agreement. LiteRT full integer, PTQ vs tune vs QAT.

Every timing is printed with the machine load (`uptime`'s averages) next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from _machine import write_json  # noqa: E402  (benchmarks/: the JSON with the machine it was measured on)

from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.profile.stats import machine_load  # noqa: E402

TARGETS = ["openvino-cpu", "onnx", "tflite-mobile", "jetson-orin"]
NOT_TIMED = {"jetson-orin": "TensorRT runs on the device"}


def latency(artifact_dir: Path, iterations: int = 50) -> tuple[float | None, str]:
    from edgevit.profile.runners import profile_artifact

    r = profile_artifact(artifact_dir, threads=1, iterations=iterations, warmup=10)
    return round(r.stats.median_ms, 3), machine_load()


def student_rows(
    family: str, run: Path, targets: list[str], methods: list[str], max_drop: float, epochs: int
) -> list[dict]:
    from edgevit.export.pipeline import export_run
    from edgevit.quantize import quantize

    rows = []
    for target in targets:
        try:  # the FP32 reference row: size and latency to compare against
            fp32 = export_run(run, target, "fp32", ledger=False)
            ms, load = latency(fp32.artifact.directory) if target not in NOT_TIMED else (None, machine_load())
            rows.append(
                {
                    "family": family,
                    "target": target,
                    "method": "fp32",
                    "top1": fp32.verification.top1,
                    "fp32_top1": fp32.verification.torch_top1,
                    "agreement": fp32.verification.agreement,
                    "size_bytes": fp32.artifact.size_bytes(),
                    "median_ms": ms,
                    "load": load,
                }
            )
        except EdgevitError as exc:
            rows.append({"family": family, "target": target, "method": "fp32", "error": str(exc)})
        for method in methods:
            row: dict[str, Any] = {"family": family, "target": target, "method": method, "max_drop": max_drop}
            start, load_before = time.perf_counter(), machine_load()
            try:
                r = quantize(run, target, method, max_drop, epochs=epochs, ledger=False)
            except EdgevitError as exc:
                row["error"] = str(exc)
                print(f"{family} {target} {method}: {exc}", file=sys.stderr, flush=True)
                rows.append(row)
                continue
            v, q = r.verification, r.artifact.manifest["quantization"]
            row.update(
                seconds=round(time.perf_counter() - start, 1),
                load_during=f"{load_before} -> {machine_load()}",
                top1=v.top1,
                fp32_top1=v.torch_top1,
                drop=round(v.torch_top1 - v.top1, 2),
                agreement=v.agreement,
                within=round(v.torch_top1 - v.top1, 2) <= max_drop,
                size_bytes=r.artifact.size_bytes(),
                float_layers=q.get("float_layers") or [],
                tool=q.get("tool"),
                path=str(r.artifact.directory),
            )
            if target not in NOT_TIMED:
                row["median_ms"], row["load"] = latency(r.artifact.directory)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "float_layers"}), file=sys.stderr, flush=True)
    return rows


def deit224_rows(methods: list[str], max_drop: float, out: Path, qat_steps: int) -> list[dict]:
    """LiteRT full integer on DeiT-Ti/224 (random weights), agreement with FP32 on 128 photo crops."""
    import shutil

    import torch
    from latency import build_model, photo_crops

    from edgevit.config import load_target
    from edgevit.quantize import qat as qat_mod
    from edgevit.quantize import tflite as tfl

    model = build_model()
    calib, evalset = photo_crops(64, seed=1), photo_crops(128, seed=2)
    with torch.no_grad():
        reference = np.concatenate([model(torch.from_numpy(evalset[i : i + 32])).numpy() for i in range(0, 128, 32)])
    labels = reference.argmax(1)  # random weights: FP32's answer is the label, top-1 = agreement with FP32
    target = load_target("tflite-mobile")
    target = target.model_copy(update={"quantization": target.quantization.model_copy(update={"scheme": "static"})})
    sample = torch.from_numpy(evalset[:1].copy())
    rows = []
    for method in methods:
        folder = out / f"deit224-{method}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        start, load_before = time.perf_counter(), machine_load()
        if method == "ptq":
            from edgevit.export.tflite import export as tflite_export

            art = tflite_export(model, sample, target, "int8", calib, folder, {})
            q = {"float_layers": tfl.float_layers(art.model_path.read_bytes())}
        elif method == "tune":
            art, result = tfl.tune(
                model, sample, target, calib, evalset, labels, reference, max_drop, folder, log=print
            )
            q = art.manifest["quantization"]
        else:  # QAT on photo crops (the calibration crops and fresh ones), distilled from the FP32 model
            crops = torch.utils.data.TensorDataset(
                torch.from_numpy(photo_crops(256, seed=3)), torch.zeros(256, dtype=torch.long)
            )  # alpha=1: labels unused
            art, q = qat_mod.run(
                model,
                None,
                sample,
                target,
                crops,
                calib,
                evalset,
                labels,
                reference,
                max_drop,
                folder,
                epochs=1,
                steps=qat_steps,
                batch_size=8,
                lr=5e-5,
                alpha=1.0,
                log=print,
            )
        art.write_manifest()
        seconds = round(time.perf_counter() - start, 1)
        from edgevit.runtimes import open_predictor

        predictor = open_predictor(folder)
        agree = round(float((predictor(evalset).argmax(1) == labels).mean() * 100), 2)
        ms, load = latency(folder, iterations=30)
        rows.append(
            {
                "family": "deit-ti/224 (random)",
                "target": "tflite-mobile",
                "method": method,
                "agreement": agree,
                "float_layers": q.get("float_layers") or [],
                "size_bytes": art.size_bytes(),
                "seconds": seconds,
                "load_during": f"{load_before} -> {machine_load()}",
                "median_ms": ms,
                "load": load,
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "float_layers"}), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    out = [
        "| family | target | method | top-1 % (FP32) | drop pt | agree % | float layers | size KB "
        "| median ms (1 thr) | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['family']} | {r['target']} | {r['method']} | error: {r['error'][:90]} | | | | | | |")
            continue
        top1 = "-" if r.get("top1") is None else f"{r['top1']:.2f} ({r['fp32_top1']:.2f})"
        drop = "-" if r.get("drop") is None else f"{r['drop']:+.2f}"
        agree = "-" if r.get("agreement") is None else f"{r['agreement']:.2f}"
        ms = "-" if r.get("median_ms") is None else f"{r['median_ms']:.2f}"
        floats = "-" if r["method"] == "fp32" else str(len(r.get("float_layers") or []))
        out.append(
            f"| {r['family']} | {r['target']} | {r['method']} | {top1} | {drop} | {agree} | {floats} | "
            f"{r['size_bytes'] / 1024:.0f} | {ms} | {r.get('seconds', '-')} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--take", action="append", default=[], metavar="FAMILY=RUN_DIR")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--methods", default="ptq,tune,qat")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=3, help="QAT epochs")
    ap.add_argument("--runs", type=Path, default=ROOT / "benchmarks/results/int8-runs")
    ap.add_argument("--deit224", action="store_true", help="the DeiT-Ti/224 LiteRT full-integer part")
    ap.add_argument("--deit224-methods", default="ptq,tune")
    ap.add_argument("--deit224-max-drop", type=float, default=10.0)
    ap.add_argument("--deit224-qat-steps", type=int, default=60)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/int8_accuracy.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows: list[dict] = []
    if args.deit224:
        rows += deit224_rows(args.deit224_methods.split(","), args.deit224_max_drop, args.runs, args.deit224_qat_steps)
    for spec in args.take:
        family, run = spec.split("=", 1)
        rows += student_rows(
            family, Path(run), args.targets.split(","), args.methods.split(","), args.max_drop, args.epochs
        )
    print(markdown(rows))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    keep = [
        r
        for r in old["rows"]
        if not any(
            r["family"] == n["family"] and r["target"] == n["target"] and r["method"] == n["method"] for n in rows
        )
    ]
    write_json(args.json, {"cpus": os.cpu_count(), "rows": keep + rows})  # kept rows: an earlier session's
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
