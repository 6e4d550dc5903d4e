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
    html = report("runs")  # runs/reports/accuracy_latency_report.html

Every stage writes its files under runs/<run>/ and its rows into runs/ledger.sqlite; bad input
raises `EdgevitError` with a one-line message.
"""

from edgevit.chain import run_recipe
from edgevit.config import Recipe, Target, apply_overrides, load_recipe, load_target
from edgevit.distill.pipeline import distill
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import ExportResult, InputsCache, RunInputs
from edgevit.export.pipeline import export_run as export
from edgevit.profile.benchmark import BenchmarkResult, benchmark
from edgevit.profile.runners import ProfileResult
from edgevit.profile.stage import Device, Timing, profile
from edgevit.quantize import quantize
from edgevit.report import report
from edgevit.runs import Ledger

__all__ = [
    "BenchmarkResult",
    "Device",
    "EdgevitError",
    "ExportResult",
    "InputsCache",
    "Ledger",
    "ProfileResult",
    "Recipe",
    "RunInputs",
    "Target",
    "Timing",
    "apply_overrides",
    "benchmark",
    "distill",
    "export",
    "load_recipe",
    "load_target",
    "profile",
    "prune",
    "quantize",
    "report",
    "run_recipe",
]


def __getattr__(name: str):  # `prune` needs the [prune] extra (torch-pruning): imported on first use
    if name == "prune":
        from edgevit.prune.pipeline import prune

        return prune
    raise AttributeError(f"module 'edgevit.api' has no attribute {name!r}")
