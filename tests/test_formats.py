"""The format registry is the one list of formats: one registered at run time (a plug-in) is seen by
target validation, export and verification, side-by-side timing, benchmark and per-op detail, with
no other file changed. The toy format writes ONNX with its own exporter and runs it in ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgevit import formats
from edgevit.artifact import Artifact
from edgevit.config import load_target
from edgevit.errors import EdgevitError
from edgevit.formats.onnx import open_onnxruntime
from edgevit.profile.stage import BASELINE, Timing

TOY = "toyonnx"


def _export_toy(model, sample, target, precision, calibration, out_dir: Path, meta) -> Artifact:
    from edgevit.export.onnx import to_onnx

    to_onnx(model, sample, out_dir / "toy.onnx", target.opset, dynamic_batch=False)
    return Artifact(TOY, precision, out_dir, ["toy.onnx"], list(sample.shape), {})


@pytest.fixture
def toy_target(tmp_path: Path) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"name: toy\nformat: {TOY}\nprecision: fp32\nprecisions: [fp32]\n")
    formats.register(
        formats.Format(
            name=TOY,
            extra="onnx",
            precisions=("fp32",),
            export=_export_toy,
            tools=("onnx",),
            runtime="onnxruntime",
            open_predictor=open_onnxruntime,
            runtime_modules=("onnxruntime",),
            no_quantization="the toy format writes float only",
            no_per_op="the toy format has no profiler",
        )
    )
    yield path
    formats.unregister(TOY)


@pytest.fixture
def toy_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared run, so the toy exports and ledger rows stay out of other tests' way."""
    run = tmp_path / "runs" / "toy-run"
    run.mkdir(parents=True)
    shutil.copy(trained_run / "student.pt", run / "student.pt")
    return run


def test_an_unregistered_format_is_refused_by_target_validation(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text(f"name: toy\nformat: {TOY}\n")
    with pytest.raises(EdgevitError, match=f"unknown format '{TOY}'; known: onnx, openvino"):
        load_target(str(path))
    with pytest.raises(EdgevitError, match=f"unknown format '{TOY}'") as info:
        formats.get(TOY)
    assert info.value.params == ("format",)


def test_a_registered_format_exports_verifies_and_is_timed_beside_pytorch(toy_target: Path, toy_run: Path) -> None:
    from edgevit.export.targets import export_targets
    from edgevit.profile.detail import top_ops
    from edgevit.profile.side_by_side import time_artifacts

    [job] = export_targets(toy_run, [str(toy_target)], verify_images=64)
    assert job.error is None, job.error
    assert Artifact.load(job.folder).format == TOY and (job.folder / "toy.onnx").is_file()
    assert job.verification["verified"] and job.verification["agreement"] >= 99.0

    timed = time_artifacts({"toy": job.folder}, Timing(iterations=20, warmup=2, threads=1), rounds=2, baseline=toy_run)
    assert list(timed) == [BASELINE, "toy"]
    assert timed["toy"].runtime == "onnxruntime" and timed["toy"].format == TOY
    assert all(r.stats.median_ms > 0 and r.load_ms > 0 for r in timed.values())

    with pytest.raises(EdgevitError, match=f"not available for {TOY}: the toy format has no profiler"):
        top_ops(job.folder)


def test_benchmark_picks_among_registered_formats(toy_target: Path, toy_run: Path) -> None:
    from edgevit.profile.benchmark import benchmark

    result = benchmark(
        toy_run, [str(toy_target)], "all", timing=Timing(iterations=20, warmup=2, threads=1), rounds=2, max_drop=100
    )
    toy = next(r for r in result.rows if r.target == "toy")
    assert toy.format == TOY and toy.median_ms and toy.speedup and toy.runtime == "onnxruntime"
    assert [r.target for r in result.rows if r.pick and r.target != BASELINE] == ["toy"]


def test_quantizing_a_format_without_int8_names_why(toy_target: Path, toy_run: Path) -> None:
    from edgevit.quantize import quantize

    with pytest.raises(EdgevitError, match="offers no int8|toy format writes float only"):
        quantize(toy_run, load_target(str(toy_target)))
