"""Local runners: time a model in its own runtime here, the same way for every runtime.

Every runner gets the same input (seeded standard-normal float32 NCHW, the range of a
normalised image), the same thread count and the same timing loop (`stats.time_calls`), so a
difference between two rows is the runtime's and not the harness's. PyTorch eager FP32 is the
baseline every speed-up is quoted against; ONNX Runtime, OpenVINO, LiteRT and ExecuTorch predictors
come from `edgevit.runtimes.open_predictor` (one place that knows how to open each runtime). Load
time (`load_ms`) is opening the predictor plus its first inference, the runtime already imported.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgevit.errors import EdgevitError
from edgevit.profile.stats import LatencyStats, PeakMemory, machine_load, summarize, time_calls

DEFAULT_ITERATIONS = 100
DEFAULT_WARMUP = 10
INPUT_SEED = 0


@dataclass
class ProfileResult:
    """One latency measurement: what ran, where, how, and the statistics."""

    runtime: str
    format: str
    precision: str
    device: str
    threads: int | None
    batch: int
    input_shape: list[int]
    stats: LatencyStats
    peak_mem_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    load_ms: float | None = None  # open the predictor + its first inference (None where not measured)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProfileResult":
        d = dict(d)
        d["stats"] = LatencyStats(**d["stats"])
        return cls(**d)

    def summary_line(self) -> str:
        s = self.stats
        p90 = f"{s.p90_ms:.2f}" if s.p90_ms is not None else "n/a"
        p99 = f"{s.p99_ms:.2f}" if s.p99_ms is not None else "n/a"
        mem = f", peak +{self.peak_mem_mb:.0f} MB" if self.peak_mem_mb is not None else ""
        mem += f", load {self.load_ms:.0f} ms" if self.load_ms is not None else ""
        return (
            f"{self.runtime} {self.format}/{self.precision} on {self.device}: median {s.median_ms:.2f} ms, "
            f"p90 {p90}, p99 {p99}, mean {s.mean_ms:.2f}, {s.throughput:.1f} img/s "
            f"(batch {self.batch}, {self.threads or 'default'} threads, {s.iterations} timed after "
            f"{s.warmup} warm-up{mem})"
        )


def make_input(shape: list[int] | tuple[int, ...], batch: int | None = None) -> np.ndarray:
    """The one input every runner gets: seeded N(0, 1) float32 NCHW (a normalised image's range)."""
    shape = list(shape)
    if batch is not None:
        shape[0] = batch
    return np.random.default_rng(INPUT_SEED).standard_normal(shape, dtype=np.float32)


def input_description(shape: list[int]) -> str:
    return f"float32 NCHW {'x'.join(map(str, shape))}, seeded N(0,1) (seed {INPUT_SEED}), same array every call"


def device_description() -> str:
    """This machine in a few words: CPU model and core count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return f"local ({cpu}, {os.cpu_count()} CPUs)"


def measure(fn: Callable[[np.ndarray], Any], x: np.ndarray, iterations: int, warmup: int) -> LatencyStats:
    """Time `fn(x)` with the shared loop."""
    if iterations < 1 or warmup < 0:
        raise EdgevitError(f"iterations must be >= 1 and warm-up >= 0 (got {iterations}, {warmup})")
    return summarize(time_calls(lambda: fn(x), iterations, warmup), batch=int(x.shape[0]), warmup=warmup)


# ------------------------------------------------------------------------------ PyTorch eager
def torch_predictor(model: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch eager FP32 in inference mode: the baseline. Sets torch's (process-wide) thread count."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    model = model.float().eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return predict


def profile_torch(
    model: Any,
    input_shape: list[int],
    *,
    threads: int | None = None,
    batch: int = 1,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
) -> ProfileResult:
    """The FP32 eager baseline for a torch module (e.g. a run's student)."""
    import torch

    x = make_input(input_shape, batch)
    with PeakMemory() as mem:
        predict = torch_predictor(model, threads)
        stats = measure(predict, x, iterations, warmup)
    return ProfileResult(
        runtime=f"pytorch {torch.__version__} eager",
        format="pytorch",
        precision="fp32",
        device=device_description(),
        threads=threads or torch.get_num_threads(),
        batch=batch,
        input_shape=list(x.shape),
        stats=stats,
        peak_mem_mb=mem.peak_mb,
        extra={
            "input": input_description(list(x.shape)),
            "load": machine_load(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        },
    )


def profile_student(student_file: str | Path, **kw: Any) -> ProfileResult:
    """Load a run's student.pt and profile it in PyTorch eager FP32."""
    from edgevit.models.checkpoint import load_student

    model, meta = load_student(student_file)
    size = int(meta.get("img_size") or 224)
    return profile_torch(model, [1, 3, size, size], **kw)


# ------------------------------------------------------------------------------ exported artifacts
def check_runtime(fmt: str) -> None:
    """A one-line EdgevitError when this format's runtime cannot run here."""
    if fmt == "pytorch":
        return
    try:
        from edgevit.runtimes import runtime_available
    except ModuleNotFoundError as exc:
        raise EdgevitError(f"cannot profile {fmt} here: edgevit.runtimes is missing ({exc.name})") from None
    ok, reason = runtime_available(fmt)
    if not ok:
        raise EdgevitError(f"the {fmt} runtime is not available here: {reason}")


def profile_artifact(
    artifact: Any,
    *,
    threads: int | None = None,
    batch: int | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    warmup: int = DEFAULT_WARMUP,
    options: dict[str, Any] | None = None,
) -> ProfileResult:
    """Profile an exported Artifact (or its folder) in its own runtime on this machine."""
    from edgevit.artifact import Artifact

    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    check_runtime(artifact.format)
    from edgevit.runtimes import import_runtime, open_predictor

    batch = batch or int(artifact.input_shape[0] or 1)
    if batch != artifact.input_shape[0] and not artifact.manifest.get("dynamic_batch", False):
        raise EdgevitError(
            f"{artifact.directory} was exported for batch {artifact.input_shape[0]}; "
            f"re-export with dynamic_batch: true to profile batch {batch}"
        )
    x = make_input(artifact.input_shape, batch)
    import_runtime(artifact.format)  # load time is the model's, not Python's first import of the runtime
    with PeakMemory() as mem:
        start = time.perf_counter()  # load time: what an app waits for its first answer
        predictor = open_predictor(artifact, threads=threads, **(options or {}))
        predictor(x)
        load_ms = (time.perf_counter() - start) * 1e3
        stats = measure(predictor, x, iterations, warmup)
    runtime = getattr(predictor, "runtime", artifact.format)
    extra = {"input": input_description(list(x.shape)), "load": machine_load(), "artifact": str(artifact.directory)}
    extra["settings"] = dict(getattr(predictor, "settings", {}) or {})
    return ProfileResult(
        runtime=runtime,
        format=artifact.format,
        precision=artifact.precision,
        device=device_description(),
        threads=threads,
        batch=batch,
        input_shape=list(x.shape),
        stats=stats,
        peak_mem_mb=mem.peak_mb,
        extra=extra,
        load_ms=round(load_ms, 3),
    )


def load_artifact(directory: str | Path) -> Any:
    from edgevit.artifact import MANIFEST, Artifact

    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        raise EdgevitError(f"{directory} holds no exported model ({MANIFEST} missing): run `edgevit export` first")
    return Artifact.load(directory)
