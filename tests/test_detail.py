"""Per-op detail from each runtime's own profiler, on a tiny DeiT (random weights: timing, not accuracy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgevit.artifact import Artifact
from edgevit.errors import EdgevitError
from edgevit.profile.detail import top_ops


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from conftest import TINY_DEIT

    from edgevit.config import load_target
    from edgevit.export.pipeline import timed_export
    from edgevit.models.students import create_student, student_kwargs

    extra = dict(TINY_DEIT)
    kwargs = student_kwargs("deit_tiny_distilled_patch16_224", 10, 32, extra.pop("patch_size"), 0.0, extra)
    torch.manual_seed(0)
    model = create_student("deit_tiny_distilled_patch16_224", kwargs).eval()
    sample = torch.randn(1, 3, 32, 32)
    made = {}

    def get(target: str) -> Artifact:
        if target not in made:
            t = load_target(target)
            folder = tmp_path_factory.mktemp(target)
            art, _ = timed_export(t.format, model, sample, t, "fp32", None, folder, {})
            art.write_manifest()
            made[target] = Artifact.load(folder)
        return made[target]

    return get


@pytest.mark.parametrize("target,fmt", [("onnx", "onnx"), ("openvino-cpu", "openvino"), ("executorch", "executorch")])
def test_top_ops_names_the_slowest_ops(artifacts, target: str, fmt: str) -> None:
    if fmt == "executorch":
        pytest.importorskip("executorch")
    art = artifacts(target)
    ops = top_ops(art, threads=1, n=5)
    assert 1 <= len(ops) <= 5 and art.format == fmt
    assert all(set(o) == {"op", "type", "ms", "share"} for o in ops)
    assert all(o["op"] and o["type"] and o["ms"] > 0 and 0 < o["share"] <= 1 for o in ops)
    assert [o["ms"] for o in ops] == sorted((o["ms"] for o in ops), reverse=True)
    assert sum(o["share"] for o in ops) <= 1.0001
    assert len({o["op"] for o in ops}) == len(ops)  # one row per node, not per type
    # the weight layers are where a ViT's time goes: a GEMM-like op must be among the slowest
    gemm = {
        "onnx": ("MatMul", "Gemm"),
        "openvino": ("FullyConnected", "MatMul"),
        "executorch": ("Fully Connected", "Batch Matrix Multiply", "Convolution"),
    }[fmt]
    assert any(g in o["type"] for o in ops for g in gemm), ops
    if fmt == "executorch":  # single ops only: the totals (Method::execute, DELEGATE_CALL) would double-count
        assert all(o["type"].startswith(("XnnpackBackend: ", "portable: ")) for o in ops), ops
    assert len(top_ops(art, threads=1, n=2, runs=3)) <= 2


def test_runtimes_without_per_op_timing_say_so(tmp_path: Path) -> None:
    for fmt, words in [("tflite", "exposes no per-op timing"), ("coreml", "macOS"), ("tensorrt", "trtexec")]:
        art = Artifact(fmt, "fp32", tmp_path, ["model"], [1, 3, 32, 32])
        with pytest.raises(EdgevitError, match=f"not available for {fmt}: .*{words}") as err:
            top_ops(art)
        assert "\n" not in str(err.value)


def test_bad_counts(artifacts) -> None:
    with pytest.raises(EdgevitError, match="n and runs must be >= 1"):
        top_ops(artifacts("onnx"), n=0)
