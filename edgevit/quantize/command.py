"""`edgevit quantize RUN --target T [--method ptq|tune|qat] [--max-drop 0.5]`: INT8 held to an accuracy drop."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from edgevit.quantize import METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run name (under --runs-dir) or run folder holding student.pt")
    parser.add_argument(
        "--target", "-t", required=True, help="target name or alias (e.g. tflite, jetson), or a YAML path"
    )
    parser.add_argument(
        "--method",
        "-m",
        default="tune",
        choices=METHODS,
        help="ptq: one-shot; tune: keep layers in float until within --max-drop (default); "
        "qat: quantization-aware distillation from the FP32 student",
    )
    parser.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        metavar="PT",
        help="top-1 points the INT8 model may lose against FP32 on the validation split (default 0.5)",
    )
    parser.add_argument(
        "--tool",
        choices=("nncf", "inc"),
        default=None,
        help="tuner for --method tune on the onnx target: nncf (default) or inc (Neural Compressor autotune)",
    )
    parser.add_argument(
        "--calibration", type=int, metavar="N", help="training images for calibration (default: the target's)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="QAT epochs (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="cap on QAT optimizer steps")
    parser.add_argument(
        "--teacher",
        choices=("student", "run"),
        default="student",
        help="QAT teacher: the FP32 student (default) or the teacher the run was distilled from",
    )
    parser.add_argument("--lr", type=float, default=1e-4, help="QAT learning rate (AdamW, cosine; default 1e-4)")
    parser.add_argument(
        "--verify-images",
        type=int,
        default=2000,
        metavar="N",
        help="validation images to tune and verify on (default 2000; the whole split if smaller)",
    )
    parser.add_argument(
        "--runs-dir",
        "--runs",
        dest="runs",
        type=Path,
        default=None,
        help="runs folder (default: $EDGEVIT_RUNS or ./runs)",
    )
    parser.add_argument("--no-ledger", action="store_true", help="do not record the export in the runs ledger")


def run(args: argparse.Namespace) -> int:
    from edgevit.console import converter_output_on_stderr
    from edgevit.export.command import resolve_run, table
    from edgevit.quantize import quantize

    if not math.isfinite(args.max_drop):
        args.max_drop = -1.0  # reported by quantize() as out of range
    with converter_output_on_stderr():
        result = quantize(
            resolve_run(args.run, args.runs),
            args.target,
            args.method,
            args.max_drop,
            calibration=args.calibration,
            epochs=args.epochs,
            steps=args.steps,
            lr=args.lr,
            teacher=args.teacher,
            tool=args.tool,
            verify_images=args.verify_images,
            ledger=not args.no_ledger,
        )
    print(table([(result.artifact.manifest.get("target", args.target), result)]))
    q = result.artifact.manifest.get("quantization") or {}
    floats = q.get("float_layers") or []
    print(
        f"method {args.method}, max drop {args.max_drop:g} pt; {len(floats)} layer(s) in float"
        + (f": {', '.join(floats[:12])}{' ...' if len(floats) > 12 else ''}" if floats else "")
    )
    print(f"artifact in {result.artifact.directory}")
    if result.verification.within_drop is False:  # a Jetson INT8 is judged by its ONNX, run here
        print(
            f"edgevit: the INT8 model misses --max-drop {args.max_drop:g}: {result.verification.note}", file=sys.stderr
        )
        return 1
    return 0
