"""`edgevit quantize`: accuracy-aware INT8 (tune) and quantization-aware training (qat) on a tiny
trained DeiT, checked in each target's own runtime, plus the one-line answers to bad input.

The drop a tune reports is compared with a drop measured here from scratch: the validation split
rebuilt, PyTorch's top-1 recomputed, the artifact run through its runtime by its folder alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.cli import main
from edgevit.errors import EdgevitError
from edgevit.quantize import check_request, quantize
from edgevit.runtimes import open_predictor

ROOT = Path(__file__).resolve().parents[1]


def _val_split(run: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """Validation images and labels rebuilt from the run, and PyTorch's own top-1 on them."""
    import torch

    from edgevit.data import build_datasets
    from edgevit.models.checkpoint import load_student

    model, meta = load_student(run)
    ds = build_datasets(
        dict(meta["data"]), None, mean=tuple(meta["mean"]), std=tuple(meta["std"]), crop_pct=meta["crop_pct"]
    )
    x = np.stack([ds.val[i][0].numpy() for i in range(len(ds.val))]).astype(np.float32)
    y = np.array([ds.val[i][1] for i in range(len(ds.val))])
    with torch.no_grad():
        fp32 = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean() * 100)
    return x, y, fp32


@pytest.mark.slow
def test_tflite_tune_reports_the_drop_measured_independently(trained_run: Path) -> None:
    from edgevit.quantize.tflite import float_layers

    r = quantize(trained_run, "tflite-mobile", "tune", max_drop=0.5, ledger=False)
    q = r.artifact.manifest["quantization"]
    assert r.artifact.directory.name == "int8-tune" and q["method"] == "tune" and q["max_drop"] == 0.5
    assert {f.name for f in r.artifact.directory.iterdir()} == {*r.artifact.files, "manifest.json"}
    x, y, fp32 = _val_split(trained_run)
    predictor = open_predictor(r.artifact.directory)  # the folder alone, as a device would
    top1 = float((predictor(x).argmax(1) == y).mean() * 100)
    drop = round(fp32 - top1, 2)
    assert (
        drop
        == pytest.approx(q["tuned_drop"], abs=1e-6)
        == pytest.approx(r.verification.torch_top1 - r.verification.top1)
    )
    assert drop <= 0.5 and r.verification.verified
    # the one-shot full-integer model of this student loses more than 0.5 pt, so layers went back to float,
    # and the flatbuffer really computes exactly those layers in float
    assert q["history"][0]["drop"] > 0.5 and q["float_layers"]
    assert sorted(float_layers((r.artifact.directory / "model.tflite").read_bytes())) == sorted(q["float_layers"])
    saved = json.loads((r.artifact.directory / "manifest.json").read_text())
    assert saved["quantization"]["float_layers"] == q["float_layers"] and saved["input_dtype"] in ("int8", "float32")


def test_a_deep_model_falls_back_by_kind_of_layer(tmp_path: Path) -> None:
    """Past MAX_UNITS layers the LiteRT search ranks kinds (`blocks.*.mlp.fc1`); keeping a kind in
    float keeps that layer of every block in float, and nothing else."""
    import torch

    from edgevit.export.tflite import convert
    from edgevit.models.students import create_student
    from edgevit.quantize.tflite import Candidates, float_layers

    torch.manual_seed(0)
    model = create_student(
        "deit_tiny_distilled_patch16_224",
        {"num_classes": 10, "img_size": 16, "patch_size": 8, "depth": 3, "embed_dim": 32, "num_heads": 2},
    ).eval()
    x = torch.randn(4, 3, 16, 16)
    cands = Candidates(convert(model, x[:1]), x.numpy(), tmp_path)
    layers = cands.tunable(max_units=1000)
    kinds = cands.tunable(max_units=10)
    assert {"blocks.0.mlp.fc1", "blocks.2.mlp.fc1"} <= set(layers) and len(kinds) < len(layers)
    assert "blocks.*.mlp.fc1" in kinds and not any(k.startswith("blocks.1.") for k in kinds)
    flat = cands.build(frozenset({"blocks.*.mlp.fc1"}))
    assert sorted(float_layers(flat)) == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1", "blocks.2.mlp.fc1"]


@pytest.mark.slow
@pytest.mark.parametrize("target,fmt", [("onnx", "onnx"), ("tflite-mobile", "tflite")])
def test_a_few_qat_steps_then_the_int8_model_runs_in_its_runtime(trained_run: Path, target: str, fmt: str) -> None:
    r = quantize(trained_run, target, "qat", epochs=1, steps=3, ledger=False)
    q = r.artifact.manifest["quantization"]
    missed = not r.verification.within_drop  # three steps need not meet the drop; the name must say which
    assert r.verification.within_drop == r.verification.verified  # both run here: one rule
    assert r.artifact.format == fmt and r.artifact.directory.name == ("int8-qat-missed" if missed else "int8-qat")
    assert not (r.artifact.directory.parent / ("int8-qat" if missed else "int8-qat-missed")).exists()
    assert {f.name for f in r.artifact.directory.iterdir()} == {*r.artifact.files, "manifest.json"}  # nothing unlisted
    assert q["method"] == "qat" and q["steps"] == 3 and q["history"][0]["steps"] == 3
    x, y, _ = _val_split(trained_run)
    logits = open_predictor(r.artifact.directory)(x[:16])
    assert logits.shape == (16, 10) and np.isfinite(logits).all()
    assert r.verification.runtime is not None and r.verification.images == len(x)
    if fmt == "onnx":
        import onnx

        ops = {n.op_type for n in onnx.load(str(r.artifact.model_path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    else:
        assert r.artifact.manifest["input_dtype"] == "int8"  # static INT8: the model takes an int8 input


@pytest.mark.parametrize(
    "args,words",
    [
        (["--max-drop", "-1"], ["--max-drop -1", "out of range"]),
        (["--max-drop", "100"], ["--max-drop 100", "out of range"]),
        (["--max-drop", "nan"], ["out of range"]),
        (["-t", "coreml-ios", "--method", "tune"], ["coreml-ios", "weight-only", "--method tune"]),
        (["-t", "coreml-ios", "--method", "qat"], ["coreml-ios", "--method qat"]),
        (["-t", "tflite-mobile", "--tool", "inc"], ["--tool inc", "tflite-mobile", "ai-edge-quantizer"]),
        (["--method", "qat", "--tool", "nncf"], ["--tool", "--method qat"]),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, capsys, args: list[str], words: list[str]) -> None:
    assert main(["quantize", str(tmp_path), "-t", "onnx", *args]) == 2  # a later -t wins
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgevit: error:")
    assert all(w in err for w in words), err


def test_unknown_method_is_refused_before_any_work() -> None:
    with pytest.raises(EdgevitError, match="unknown quantization method 'awq'"):
        check_request("onnx", "onnx", "awq", 0.5)
    with pytest.raises(SystemExit):  # argparse names the choices
        main(["quantize", "r", "-t", "onnx", "--method", "awq"])


# ------------------------------------------------------------------ tflite-runtime as the LiteRT interpreter
TFLITE_RUNTIME_PYTHON = os.environ.get("EDGEVIT_TFLITE_RUNTIME_PYTHON")


@pytest.mark.skipif(
    not TFLITE_RUNTIME_PYTHON,
    reason="set EDGEVIT_TFLITE_RUNTIME_PYTHON to a Python with tflite-runtime "
    "and numpy<2 (python3.11 -m venv v && v/bin/pip install tflite-runtime 'numpy<2')",
)
def test_agent_runs_tflite_with_tflite_runtime_and_names_a_too_new_op(trained_run: Path, tmp_path: Path) -> None:
    from edgevit.export.pipeline import export_run

    art = export_run(trained_run, "tflite-mobile", "fp32", ledger=False).artifact
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
    agent = [TFLITE_RUNTIME_PYTHON, "-m", "edgevit.profile.agent"]
    proc = subprocess.run(
        [*agent, str(art.directory), "--iterations", "5", "--warmup", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["ok"] and out["result"]["runtime"] == "tflite-runtime"
    # litert-torch's PT2E dynamic INT8 writes FULLY_CONNECTED v12, which tflite-runtime 2.14 lacks
    newer = _pt2e_dynamic_tflite(tmp_path / "dynamic")
    proc = subprocess.run(
        [*agent, str(newer), "--iterations", "2"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    out = json.loads(proc.stdout)
    assert proc.returncode == 3 and "FULLY_CONNECTED version 12" in out["error"] and "ai-edge-litert" in out["error"]


def _pt2e_dynamic_tflite(out: Path) -> Path:
    import warnings

    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgevit.artifact import Artifact

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.randn(1, 3, 8, 8)
    q = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = prepare_pt2e(torch.export.export(model, (x,)).module(), q)
        graph(x)
        flat = litert_torch.convert(
            convert_pt2e(graph, fold_quantize=False), (x,), quant_config=QuantConfig(pt2e_quantizer=q)
        )
    out.mkdir(parents=True)
    (out / "model.tflite").write_bytes(bytes(flat.model_content()))
    Artifact("tflite", "int8", out, ["model.tflite"], [1, 3, 8, 8], {"runtime": {}}).write_manifest()
    return out


def test_litert_runtime_is_found_by_either_interpreter() -> None:
    from edgevit.runtimes import LITERT_MODULES, litert_interpreter, runtime_available

    ok, name = runtime_available("tflite")
    assert ok and name == "litert"
    interpreter, runtime = litert_interpreter()
    assert runtime in ("litert", "tflite-runtime") and interpreter.__module__.split(".")[0] in LITERT_MODULES
    assert sys.modules.get("ai_edge_litert") is not None or runtime == "tflite-runtime"


def test_a_jetson_int8_within_the_drop_is_not_called_missed(trained_run: Path, capsys) -> None:
    """A Jetson INT8 cannot be verified here (TensorRT builds the engine on the device), but its Q/DQ ONNX
    runs here: when that meets --max-drop, the folder keeps its name and the command exits 0."""
    from edgevit.cli import main

    assert (
        main(["quantize", str(trained_run), "--target", "jetson", "--method", "ptq", "--max-drop", "50", "--no-ledger"])
        == 0
    ), capsys.readouterr().err
    folder = trained_run / "exports" / "jetson-orin" / "int8"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["verification"]["verified"] is False and manifest["verification"]["within_drop"] is True
    assert not folder.with_name("int8-missed").exists()
