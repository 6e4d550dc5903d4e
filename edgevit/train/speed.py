"""Whether bf16 autocast, channels_last or fused attention make a model faster here: measured, remembered.

No fixed rule holds across machines: bf16 autocast sped a small DeiT up on an AMX Xeon and
slowed it down on the same Xeon under load; on a CPU without native bf16 (AVX2 only) it is emulated.
PyTorch's fused attention (SDPA) is not always the fast one either: on a Zen 5 CPU its bf16 backward
on the quickstart student's 18 tokens was slower than timm's explicit attention.
So `amp` / `channels_last` / `fused_attn: auto` time a few real steps of the model at
the real batch shape for each candidate and keep the fastest. The choice is stored in `runs/.speed/`
under a key of the model's shape, the batch, the machine and the thread count, so later runs in the
same runs folder (and a `--resume`) reuse it instead of measuring again, and train with the same numerics.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgevit.files import write_json

PROBE_STEPS = 3  # timed steps per candidate, after one untimed step
PROBE_MARGIN = 0.05  # near-ties keep the simpler candidate, so identical runs pick the same (step noise ~2-5 %)


@dataclass(frozen=True)
class Precision:
    """How a model runs: autocast dtype ('off', 'bf16', 'fp16'), memory format, and whether timm's
    attention layers use PyTorch's fused kernel (None: the model has none, or leave them as built)."""

    amp: str = "off"
    channels_last: bool = False
    fused_attn: bool | None = None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.float16 if self.amp == "fp16" else torch.bfloat16)

    def apply(self, model: nn.Module) -> nn.Module:
        if self.fused_attn is not None:
            for m in attention_layers(model):
                m.fused_attn = self.fused_attn
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def describe(self) -> str:
        parts = ["fp32" if self.amp == "off" else f"{self.amp} autocast"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["explicit attention"] if self.fused_attn is False else []
        return " + ".join(parts)


def attention_layers(model: nn.Module) -> list[nn.Module]:
    """timm's attention modules (ViT, DeiT, PVT-v2...): each chooses SDPA or explicit math by `fused_attn`."""
    return [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]


def has_convolutions(model: nn.Module) -> bool:
    """channels_last matters only for spatial convolutions (a ViT's one patch-embedding conv does not count)."""
    return sum(isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1) for m in model.modules()) > 1


def cpu_has_bf16() -> bool | None:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); None where /proc/cpuinfo cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else bool({"avx512_bf16", "amx_bf16"} & set(flags))


def candidates(
    model: nn.Module, device: torch.device, amp: str, channels_last: str | bool, fused_attn: str | bool = "auto"
) -> list[Precision]:
    """What `auto` tries. On a CPU without native bf16 autocast only emulates it (a RegNetY-160 step took
    minutes in the probe on an AVX2 EPYC), so bf16 is tried only where the CPU has it or cannot say."""
    cpu_bf16 = device.type == "cpu" and cpu_has_bf16() is not False
    amps = (
        [amp]
        if amp != "auto"
        else (
            ["off", "bf16"]
            if cpu_bf16
            else ["off"]
            if device.type == "cpu"
            else ["off", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
        )
    )
    layouts = [channels_last] if channels_last != "auto" else ([False, True] if has_convolutions(model) else [False])
    attns = [fused_attn] if fused_attn != "auto" else ([True, False] if attention_layers(model) else [None])
    return [Precision(a, bool(c), f) for a in amps for c in layouts for f in attns]


def _machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return f"{name or platform.processor()} {torch.backends.cpu.get_cpu_capability()}"


def memo_key(model: nn.Module, shape: tuple[int, ...], train: bool, device: torch.device) -> str:
    params = sorted((n, tuple(p.shape)) for n, p in model.named_parameters())
    spec = [
        type(model).__name__,
        params,
        list(shape),
        train,
        device.type,
        _machine(),
        torch.get_num_threads(),
        torch.__version__,
    ]
    return hashlib.sha256(json.dumps(spec, default=str).encode()).hexdigest()[:16]


def _step_fn(model: nn.Module, x: torch.Tensor, p: Precision, train: bool, device: torch.device) -> Callable[[], None]:
    model = p.apply(model)
    x = p.input(x)
    if not train:
        model.eval()

        def infer() -> None:
            with torch.inference_mode(), p.autocast(device):
                model(x)

        return infer
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6)

    def step() -> None:
        with p.autocast(device):
            out = model(x)
            loss = sum(o.float().mean() for o in (out if isinstance(out, tuple) else (out,)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _median_seconds(fn: Callable[[], None], device: torch.device) -> float:
    fn()
    times = []
    for _ in range(PROBE_STEPS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose(
    model: nn.Module,
    sample: torch.Tensor,
    *,
    amp: str = "auto",
    channels_last: str | bool = "auto",
    fused_attn: str | bool = "auto",
    train: bool = True,
    memo_dir: Path | None = None,
    label: str = "model",
    log: Callable[[str], None] = print,
) -> Precision:
    """The fastest precision for `model` on `sample`'s shape among the candidates the settings allow (a
    near-tie, within PROBE_MARGIN, goes to the earlier, simpler candidate)."""
    device = sample.device
    options = candidates(model, device, amp, channels_last, fused_attn)
    if len(options) == 1:
        return options[0]
    key = memo_key(model, tuple(sample.shape), train, device)
    memo = memo_dir / f"{key}.json" if memo_dir is not None else None
    if memo is not None and memo.is_file():
        try:
            saved = json.loads(memo.read_text())
            chosen = Precision(**saved["choice"])
            if chosen in options:
                return chosen
        except (ValueError, KeyError, TypeError):
            pass  # a damaged memo is measured again
    times: dict[Precision, float] = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for p in options:
            times[p] = _median_seconds(_step_fn(copy.deepcopy(model), sample, p, train, device), device)
    best = options[0]
    for p in options[1:]:  # a candidate must beat the pick by more than the probe's noise to replace it
        if times[p] < (1 - PROBE_MARGIN) * times[best]:
            best = p
    base = next(
        (t for p, t in times.items() if p.amp == "off" and not p.channels_last and p.fused_attn is not False),
        max(times.values()),
    )  # fp32 as the model was built
    log(
        f"{label}: {best.describe()} ({base / times[best]:.2f}x fp32 in a {PROBE_STEPS}-step "
        f"{'training' if train else 'inference'} probe: "
        + ", ".join(f"{p.describe()} {1000 * t:.0f} ms" for p, t in times.items())
        + ")"
    )
    if memo is not None:
        _remember(memo, best, label, sample.shape, ms={p.describe(): 1000 * t for p, t in times.items()})
    return best


def pin(model: nn.Module, shape: tuple[int, ...], precision: Precision, memo_dir: Path | None, why: str) -> None:
    """Make `precision` the memo's choice for (model, shape) training steps, so later runs on this
    machine skip a candidate that was fast but failed (bf16 that made the loss non-finite)."""
    if memo_dir is not None:
        key = memo_key(model, shape, True, next(model.parameters()).device)
        _remember(memo_dir / f"{key}.json", precision, "pinned", shape, why=why)


def _remember(memo: Path, choice: Precision, label: str, shape: Any, **why: Any) -> None:
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {"choice": asdict(choice), **why, "label": label, "shape": list(shape), "machine": _machine()})


def precision_of(state: dict[str, Any] | None) -> Precision | None:
    return Precision(**state) if state else None
