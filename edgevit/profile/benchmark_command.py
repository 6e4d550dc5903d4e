"""`edgevit benchmark RUN [--targets all] [--max-drop 0.5]`: parses and calls
`edgevit.profile.benchmark.benchmark`, prints the table and each target's pick."""

from __future__ import annotations

import argparse

from edgevit.profile.command import add_device_arguments, device_of, timing_of

EXIT_BELOW_FLOOR = 1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, or run name under the runs folder")
    p.add_argument("--targets", default="all", help="'all' or comma-separated target names/aliases (default all)")
    p.add_argument("--precisions", default="all", help="'all' (each target's list) or comma-separated, e.g. fp32,int8")
    p.add_argument(
        "--max-drop",
        type=float,
        default=0.5,
        help="top-1 points a pick may lose against PyTorch FP32 (default %(default)s)",
    )
    p.add_argument(
        "--min-accuracy",
        type=float,
        default=None,
        help="top-1 floor in %% (0-100; a value <= 1 is read as a fraction); exit 1 if a row misses it",
    )
    p.add_argument("--calibration", type=int, default=None, help="INT8 calibration images (default: the target's)")
    p.add_argument("--reuse-exports", action="store_true", help="time existing exports instead of exporting again")
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds (default %(default)s)")
    p.add_argument("--detail", action="store_true", help="also the five ops taking the most time in each artifact")
    add_device_arguments(p)


def run(a: argparse.Namespace) -> int:
    import os

    from edgevit.console import converter_output_on_stderr
    from edgevit.profile.benchmark import below_floor, benchmark, format_table, picks
    from edgevit.profile.stage import resolve_run

    timing = timing_of(a)
    if timing.threads is None:  # one explicit thread count for every runtime, stated in the output
        timing.threads = os.cpu_count() or 1
    run_dir = resolve_run(a.run, a.runs_dir)
    with converter_output_on_stderr():
        result = benchmark(
            run_dir,
            a.targets,
            a.precisions,
            max_drop=a.max_drop,
            min_accuracy=a.min_accuracy,
            timing=timing,
            device=device_of(a),
            calibration=a.calibration,
            reuse_exports=a.reuse_exports,
            rounds=a.rounds,
            detail=a.detail,
        )
    c = result.context
    print()
    print(
        f"run {c['run']}: batch {c['batch']}, threads {c['threads']}, {c['rounds']} interleaved rounds, "
        f"pick = fastest within {c['max_drop']} pt of PyTorch FP32 top-1; machine load {c['load']}"
    )
    print(format_table(result.rows))
    print()
    for line in picks(result.rows):
        print(line)
    for key, ops in result.detail.items():
        print(
            f"{key}: "
            + ", ".join(f"{o['op']} {o['ms']:.2f} ms ({o['share']:.0%})" if "ms" in o else o["error"] for o in ops)
        )
    print(f"wrote {', '.join(str(p) for p in result.files)} and ledger rows in {run_dir.parent / 'ledger.sqlite'}")
    if a.min_accuracy is not None:
        missed = below_floor(result.rows, a.min_accuracy)
        if missed:
            names = ", ".join(f"{r.target}/{r.precision} ({r.top1:.2f}%)" for r in missed)
            print(f"edgevit: below the --min-accuracy floor of {a.min_accuracy}: {names}")
            return EXIT_BELOW_FLOOR
    return 0
