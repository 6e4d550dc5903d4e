"""`edgevit compress RUN --target T --latency-budget MS [MS ...]`: parses, calls the stage, prints the
explored front and each budget's pick. Flags not given fall back to the run recipe's `compress:`
section, then to the defaults. Exit 1 when a budget has no pick after re-measuring."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edgevit.config import CompressConfig, check_fields
from edgevit.errors import EdgevitError

FLAGS = {  # CompressConfig field -> (flag, argparse keywords)
    "target": ("--target", {"help": "hardware target: name, alias or YAML path (`edgevit targets`)"}),
    "latency_budget_ms": (
        "--latency-budget",
        {
            "nargs": "+",
            "metavar": "MS",
            "help": "budget(s) in ms per image (median on the target); one search serves all",
        },
    ),
    "precisions": ("--precisions", {"help": "comma-separated precisions to search (default: all the target has)"}),
    "depths": ("--depths", {"nargs": "+", "type": float, "help": "depth shares to try (default 1 0.67 0.5 0.34)"}),
    "keeps": ("--keeps", {"nargs": "+", "type": float, "help": "width keeps (MAC shares; default 1 0.7 0.5 0.35)"}),
    "round_to": ("--round-to", {"type": int, "help": "round pruned widths to multiples of this"}),
    "estimate_epochs": ("--estimate-epochs", {"type": int, "help": "short recovery that ranks candidates (1)"}),
    "recover_epochs": ("--recover-epochs", {"type": int, "help": "full recovery of the finalists (10)"}),
    "finalists": ("--finalists", {"type": int, "help": "architectures fully recovered per budget (2)"}),
    "recover_teacher": ("--recover-teacher", {"choices": ["teacher", "student", "none"], "help": "who teaches"}),
    "max_drop": ("--max-drop", {"type": float, "help": "top-1 points a pick may lose against the parent"}),
    "int8": (
        "--int8",
        {"choices": ["tune", "ptq"], "help": "INT8 finalists: accuracy-aware tuner or plain PTQ (tune)"},
    ),
    "int8_max_drop": ("--int8-max-drop", {"type": float, "help": "tune: top-1 points INT8 may lose vs FP32 (0.5)"}),
    "rounds": ("--rounds", {"type": int, "help": "interleaved timing rounds (5)"}),
    "iterations": ("--iterations", {"type": int, "help": "timed calls per candidate over the rounds (300)"}),
    "device": ("--device", {"help": "local, or ssh://user@host[:port] (default: the target's device section)"}),
    "threads": ("--threads", {"type": int, "help": "runtime threads (default: all CPUs here)"}),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edgevit.profile.command import add_ssh_arguments

    p.add_argument("run", help="a finished distill (or prune) run: its name in the runs folder, or its folder")
    for field, (flag, kw) in FLAGS.items():
        p.add_argument(flag, dest=field, **kw)
    add_ssh_arguments(p)
    p.add_argument("--out", metavar="DIR", help="the search's run folder (default: <runs>/<run>-search, numbered)")
    p.add_argument("--resume", action="store_true", help="continue the search in --out; nothing timed is re-timed")


def options(a: argparse.Namespace, section: CompressConfig | None) -> dict[str, Any]:
    """The flags given, over the run recipe's `compress:` section, over the defaults."""
    base = (section or CompressConfig()).model_dump()
    given = {f: getattr(a, f) for f in FLAGS}
    if isinstance(given["precisions"], str):
        given["precisions"] = [p.strip() for p in given["precisions"].split(",") if p.strip()]
    return {**base, **{k: v for k, v in given.items() if v is not None}}


def format_front(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'candidate':<12} {'architecture':<40} {'MACs M':>7} {'params M':>8} {'prec':<5} {'median':>8} "
        f"{'p90':>8} {'top-1 est':>9} {'recovered':>9} {'re-timed':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["median_ms"] is None, r["median_ms"] or 0)):
        f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(
            f"{r['candidate']:<12} {r['description'][:40]:<40} {r['macs'] / 1e6:7.1f} {r['params'] / 1e6:8.3f} "
            f"{r['precision']:<5} {f(r['median_ms'], '8.3f')} {f(r['p90_ms'], '8.3f')} {f(r['top1_estimate'], '9.2f')} "
            f"{f(r['recovered_top1'], '9.2f')} {f(r['remeasured_ms'], '8.3f')}"
            + (f"  {r['note'][:60]}" if r["note"] else "")
        )
    return "\n".join(lines)


def run(a: argparse.Namespace) -> int:
    from edgevit.config import load_recipe
    from edgevit.console import converter_output_on_stderr, progress_bars
    from edgevit.files import read_json
    from edgevit.profile.command import device_of

    check_fields(CompressConfig, options(a, None), "compress")  # what was typed, checked before the run is read
    try:
        from edgevit.compress.search import compress
        from edgevit.prune.pipeline import find_run
    except ModuleNotFoundError as exc:
        raise EdgevitError(f"compress needs the package '{exc.name}': pip install 'edgevit[prune]'") from None
    parent = find_run(a.run, a.runs_dir)
    recipe = parent / "recipe.yaml"
    section = load_recipe(str(recipe))[0].compress if recipe.is_file() else None
    opts = options(a, section)
    a.device = opts.pop("device")
    device = device_of(a)
    t0 = time.perf_counter()
    print(f"edgevit compress: {parent} on {opts['target']}, budget(s) {opts['latency_budget_ms']} ms")
    with progress_bars() as bars, converter_output_on_stderr():
        s = compress(
            parent, **opts | {"device": device}, out=a.out, resume=a.resume, runs_dir=a.runs_dir, progress=bars
        )
    print(format_front(read_json(Path(s["path"]) / "search.json", "search results", "run the search again")["rows"]))
    print(
        f"margin under each budget {s['margin']:.0%} (the rounds' spread); {s['timed']} candidate(s) timed, "
        f"{s['reused']} from the latency cache; {time.perf_counter() - t0:.0f} s"
    )
    for b in s["budgets"]:
        print(f"{b['budget_ms']:g} ms: {b['why']}")
    print(f"run folder: {s['path']} (search.json, search.csv, candidates/)")
    return 0 if all(b["pick"] for b in s["budgets"]) else 1
