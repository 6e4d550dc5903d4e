"""The stages as typed Python functions: what the CLI, the notebooks and scripts call.

    from edgevit.api import load_recipe, distill, export, profile, benchmark, Timing
    recipe, _ = load_recipe("quickstart")
    summary = distill(recipe, "runs/mine")
    done = run_recipe(recipe, "runs/mine")            # distill, then prune if the recipe has a prune: section
    result = export("runs/mine", "openvino-cpu", "int8")
    print(profile("runs/mine", "openvino-cpu", "int8", timing=Timing(threads=2)).summary_line())
    table = benchmark("runs/mine", max_drop=0.5)
    pruned = prune("runs/mine", ratio=0.5)            # a new run, recovered by distillation
    tuned = quantize("runs/mine", "openvino-cpu", method="tune", max_drop=0.5)
    found = compress("runs/mine", "openvino-cpu", [0.3, 0.5], threads=2)  # most accurate within each budget
    html = report("runs")  # runs/reports/accuracy_latency_report.html

    jobs = export_targets("runs/mine", "all", "all")  # every target and precision, failures recorded
    times = time_artifacts({j.target.name: j.folder for j in jobs if not j.error}, Timing(threads=2),
                           baseline="runs/mine")  # side by side, interleaved, with PyTorch FP32
    best = most_accurate_within([vars(r) for r in table.rows], budget_ms=0.5)  # per target
    formats.register(Format(name="myformat", ...))   # a format every stage then knows

Every stage writes its files under runs/<run>/ and its rows into runs/ledger.sqlite; bad input
raises `EdgevitError` with a one-line message.
"""

from edgevit import formats
from edgevit.chain import run_recipe
from edgevit.choose import most_accurate_within, pick
from edgevit.config import Recipe, Target, apply_overrides, load_recipe, load_target
from edgevit.distill.pipeline import distill
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import ExportResult, InputsCache, RunInputs
from edgevit.export.pipeline import export_run as export
from edgevit.export.targets import TargetExport, export_targets
from edgevit.formats import Format
from edgevit.profile.benchmark import BenchmarkResult, benchmark
from edgevit.profile.runners import ProfileResult
from edgevit.profile.side_by_side import time_artifacts
from edgevit.profile.stage import Device, Timing, profile
from edgevit.quantize import quantize
from edgevit.report import report
from edgevit.runs import Ledger

__all__ = [
    "BenchmarkResult",
    "Device",
    "EdgevitError",
    "ExportResult",
    "Format",
    "InputsCache",
    "Ledger",
    "ProfileResult",
    "Recipe",
    "RunInputs",
    "Target",
    "TargetExport",
    "Timing",
    "apply_overrides",
    "benchmark",
    "compress",
    "distill",
    "export",
    "export_targets",
    "formats",
    "load_recipe",
    "load_target",
    "most_accurate_within",
    "pick",
    "profile",
    "prune",
    "quantize",
    "report",
    "run_recipe",
    "time_artifacts",
]


def __getattr__(name: str):  # `prune` and `compress` need the [prune] extra (torch-pruning): imported on first use
    if name == "prune":
        from edgevit.prune.pipeline import prune

        return prune
    if name == "compress":
        from edgevit.compress.search import compress

        return compress
    raise AttributeError(f"module 'edgevit.api' has no attribute {name!r}")
