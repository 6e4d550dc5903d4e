"""Export + verification with the real converters and runtimes, on a tiny trained DeiT.

Each (target, precision) is exported once per session (`exported`) and checked from several
angles. Core ML prediction needs macOS: on Linux the tests check the export and the plain
"not verifiable here" record instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgevit.artifact import Artifact
from edgevit.cli import main
from edgevit.errors import EdgevitError
from edgevit.export.pipeline import ExportResult, InputsCache, export_run
from edgevit.runs import Ledger
from edgevit.runtimes import open_predictor, runtime_available

_cache: dict[tuple, ExportResult] = {}
_inputs = InputsCache()  # the student, images and PyTorch logits loaded once for every export here


@pytest.fixture(scope="session")
def exported(trained_run: Path):
    def get(target: str, precision: str, **kw) -> ExportResult:
        key = (target, precision, tuple(sorted(kw.items())))
        if key not in _cache:
            _cache[key] = export_run(trained_run, target, precision, inputs=_inputs, **kw)
        return _cache[key]

    return get


RUNS_HERE = [("onnx", "onnx"), ("openvino-cpu", "openvino"), ("tflite-mobile", "tflite"), ("jetson", "tensorrt")]


@pytest.mark.parametrize("target,fmt", RUNS_HERE)
def test_fp32_agrees_with_pytorch(exported, target: str, fmt: str) -> None:
    r = exported(target, "fp32")
    v = r.verification
    assert r.artifact.format == fmt and v.verified, v.note
    assert v.agreement >= 99.0 and v.max_abs_diff < 1e-3
    assert v.top1 == pytest.approx(v.torch_top1, abs=0.5) and v.torch_top1 > 60  # the fixture is really trained
    m = json.loads((r.artifact.directory / "manifest.json").read_text())
    assert m["format"] == fmt and m["precision"] == "fp32" and m["input_shape"] == [1, 3, 32, 32]
    assert m["class_names"] == [str(i) for i in range(10)] and len(m["mean"]) == len(m["std"]) == 3
    assert len(m["source_checkpoint"]["sha256"]) == 64 and "torch" in m["tools"]
    assert m["verification"]["agreement"] == v.agreement
    assert r.artifact.directory.name == "fp32" and r.artifact.size_bytes() > 10_000


@pytest.mark.parametrize("target", ["onnx", "openvino-cpu", "tflite-mobile", "jetson"])
def test_int8_within_one_point_of_fp32(exported, target: str) -> None:
    fp32, int8 = exported(target, "fp32"), exported(target, "int8")
    if target == "jetson":  # the Q/DQ ONNX runs here, the engine built from it does not: not verified
        assert not int8.verification.verified and int8.verification.note.startswith("not verified here")
    else:
        assert int8.verification.verified, int8.verification.note
    assert int8.verification.top1 >= fp32.verification.top1 - 1.0
    assert int8.artifact.manifest["quantization"]["scheme"] in ("static", "dynamic")


def test_onnx_is_opset17_with_one_layernorm_op_and_int8_is_qdq(exported) -> None:
    fp32 = onnx.load(str(exported("onnx", "fp32").artifact.model_path))
    assert fp32.opset_import[0].version >= 17
    ops = [n.op_type for n in fp32.graph.node]
    assert ops.count("LayerNormalization") == 5  # 2 blocks x 2 + final norm
    assert fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # static batch by default
    int8 = onnx.load(str(exported("onnx", "int8").artifact.model_path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}
    # weight layers read dequantized inputs; attention's activation x activation MatMuls stay float
    made_by = {o: n.op_type for n in int8.graph.node for o in n.output}

    def quantized_inputs(n):
        return sum(made_by.get(i) == "DequantizeLinear" for i in n.input)

    attention = [n for n in int8.graph.node if n.op_type == "MatMul" and "attn" in n.name]
    assert len(attention) == 4 and all(quantized_inputs(n) == 0 for n in attention)  # 2 blocks x (q.k, attn.v)
    weights = [n for n in int8.graph.node if n.op_type in ("Gemm", "Conv", "MatMul") and n not in attention]
    assert weights and all(quantized_inputs(n) >= 2 for n in weights)  # input and weight (and bias)


def test_onnx_dynamic_batch(exported) -> None:
    r = exported("onnx", "fp32", dynamic_batch=True, ledger=False)
    p = open_predictor(r.artifact, threads=1)
    assert p.batch is None
    assert p(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 10)


def test_jetson_artifact_is_shaped_for_tensorrt(exported) -> None:
    fp16 = exported("jetson", "fp16")
    assert fp16.artifact.manifest["target"] == "jetson-orin"  # the alias resolves to the Jetson target
    cmd = fp16.artifact.manifest["trtexec"]
    assert "--fp16" in cmd and "--precisionConstraints=obey" in cmd
    assert cmd.count("LayerNormalization:fp32") == 5  # every LayerNorm stays FP32 under FP16
    script = (fp16.artifact.directory / "build_engine.sh").read_text()
    assert cmd in script and (fp16.artifact.directory / "build_engine.sh").stat().st_mode & 0o111
    assert fp16.artifact.manifest["polygraphy_lint"] == "passed"
    assert not fp16.verification.verified and "engine is built on the device" in fp16.verification.note
    assert fp16.artifact.manifest["trtexec_build"]["precision"] == "fp16"
    graph = onnx.load(str(fp16.artifact.model_path)).graph
    assert all(d.dim_value > 0 for d in graph.input[0].type.tensor_type.shape.dim)  # static shapes
    int8 = exported("jetson", "int8").artifact
    ops = {n.op_type for n in onnx.load(str(int8.model_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "--int8" in int8.manifest["trtexec"]
    assert int8.manifest["quantization"]["tool"] == "nvidia-modelopt"


@pytest.mark.parametrize("precision,hint", [("fp32", "f32"), ("fp16", "f16"), ("bf16", "bf16")])
def test_openvino_records_and_uses_its_inference_precision(exported, precision: str, hint: str) -> None:
    r = exported("openvino-cpu", precision)
    assert r.artifact.manifest["runtime"]["INFERENCE_PRECISION_HINT"] == hint
    assert r.verification.verified and r.verification.agreement >= 99.0, r.verification.note
    assert {"model.xml", "model.bin"} <= {p.name for p in r.artifact.directory.iterdir()}
    p = open_predictor(r.artifact, threads=1, PERFORMANCE_HINT="THROUGHPUT")
    assert p.settings["PERFORMANCE_HINT"] == "THROUGHPUT" and p.settings["threads"] == 1
    if precision == "fp32":  # bf16 is the CPU plugin's default on AMX: FP32 must really be asked for
        assert "f32" in p.settings["INFERENCE_PRECISION_HINT"]


def test_openvino_int8_tuned_options_verify_and_run_in_bf16(exported) -> None:
    import nncf
    import openvino as ov

    from edgevit.export.openvino import _nncf_options

    r = exported("openvino-cpu", "int8")  # the target's options: performance preset, SDPA + heads ignored
    assert r.verification.verified, r.verification.note  # the INT8 rule: top-1 within MAX_INT8_DROP of PyTorch
    q = r.artifact.manifest["quantization"]
    assert q["options"]["preset"] == "performance" and "ScaledDotProductAttention" in q["options"]["ignored_types"]
    ops = ov.Core().read_model(str(r.artifact.model_path)).get_ops()
    feeds = {
        op.get_friendly_name(): {op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())}
        for op in ops
        if op.get_type_name() in ("MatMul", "ScaledDotProductAttention")
    }
    heads = [name for name in feeds if ".head" in name]
    assert len(heads) == 2 and all("FakeQuantize" not in feeds[h] and "Constant" in feeds[h] for h in heads)  # float
    assert not any("FakeQuantize" in f for name, f in feeds.items() if "scaled_dot_product" in name)
    assert sum("FakeQuantize" in f for f in feeds.values()) == 8  # the blocks' qkv, proj, fc1, fc2 are INT8
    with pytest.raises(
        EdgevitError, match=r"unknown openvino quantization option\(s\) presets \(allowed: preset,"
    ) as err:
        _nncf_options(nncf, {"presets": "performance"})
    assert "\n" not in str(err.value)
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no BF16: the int8 hint stays f32")
    assert r.artifact.manifest["runtime"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert "bf16" in open_predictor(r.artifact, threads=1).settings["INFERENCE_PRECISION_HINT"]


def test_tflite_fp16_is_smaller_and_agrees(exported) -> None:
    fp32, fp16 = exported("tflite-mobile", "fp32"), exported("tflite-mobile", "fp16")
    assert fp16.verification.verified and fp16.verification.agreement >= 99.0
    assert fp16.artifact.size_bytes() < 0.7 * fp32.artifact.size_bytes()


@pytest.mark.slow
def test_tflite_full_integer_takes_int8_input(exported) -> None:
    r = exported("tflite-mobile", "int8", scheme="static", calibration=64)
    m = r.artifact.manifest
    assert r.artifact.directory.name == "int8-static"  # sits next to the target's default (dynamic) int8
    assert m["input_dtype"] == "int8" and m["input_quantization"]["scale"] > 0
    assert m["quantization"]["scheme"] == "static"
    assert r.verification.runtime == "litert" and r.verification.agreement >= 80.0


def test_coreml_exports_mlpackage_and_says_if_it_cannot_verify(exported) -> None:
    pytest.importorskip("coremltools")
    for precision in ("fp16", "int8"):
        r = exported("coreml-ios", precision)
        assert (r.artifact.directory / "model.mlpackage" / "Manifest.json").exists()
        if sys.platform == "darwin":
            assert r.verification.verified and r.verification.agreement >= 99.0, r.verification.note
        else:
            assert not r.verification.verified and "needs macOS" in r.verification.note
    assert exported("coreml-ios", "int8").artifact.size_bytes() < exported("coreml-ios", "fp16").artifact.size_bytes()


def test_ledger_has_one_row_per_export(exported, trained_run: Path) -> None:
    exported("onnx", "fp32")
    rows = [r for r in Ledger(trained_run.parent).exports(trained_run.name) if r["target"] == "onnx"]
    assert rows and all(r["verified"] and r["size_bytes"] > 0 for r in rows)
    fp32 = [r for r in rows if r["precision"] == "fp32"]  # other tests may have exported INT8 before
    assert fp32 and fp32[-1]["agreement"] >= 99.0 and fp32[-1]["scheme"] is None
    # A non-default scheme sits in its own folder (int8-dynamic); the row has the clean precision + scheme.
    dyn = exported("onnx", "int8", scheme="dynamic")
    assert dyn.artifact.directory.name == "int8-dynamic"
    row = [r for r in Ledger(trained_run.parent).exports(trained_run.name) if r["path"] == str(dyn.artifact.directory)]
    assert [(r["precision"], r["scheme"], r["method"]) for r in row[-1:]] == [("int8", "dynamic", "ptq")]


def test_reexport_replaces_atomically(trained_run: Path) -> None:
    first = export_run(trained_run, "onnx", "fp32", ledger=False)
    second = export_run(trained_run, "onnx", "fp32", ledger=False)
    assert second.artifact.directory == first.artifact.directory and second.artifact.model_path.exists()
    assert sorted(p.name for p in (trained_run / "exports" / "onnx").iterdir() if p.name.startswith(".")) == []


def test_predictor_handles_any_batch_and_threads(exported) -> None:
    for target in ("onnx", "openvino-cpu", "tflite-mobile"):
        art = Artifact.load(exported(target, "fp32").artifact.directory)
        p = open_predictor(art, threads=1)
        out = p(np.zeros((3, 3, 32, 32), np.float32))
        assert out.shape == (3, 10) and out.dtype == np.float32 and p.settings["threads"] == 1
    with pytest.raises(EdgevitError, match="unknown onnxruntime option"):
        open_predictor(exported("onnx", "fp32").artifact, bogus=1)
    assert runtime_available("coreml")[0] == (sys.platform == "darwin")


def test_openvino_predictor_rejects_a_wrong_shape_and_keeps_answering(exported) -> None:
    p = open_predictor(exported("openvino-cpu", "fp32").artifact, threads=1)  # static shape: input bound once
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    before = p(x)
    with pytest.raises(EdgevitError, match=r"takes inputs of shape \[1, 3, 32, 32\]; got \[1, 3, 16, 16\]"):
        p(np.zeros((1, 3, 16, 16), np.float32))
    after = p(x)
    assert np.array_equal(before, after) and not np.array_equal(after[0], after[1])
    assert after is not p(x)  # each call returns its own copy, not the request's output buffer


# --------------------------------------------------------------------------------------- bad input
def test_unknown_target_lists_known_ones(trained_run: Path, capsys) -> None:
    assert main(["export", str(trained_run), "--target", "jetsn"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did you mean jetson" in err and "openvino-cpu" in err


def test_run_without_student(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--target", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("edgevit: error:") and "no student" in err[-1]


def test_precision_the_target_lacks(trained_run: Path) -> None:
    with pytest.raises(EdgevitError, match="offers precisions fp32, int8"):
        export_run(trained_run, "onnx", "bf16", ledger=False)


def test_converter_rejecting_an_op_is_one_line_naming_format_and_op(tmp_path: Path) -> None:
    import torch

    from edgevit.config import load_target
    from edgevit.export.pipeline import timed_export

    class Svd(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.svdvals(x.flatten(2)).flatten(1)

    with pytest.raises(EdgevitError) as err:
        timed_export("onnx", Svd(), torch.randn(1, 3, 8, 8), load_target("onnx"), "fp32", None, tmp_path, {})
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("onnx export (fp32) failed at op aten::linalg_svdvals")


def test_failed_export_leaves_nothing_behind(trained_run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad-size.yaml"  # a 48-px input the 32-px DeiT cannot take: the exporter's trace fails
    bad.write_text("name: bad-size\nformat: openvino\nprecisions: [fp32]\ninput_size: 48\n")
    with pytest.raises(EdgevitError, match="cannot take 48x48 inputs"):
        export_run(trained_run, str(bad), ledger=False)
    folder = trained_run / "exports" / "bad-size"
    assert not folder.exists() or list(folder.iterdir()) == []


@pytest.mark.slow
def test_cli_target_all_prints_a_table(trained_run: Path, capsys) -> None:
    assert main(["export", str(trained_run), "--target", "all", "--no-ledger"]) == 0
    out = capsys.readouterr().out
    for name in ("onnx", "openvino-cpu", "tflite-mobile", "jetson-orin", "coreml-ios"):
        assert name in out
    assert "agree %" in out and "artifacts in" in out


def test_onnx_int8_still_works_after_tensorrt_int8(exported, trained_run: Path) -> None:
    """ModelOpt patches onnxruntime's calibrator process-wide; the TensorRT export isolates it."""
    exported("jetson", "int8")
    r = export_run(trained_run, "onnx", "int8", ledger=False)
    assert r.verification.verified, r.verification.note


def test_tflite_convert_keeps_each_channels_last_weight_its_own() -> None:
    """litert-torch 0.10 gave several same-shape channels_last conv weights one layer's values
    (it caches constants by the address of a freed copy); edgevit's convert must not."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from edgevit.export.tflite import convert

    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(6)]
    model = torch.nn.Sequential(*[m for c in convs for m in (c, torch.nn.ReLU())]).eval()
    model = model.to(memory_format=torch.channels_last)
    assert not convs[0].weight.is_contiguous()
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    interpreter = Interpreter(model_content=convert(model, x))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.abs(got - expected).max() < 1e-4
    assert not convs[0].weight.is_contiguous(), "the caller's model is left as it was"


def test_export_to_several_targets_loads_the_run_once(trained_run: Path, tmp_path: Path, monkeypatch) -> None:
    """`export --target a,b --precision all` reads the student, the images and PyTorch's logits once."""
    import shutil

    from edgevit.export import pipeline

    run = tmp_path / "once"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("exports"))
    loads: list[tuple] = []
    real = pipeline.RunInputs.load.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(pipeline.RunInputs, "load", classmethod(counting))
    assert main(["export", str(run), "--target", "onnx,openvino-cpu", "--precision", "fp32", "--no-ledger"]) == 0
    assert len(loads) == 1
    assert {p.parent.parent.name for p in run.glob("exports/*/fp32/manifest.json")} == {"onnx", "openvino-cpu"}
