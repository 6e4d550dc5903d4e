"""TensorRT's `trtexec` on a Jetson: the command we run there and the parser for what it prints.

trtexec builds an engine from the ONNX file on the device (engines are specific to the GPU and
the TensorRT version, so they cannot be built here) and then times it. Its "Performance summary"
gives per-query statistics for several phases; the one we quote is **GPU Compute Time** (the
kernels only), with the host latency and throughput kept alongside. TensorRT 8.4 printed only
`percentile(99%)`; TensorRT 8.6+ prints 90/95/99 -- both layouts parse.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgevit.errors import EdgevitError

if TYPE_CHECKING:
    from edgevit.profile.stats import LatencyStats

# "GPU Compute Time: min = 5.3 ms, max = ..., percentile(90%) = 10.2 ms, ..."
_SECTION = re.compile(r"\[I\]\s+(?P<name>[A-Za-z0-9 -]+?):\s+(?P<body>min = .*)$", re.M)
_FIELD = re.compile(r"(min|max|mean|median|percentile\((?P<p>[\d.]+)%\))\s*=\s*(?P<v>[-+\d.eE]+)\s*ms")
_THROUGHPUT = re.compile(r"Throughput:\s*(?P<v>[-+\d.eE]+)\s*qps")
_TOTAL = re.compile(r"Total (?P<what>Host Walltime|GPU Compute Time):\s*(?P<v>[-+\d.eE]+)\s*s\b")
_VERSION = re.compile(r"TensorRT(?:\.trtexec)? \[TensorRT v(?P<v>\d+)\]|TensorRT version: (?P<dotted>[\d.]+)")
_TRACE = re.compile(r"Timing trace has (?P<n>\d+) queries over")
_WARMUP = re.compile(r"Warmup completed (?P<n>\d+) queries")
_KEYS = {
    "Latency": "latency",
    "GPU Compute Time": "gpu_compute",
    "H2D Latency": "h2d",
    "D2H Latency": "d2h",
    "Enqueue Time": "enqueue",
    "End-to-End Host Latency": "end_to_end",
}


def _stats(body: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in _FIELD.finditer(body):
        key = m.group(1)
        if m.group("p"):
            p = float(m.group("p"))
            key = f"p{int(p) if p.is_integer() else p}"
        out[key] = float(m.group("v"))
    return out


def parse_trtexec(text: str) -> dict[str, Any]:
    """The performance summary of a trtexec run as numbers (ms, qps, s).

    Returns {"throughput_qps", "gpu_compute": {min,max,mean,median,p90?,p95?,p99}, "latency": {...},
    "h2d", "d2h", "enqueue", "total_host_walltime_s", "total_gpu_compute_s", "queries", "warmup_queries",
    "tensorrt_version"};
    sections trtexec did not print are absent. Raises EdgevitError when there is no summary (the
    build or the run failed), quoting trtexec's last error line.
    """
    start = text.rfind("=== Performance summary ===")
    if start < 0:
        errors = [ln.strip() for ln in text.splitlines() if "[E]" in ln or "FAILED" in ln or "rror" in ln]
        why = errors[-1] if errors else (text.strip().splitlines() or ["no output"])[-1]
        raise EdgevitError(f"trtexec printed no performance summary: {why[:300]}")
    summary = text[start:]
    out: dict[str, Any] = {}
    if m := _THROUGHPUT.search(summary):
        out["throughput_qps"] = float(m.group("v"))
    for m in _SECTION.finditer(summary):
        key = _KEYS.get(m.group("name").strip())
        if key:
            out[key] = _stats(m.group("body"))
    for m in _TOTAL.finditer(summary):
        out["total_host_walltime_s" if m.group("what") == "Host Walltime" else "total_gpu_compute_s"] = float(
            m.group("v")
        )
    if m := _TRACE.search(text):
        out["queries"] = int(m.group("n"))
    if m := _WARMUP.search(text):
        out["warmup_queries"] = int(m.group("n"))
    if m := _VERSION.search(text):
        out["tensorrt_version"] = m.group("v") or m.group("dotted")
    if "gpu_compute" not in out or "median" not in out["gpu_compute"]:
        raise EdgevitError("trtexec's performance summary has no 'GPU Compute Time' median; is this trtexec output?")
    return out


def trtexec_command(
    tool: str = "trtexec",
    *,
    precision: str,
    fp32_layers: Sequence[str] = (),
    workspace_mb: int = 1024,
    use_dla: bool = False,
    iterations: int = 200,
    warmup_ms: int = 500,
    onnx: str = "model.onnx",
    engine: str = "model.engine",
) -> list[str]:
    """THE trtexec call for an artifact, run from its folder: build the engine at `precision`, save it,
    time it. The export's build_engine.sh and the profilers (SSH and local) all use this function with
    the build settings the export recorded (manifest["trtexec_build"]), so the engine timed on the
    device is the engine shipped.

    fp16/int8 pin `fp32_layers` (every LayerNormalization) to FP32 (`--precisionConstraints=obey`):
    FP16 LayerNorm overflows in ViTs. int8 also allows fp16, so layers an explicit Q/DQ ONNX leaves
    unquantized run in fp16. `--percentile=90,95,99` is not passed: older trtexec accepts a single
    value only, and newer ones print these three by default.
    """
    flags = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"], "int8": ["--int8", "--fp16"]}
    if precision not in flags:
        raise EdgevitError(f"trtexec cannot build precision '{precision}' (choose {', '.join(flags)})")
    argv = [
        tool,
        f"--onnx={onnx}",
        f"--saveEngine={engine}",
        f"--memPoolSize=workspace:{workspace_mb}M",
        *flags[precision],
    ]
    if precision != "fp32" and fp32_layers:
        argv += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    if use_dla:
        argv += ["--useDLACore=0", "--allowGPUFallback"]
    return argv + [f"--iterations={iterations}", f"--warmUp={warmup_ms}", "--duration=0", "--avgRuns=10"]


def artifact_command(manifest: dict[str, Any], tool: str, iterations: int = 200) -> list[str]:
    """The trtexec call for an exported TensorRT artifact (its recorded build settings, this tool)."""
    build = manifest.get("trtexec_build")
    if not build:
        raise EdgevitError(
            "this TensorRT artifact has no recorded build settings (trtexec_build in manifest.json): "
            "export it again with this edgevit"
        )
    return trtexec_command(tool, **build, iterations=iterations)


def trtexec_stats(parsed: dict[str, Any], batch: int = 1) -> "LatencyStats":
    """GPU compute time as LatencyStats (what we quote for a Jetson); p90 is None before TRT 8.6."""
    from edgevit.profile.stats import LatencyStats

    g = parsed["gpu_compute"]
    qps = parsed.get("throughput_qps")
    return LatencyStats(
        median_ms=g["median"],
        p90_ms=g.get("p90"),
        p99_ms=g.get("p99"),
        mean_ms=g["mean"],
        min_ms=g.get("min"),
        max_ms=g.get("max"),
        std_ms=None,
        throughput=qps * batch if qps is not None else batch * 1000.0 / g["mean"],
        iterations=parsed.get("queries"),
        warmup=parsed.get("warmup_queries"),
        batch=batch,
    )
