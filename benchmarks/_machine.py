"""What every benchmark's JSON says about where and how it was measured.

Timings do not carry from one CPU to another (bf16 is native with AVX512_BF16 or AMX and emulated
without; INT8 pays with VNNI), nor from a quiet machine to a loaded one, so each result file
records the CPU, the instruction-set flags that decide which precision wins, the load average
before and after, the package versions and the command line that produced it.

    from _machine import write_json     # benchmarks/ is on sys.path when a script runs
    write_json(out_path, results)       # results + {"machine": {...}}, written atomically

    # a file docs/gen.py renders: {"benchmark", "script", "sections", ...} + the machine with its
    # id, label and conditions (the load it was measured under), as benchmarks/results/<benchmark>.<id>.json
    write_results(out_path, results, load_before, machine_id())
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

# /proc/cpuinfo flags that change which runtime and precision is fastest
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
PACKAGES = (
    "edgevit",
    "torch",
    "timm",
    "torch-pruning",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "litert-torch",
    "ai-edge-litert",
    "ai-edge-quantizer",
    "coremltools",
    "executorch",
    "torchao",
    "neural-compressor",
    "nvidia-modelopt",
)


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(_lscpu().get("Flags", "").split())
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def machine(load_before: list[float] | None = None) -> dict[str, Any]:
    """The machine and the moment: CPU model, the flags that matter, load, versions, command line."""
    info = _lscpu()
    flags = _cpu_flags()
    return {
        "cpu": info.get("Model name") or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_family": info.get("CPU family"),
        "flags": {f: f in flags for f in FLAGS},
        "amx": any(f.startswith("amx") for f in flags),
        "load_average_before": load_before,
        "load_average": load_average(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "versions": _versions(),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: str | Path, results: dict[str, Any], load_before: list[float] | None = None) -> Path:
    """Write `results` with a `machine` entry beside them; a half-written file never replaces a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**results, "machine": machine(load_before)}, indent=2))
    tmp.replace(path)
    return path


# the machines benchmarks/results/ names its files by; their labels and what they are usually like
LABELS = {"xeon": "Xeon (AMX)", "zen3": "Zen 3 EPYC", "zen4": "Zen 4 EPYC", "zen5": "Zen 5"}
USUALLY = {"xeon": "often shared with other jobs"}


def machine_id() -> str:
    """This machine's id in results file names: xeon (Intel), zen3 / zen4 (AMD family 25, without / with
    AVX-512), zen5 (family 26), else the arch."""
    info = _lscpu()
    name = (info.get("Model name") or "").lower()
    family = info.get("CPU family")
    if "intel" in name:
        return "xeon"
    if "amd" in name:
        if str(family) == "25":
            return "zen4" if "avx512f" in _cpu_flags() else "zen3"
        return {"26": "zen5"}.get(str(family), f"amd{family}")
    return platform.machine()


def write_results(
    path: str | Path, results: dict[str, Any], load_before: list[float] | None, mid: str | None = None
) -> Path:
    """`write_json` for a file docs/gen.py renders: the machine also gets its id, label and the
    conditions it was measured under (load average before and after: the machine may be shared)."""
    mid = mid or machine_id()
    m = machine(load_before)
    usual = USUALLY.get(mid)
    m.update(
        id=mid,
        label=LABELS.get(mid, mid),
        conditions=f"{usual + '; ' if usual else ''}load average (1/5/15 min) "
        f"{f'{load_before} before, ' if load_before else ''}{m['load_average']} after, on {m['cpus']} CPUs",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**results, "machine": m}, indent=2))
    tmp.replace(path)
    return path
