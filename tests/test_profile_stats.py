"""Latency statistics and the trtexec parser (on real trtexec output from NVIDIA's repository)."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import numpy as np
import pytest

from edgevit.errors import EdgevitError
from edgevit.profile.stats import PeakMemory, percentile, summarize, time_calls
from edgevit.profile.trtexec import parse_trtexec, trtexec_command, trtexec_stats

DATA = Path(__file__).parent / "data"


def test_summary_matches_numpy() -> None:
    times = list(np.random.default_rng(0).gamma(4.0, 2.0, size=257))
    s = summarize(times, batch=4, warmup=5)
    for q, got in ((50, s.median_ms), (90, s.p90_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(times, q))
    assert s.mean_ms == pytest.approx(np.mean(times)) and s.std_ms == pytest.approx(np.std(times))
    assert s.throughput == pytest.approx(4 * 1000 / np.mean(times))
    assert (s.iterations, s.warmup, s.batch) == (257, 5, 4)
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        summarize([])


def test_timing_loop_excludes_warmup() -> None:
    calls = []
    times = time_calls(lambda: calls.append(1), iterations=7, warmup=3)
    assert len(calls) == 10 and len(times) == 7 and all(t >= 0 for t in times)


def test_peak_memory_sees_an_allocation() -> None:
    # fresh pages from the kernel (an anonymous mmap), touched: a numpy array can be served from memory
    # the allocator already holds (resident since an earlier test freed it) and then adds no RSS
    with PeakMemory() as mem:
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"x" * len(block))
        block.close()
    assert sys.platform != "linux" or mem.peak_mb > 40


def test_trtexec_tensorrt10_summary() -> None:
    r = parse_trtexec((DATA / "trtexec_trt10_summary.txt").read_text())
    g = r["gpu_compute"]
    assert g["median"] == 7.14139 and g["p90"] == 10.2881 and g["p95"] == 10.8175 and g["p99"] == 12.9485
    assert g["min"] == 5.34595 and g["mean"] == 7.58404
    assert r["throughput_qps"] == 130.298 and r["latency"]["median"] == 7.16092
    assert r["h2d"]["p99"] == 0.0515137 and r["total_gpu_compute_s"] == 2.96536
    s = trtexec_stats(r)
    assert (s.median_ms, s.p90_ms, s.p99_ms) == (7.14139, 10.2881, 12.9485) and s.throughput == 130.298
    assert s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms


def test_trtexec_tensorrt84_summary_without_p90() -> None:
    r = parse_trtexec((DATA / "trtexec_trt84_summary.txt").read_text())
    g = r["gpu_compute"]
    assert g["median"] == 7.29883 and g["p99"] == 7.81812 and "p90" not in g
    assert r["throughput_qps"] == 546.168 and r["total_host_walltime_s"] == 29.9981
    s = trtexec_stats(r, batch=2)
    assert s.p90_ms is None and s.throughput == pytest.approx(2 * 546.168)


def test_trtexec_failure_is_one_line() -> None:
    text = (
        "[11/21/2026-10:00:00] [E] Error[4]: [network.cpp::validate::2789] Error Code 4: Internal Error\n"
        "&&&& FAILED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=model.onnx\n"
    )
    with pytest.raises(EdgevitError, match="no performance summary: &&&& FAILED"):
        parse_trtexec(text)


def test_trtexec_command_per_precision() -> None:
    argv = trtexec_command(precision="int8", fp32_layers=["ln1", "ln2"], iterations=50)
    assert argv[0] == "trtexec" and "--onnx=model.onnx" in argv and "--saveEngine=model.engine" in argv
    assert "--int8" in argv and "--fp16" in argv and "--iterations=50" in argv
    assert "--precisionConstraints=obey" in argv and "--layerPrecisions=ln1:fp32,ln2:fp32" in argv
    fp32 = trtexec_command("/usr/src/tensorrt/bin/trtexec", precision="fp32", fp32_layers=["ln1"])
    assert fp32[0].endswith("trtexec") and "--fp16" not in fp32 and not any("layerPrecisions" in a for a in fp32)
    with pytest.raises(EdgevitError):
        trtexec_command(precision="int4")
