"""The profile stage: `profile(run_or_artifact, target, precision, device=..., timing=...)`.

Times an exported artifact in its own runtime -- here, or on a device over SSH (the device's own
tool: `python -m edgevit.profile.agent`, or trtexec on a Jetson) -- or a run's student in PyTorch
eager FP32 (`target="pytorch"`, the baseline every speed-up is quoted against). Records a ledger row
joined to the export it timed and writes the full result as JSON under runs/<run>/profiles/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevit import formats
from edgevit.errors import EdgevitError
from edgevit.files import write_json
from edgevit.paths import resolve_run
from edgevit.profile.runners import DEFAULT_ITERATIONS, DEFAULT_WARMUP, ProfileResult
from edgevit.vocab import BASELINE

PROFILES_DIR = "profiles"


@dataclass
class Timing:
    """How to time: calls after the untimed warm-up, threads (None: the runtime's default), batch."""

    iterations: int = DEFAULT_ITERATIONS
    warmup: int = DEFAULT_WARMUP
    threads: int | None = None
    batch: int | None = None

    def __post_init__(self) -> None:  # the one place these are checked: bad values fail before any file is read
        for param, value, low in (
            ("iterations", self.iterations, 1),
            ("warmup", self.warmup, 0),
            ("threads", self.threads, 1),
            ("batch", self.batch, 1),
        ):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise EdgevitError(f"{param} must be a whole number >= {low} (got {value!r})", param)


@dataclass
class Device:
    """Where to run: 'local', or 'ssh://user@host[:port]' with the SSH settings (host-key checking on)."""

    url: str = "local"
    known_hosts: str | None = None
    identity: str | None = None
    ssh_config: str | None = None
    remote_python: str | None = None
    remote_tool: str | None = None
    connect_timeout: int = 10
    timeout: float = 900.0

    def __post_init__(self) -> None:
        if self.url != "local":
            from edgevit.profile.ssh import SshDevice

            SshDevice.parse(self.url)  # a bad URL is one line before any file is read

    @property
    def local(self) -> bool:
        return self.url == "local"


def artifact_dir(run_dir: Path, target: str, folder: str) -> Path:
    from edgevit.export.pipeline import EXPORTS_DIR

    return run_dir / EXPORTS_DIR / target / folder


def _device_for(device: Device, target: Any) -> Device:
    """The target's own device section when the caller said nothing else."""
    dev = target.device
    if not device.local or dev.kind != "ssh":
        return device
    if not dev.host:
        raise EdgevitError(
            f"target {target.name} says device kind ssh but has no host: give device ssh://user@host", "device"
        )
    url = f"ssh://{dev.user + '@' if dev.user else ''}{dev.host}:{dev.port}"
    return Device(**{**vars(device), "url": url})


def profile(
    run: str | Path,
    target: str = BASELINE,
    precision: str | None = None,
    *,
    device: Device | str = "local",
    timing: Timing | None = None,
    options: dict[str, Any] | None = None,
    ledger: bool = True,
    use_target_device: bool = True,
) -> ProfileResult:
    """Time one export of a run (its folder under exports/<target>/<precision>) or the PyTorch baseline."""
    from edgevit.config import load_target

    device = Device(device) if isinstance(device, str) else device
    timing = timing or Timing()
    run_dir = resolve_run(run)
    if target == BASELINE:
        result, folder = _profile_baseline(run_dir, device, timing), None
        name = BASELINE
    else:
        tgt = load_target(target)
        folder = artifact_dir(run_dir, tgt.name, precision or tgt.precision)
        if not (folder / "manifest.json").is_file():
            raise EdgevitError(
                f"run {run_dir.name} has no {tgt.name} {folder.name} export ({folder} missing): run "
                f"`edgevit export {run_dir.name} --target {tgt.name} --precision {folder.name}` first"
            )
        result = profile_artifact_on(
            folder, tgt, _device_for(device, tgt) if use_target_device else device, timing, options
        )
        name = tgt.name
    if ledger:
        result.extra["ledger_id"] = record(run_dir, name, result, folder)
        result.extra["json"] = str(write_result(run_dir, name, result))
    return result


def _profile_baseline(run_dir: Path, device: Device, timing: Timing) -> ProfileResult:
    from edgevit.models.checkpoint import STUDENT_FILE
    from edgevit.profile import runners

    if not device.local:
        raise EdgevitError("the PyTorch baseline is profiled here only (leave device local)", "device")
    return runners.profile_student(
        run_dir / STUDENT_FILE,
        batch=timing.batch or 1,
        threads=timing.threads,
        iterations=timing.iterations,
        warmup=timing.warmup,
    )


def profile_artifact_on(
    folder: Path,
    target: Any,
    device: Device,
    timing: Timing,
    options: dict[str, Any] | None = None,
    ssh: Any = None,
) -> ProfileResult:
    """One artifact folder timed on `device` with the tool its format needs there (`ssh`: a runner to
    reuse, e.g. one inside `staging()`)."""
    from edgevit.profile import runners

    kw = dict(threads=timing.threads, iterations=timing.iterations, warmup=timing.warmup)
    on_device = formats.get(target.format).timer == "trtexec"  # an engine built and timed by trtexec
    if device.local:
        if on_device:
            return _local_trtexec(folder, folder.name.split("-")[0], device, timing)
        return runners.profile_artifact(folder, batch=timing.batch, options=options, **kw)
    ssh = ssh or ssh_runner(device, target)
    if on_device:
        tool = device.remote_tool or (target.device.tool if "trtexec" in (target.device.tool or "") else None)
        return ssh.profile_trtexec(
            folder,
            precision=folder.name.split("-")[0],
            iterations=timing.iterations,
            tool=tool,
            batch=timing.batch or 1,
        )
    return ssh.profile_agent(folder, batch=timing.batch, options=options, **kw)


def ssh_runner(device: Device, target: Any) -> Any:
    """The SSH runner for `device` (host-key checking on), in the target's remote work folder."""
    from edgevit.profile.ssh import SshRunner

    return SshRunner(
        device.url,
        known_hosts=device.known_hosts,
        identity=device.identity,
        ssh_config=device.ssh_config,
        connect_timeout=device.connect_timeout,
        timeout=device.timeout,
        workdir=target.device.workdir,
        python=_remote_python(device, target),
    )


def _remote_python(device: Device, target: Any) -> str:
    if device.remote_python:
        return device.remote_python
    m = re.match(r"\s*(\S+)\s+-m\s+edgevit\.profile\.agent\b", target.device.tool or "")
    return m.group(1) if m else "python3"


def _local_trtexec(folder: Path, precision: str, device: Device, timing: Timing) -> ProfileResult:
    """A TensorRT artifact timed here -- only where trtexec is installed (a GPU box)."""
    from edgevit.profile.runners import device_description, load_artifact
    from edgevit.profile.trtexec import artifact_command, parse_trtexec, trtexec_stats

    tool = device.remote_tool or shutil.which("trtexec") or shutil.which("/usr/src/tensorrt/bin/trtexec")
    if not tool:
        raise EdgevitError(
            "the tensorrt runtime is not available here (no trtexec): TensorRT engines are built and "
            "timed on the device, give device ssh://user@jetson",
            "device",
        )
    art = load_artifact(folder)
    argv = artifact_command(art.manifest, tool, timing.iterations)
    try:
        proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=device.timeout)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"trtexec timed out after {device.timeout:.0f} s") from None
    parsed = parse_trtexec(proc.stdout + "\n" + proc.stderr)
    batch = timing.batch or 1
    return ProfileResult(
        runtime="tensorrt (trtexec)",
        format=art.format,
        precision=precision,
        device=device_description(),
        threads=None,
        batch=batch,
        input_shape=list(art.input_shape),
        stats=trtexec_stats(parsed, batch),
        extra={"trtexec": parsed, "command": argv},
    )


def record(run_dir: Path, target_name: str, result: ProfileResult, folder: Path | None = None) -> int:
    """One ledger row for this measurement, joined to the export row of the artifact `folder` it timed."""
    from edgevit.runs import Ledger, split_precision

    s = result.stats
    ledger = Ledger(run_dir.parent)
    export = ledger.latest_export(run_dir.name, target=target_name, folder=folder.name) if folder else None
    return ledger.record_profile(
        run_dir.name,
        target=target_name,
        format=result.format,
        precision=split_precision(result.precision)[0],
        export_id=export["id"] if export else None,
        runtime=result.runtime,
        device=result.device,
        threads=result.threads,
        batch=result.batch,
        iterations=s.iterations,
        warmup=s.warmup,
        median_ms=s.median_ms,
        p90_ms=s.p90_ms,
        p99_ms=s.p99_ms,
        mean_ms=s.mean_ms,
        throughput=s.throughput,
        peak_mem_mb=result.peak_mem_mb,
        load_ms=getattr(result, "load_ms", None),
        extra=result.extra,
    )


def write_result(run_dir: Path, target_name: str, result: ProfileResult) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", result.device.split(" (")[0])
    path = run_dir / PROFILES_DIR / f"{target_name}-{result.precision}-{slug}-t{result.threads or 'default'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result.to_dict())
    return path
