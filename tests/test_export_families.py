"""PVT-v2-b0 and the small ConvMixer export through every converter and match PyTorch at FP32.

Untrained weights are enough here: the check is the max abs logit difference (the trained
INT8/accuracy checks run on DeiT in test_export.py and on all three in
benchmarks/export_accuracy.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgevit.export.pipeline import export_run
from edgevit.models.checkpoint import save_student
from edgevit.models.students import create_student, student_kwargs

FAMILIES = ["pvt_v2_b0", "convmixer_256_8_ks5_p2"]


@pytest.fixture(scope="module", params=FAMILIES)
def family_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    name = request.param
    kwargs = student_kwargs(name, 10, 32, None, 0.0)
    torch.manual_seed(0)
    model = create_student(name, kwargs).eval()
    run = tmp_path_factory.mktemp("runs") / name.split("_")[0]
    run.mkdir()
    save_student(
        run / "student.pt",
        model,
        {
            "model_name": name,
            "create_kwargs": kwargs,
            "class_names": [str(i) for i in range(10)],
            "num_classes": 10,
            "img_size": 32,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "crop_pct": 1.0,
            "data": {"spec": "digits", "img_size": 32},
        },
    )
    return run


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "openvino-cpu", "tflite-mobile", "jetson"])
def test_fp32_matches_pytorch(family_run: Path, target: str) -> None:
    v = export_run(family_run, target, "fp32", ledger=False).verification
    assert v.runtime is not None and v.max_abs_diff < 1e-3, v.note


@pytest.mark.slow
def test_coreml_converts(family_run: Path) -> None:
    pytest.importorskip("coremltools")
    r = export_run(family_run, "coreml-ios", "int8", ledger=False)
    assert (r.artifact.directory / "model.mlpackage").is_dir()
    if sys.platform == "darwin":
        assert r.verification.runtime == "coreml", r.verification.note
    else:
        assert r.verification.runtime is None and "needs macOS" in r.verification.note
