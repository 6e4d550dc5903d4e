"""benchmarks/timer_compare.py reads what the vendors' tools print: each tool run here on a tiny model, few runs.

No timing is checked, only that the parsed numbers are the tool's own (count, ordering, the settings it ran).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _module():
    spec = importlib.util.spec_from_file_location("timer_compare", ROOT / "benchmarks" / "timer_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tc = _module()


def _has(name: str) -> bool:
    return (BIN / name).exists() or shutil.which(name) is not None


def _tiny():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval(), torch.zeros(1, 3, 8, 8)


@pytest.mark.skipif(not _has("benchmark_app"), reason="OpenVINO's benchmark_app is not installed")
def test_benchmark_app_output_parses(tmp_path: Path) -> None:
    import openvino as ov

    model, x = _tiny()
    ov.save_model(ov.convert_model(model, example_input=x, input=[[1, 3, 8, 8]]), str(tmp_path / "model.xml"))
    text = tc.run_tool(tc.benchmark_app_argv(tmp_path / "model.xml", threads=1, iterations=20, precision="f32"))
    got = tc.parse_benchmark_app(text)
    assert got["count"] == 20 and got["duration_ms"] > 0
    assert 0 < got["min_ms"] <= got["median_ms"] <= got["max_ms"]
    assert got["properties"] == {
        "INFERENCE_NUM_THREADS": "1",
        "NUM_STREAMS": "1",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": got["properties"]["ENABLE_CPU_PINNING"],
    }
    # a tiny model's latencies are printed in microseconds; a larger one's in ms (this layout, from a real run)
    us = "Median:" in text and " us" in text[text.rindex("Latency:") :]
    assert us, "benchmark_app printed a tiny model's latency in ms: check the parser's units"
    ms = text[: text.rindex("Latency:")] + "Latency:\n[ INFO ]    Median:        1.19 ms\n"
    ms += "[ INFO ]    Average:       1.20 ms\n[ INFO ]    Min:           0.99 ms\n[ INFO ]    Max:           4.90 ms\n"
    assert tc.parse_benchmark_app(ms)["median_ms"] == 1.19


@pytest.mark.skipif(not _has("litert-benchmark"), reason="LiteRT's litert-benchmark is not installed")
def test_litert_benchmark_output_parses(tmp_path: Path) -> None:
    from edgevit.export.tflite import convert

    model, x = _tiny()
    (tmp_path / "model.tflite").write_bytes(convert(model, x))
    got = tc.parse_litert_benchmark(tc.run_tool(tc.litert_argv(tmp_path / "model.tflite", 1, 20, warmup=2)))
    assert got["count"] == 20 and got["fully_accelerated"] in (True, False)
    assert 0 <= got["min_ms"] <= got["median_ms"] <= got["max_ms"] and got["mean_ms"] >= 0


def test_openvino_property_spellings_are_one() -> None:
    assert tc.normalise_ov("<Type: 'bfloat16'>") == "bf16" and tc.normalise_ov("f32") == "f32"
    assert tc.normalise_ov(True) == "True" and tc.normalise_ov(" 2") == "2"
