"""`edgevit profile RUN --target NAME [--device local|ssh://user@host[:port]]`.

Times the run's exported artifact for a target in the target's own runtime -- here, or on a
device over SSH -- prints median/p90/p99/mean/throughput (warm-up excluded), records a row in
the runs ledger and writes the full result as JSON under runs/<run>/profiles/.
`--target pytorch` times the run's student in PyTorch eager FP32: the baseline.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.profile.runners import DEFAULT_ITERATIONS, DEFAULT_WARMUP, ProfileResult

BASELINE = "pytorch"
PROFILES_DIR = "profiles"


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `profile` and `benchmark`: how to time and where."""
    p.add_argument("--device", default=None,
                   help="local, or ssh://user@host[:port] (default: the target's device section)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="timed calls (default %(default)s)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed calls first (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every runtime (profile: the runtime's default; benchmark: all CPUs)")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: the artifact's batch)")
    p.add_argument("--known-hosts", default=None, help="known_hosts file for the device's host key (checking stays on)")
    p.add_argument("--identity", default=None, help="SSH private key for the device")
    p.add_argument("--ssh-config", default=None, help="ssh config file (ssh -F)")
    p.add_argument("--remote-python", default=None, help="python on the device for the agent (default python3)")
    p.add_argument("--remote-tool", default=None, help="trtexec path on the device (default: the target's tool)")
    p.add_argument("--connect-timeout", type=int, default=10, help="seconds for ssh to connect (default %(default)s)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for any one remote step (default %(default)s)")
    p.add_argument("--runs-dir", default=None, help="where runs live when RUN is a name (default: runs/ or $EDGEVIT_RUNS)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, or run name under the runs folder")
    p.add_argument("--target", required=True, help="target name, alias or YAML path; 'pytorch' for the eager FP32 baseline")
    p.add_argument("--precision", default=None, help="which export of the target (default: the target's precision)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="runtime option (repeatable)")
    add_device_arguments(p)


# ------------------------------------------------------------------------------ shared helpers
def resolve_run(run: str, runs_dir: str | None = None) -> Path:
    """A run folder from a path or a name under the runs folder."""
    from edgevit.paths import default_runs_dir

    p = Path(run)
    if p.is_dir():
        return p.resolve()
    q = Path(runs_dir) if runs_dir else default_runs_dir()
    if (q / run).is_dir():
        return (q / run).resolve()
    raise EdgevitError(f"no run '{run}' (looked for the folder {p} and {q / run})")


def artifact_dir(run_dir: Path, target: str, precision: str) -> Path:
    from edgevit.export.pipeline import EXPORTS_DIR

    return run_dir / EXPORTS_DIR / target / precision


def parse_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise EdgevitError(f"--option expects KEY=VALUE (got {kv!r})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def device_url(args: argparse.Namespace, target: Any | None) -> str:
    """--device, else the target's device section, else local."""
    if args.device:
        return args.device
    dev = getattr(target, "device", None)
    if dev is not None and dev.kind == "ssh":
        if not dev.host:
            raise EdgevitError(f"target {target.name} says device kind ssh but has no host: pass --device ssh://user@host")
        return f"ssh://{dev.user + '@' if dev.user else ''}{dev.host}:{dev.port}"
    return "local"


def _remote_tool(args: argparse.Namespace, target: Any) -> tuple[str, str | None, str]:
    """(kind 'agent'|'trtexec', trtexec path, remote python) for this target on an SSH device."""
    tool = args.remote_tool or (target.device.tool if target is not None else None) or ""
    python = args.remote_python or "python3"
    if target is not None and target.format == "tensorrt":
        return "trtexec", (tool if "trtexec" in tool else None), python
    m = re.match(r"\s*(\S+)\s+-m\s+edgevit\.profile\.agent\b", tool)
    if m and not args.remote_python:
        python = m.group(1)
    return "agent", None, python


def profile_one(run_dir: Path, target_name: str, precision: str | None, args: argparse.Namespace,
                options: dict[str, Any] | None = None) -> tuple[ProfileResult, Any]:
    """Profile one export (or the PyTorch baseline) of a run where the arguments say. Returns
    (result, target or None for the baseline)."""
    from edgevit.profile import runners

    kw = dict(threads=args.threads, iterations=args.iterations, warmup=args.warmup)
    url = args.device or "local"
    if target_name == BASELINE:
        if url != "local":
            raise EdgevitError("the PyTorch baseline is profiled here only (drop --device)")
        from edgevit.models.checkpoint import STUDENT_FILE

        return runners.profile_student(run_dir / STUDENT_FILE, batch=args.batch or 1, **kw), None
    from edgevit.config import load_target

    target = load_target(target_name)
    precision = precision or target.precision
    folder = artifact_dir(run_dir, target.name, precision)
    if not (folder / "manifest.json").is_file():
        raise EdgevitError(f"run {run_dir.name} has no {target.name} {precision} export ({folder} missing): "
                           f"run `edgevit export {run_dir.name} --target {target.name} --precision {precision}` first")
    url = device_url(args, target)
    if url == "local":
        if target.format == "tensorrt":
            return _local_trtexec(folder, precision, args), target
        return runners.profile_artifact(folder, batch=args.batch, options=options, **kw), target
    from edgevit.profile.ssh import SshRunner

    kind, trtexec, python = _remote_tool(args, target)
    ssh = SshRunner(url, known_hosts=args.known_hosts, identity=args.identity, ssh_config=args.ssh_config,
                    connect_timeout=args.connect_timeout, timeout=args.timeout,
                    workdir=target.device.workdir, python=python)
    if kind == "trtexec":
        return ssh.profile_trtexec(folder, precision=precision, iterations=args.iterations, tool=trtexec,
                                   batch=args.batch or 1), target
    return ssh.profile_agent(folder, batch=args.batch, options=options, **kw), target


def _local_trtexec(folder: Path, precision: str, args: argparse.Namespace) -> ProfileResult:
    """A TensorRT target timed here -- only where trtexec is installed (a GPU box)."""
    from edgevit.profile.runners import device_description, load_artifact
    from edgevit.profile.trtexec import parse_trtexec, trtexec_command, trtexec_stats

    tool = args.remote_tool or shutil.which("trtexec") or shutil.which("/usr/src/tensorrt/bin/trtexec")
    if not tool:
        raise EdgevitError("the tensorrt runtime is not available here (no trtexec): TensorRT engines are built and "
                           "timed on the device, pass --device ssh://user@jetson")
    art = load_artifact(folder)
    argv = trtexec_command(str(art.model_path), str(folder / "model.engine"), precision, iterations=args.iterations)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise EdgevitError(f"trtexec timed out after {args.timeout:.0f} s") from None
    parsed = parse_trtexec(proc.stdout + "\n" + proc.stderr)
    return ProfileResult(runtime="tensorrt (trtexec)", format=art.format, precision=precision,
                         device=device_description(), threads=None, batch=args.batch or 1,
                         input_shape=list(art.input_shape), stats=trtexec_stats(parsed, args.batch or 1),
                         extra={"trtexec": parsed, "command": argv})


def record(run_dir: Path, target_name: str, result: ProfileResult, folder: Path | None = None) -> int:
    """One ledger row for this measurement, joined to the export row of the artifact `folder` it timed."""
    from edgevit.runs import Ledger, split_precision

    s = result.stats
    ledger = Ledger(run_dir.parent)
    export = ledger.latest_export(run_dir.name, target=target_name, folder=folder.name) if folder else None
    return ledger.record_profile(
        run_dir.name, target=target_name, format=result.format, precision=split_precision(result.precision)[0],
        export_id=export["id"] if export else None, runtime=result.runtime,
        device=result.device, threads=result.threads, batch=result.batch, iterations=s.iterations, warmup=s.warmup,
        median_ms=s.median_ms, p90_ms=s.p90_ms, p99_ms=s.p99_ms, mean_ms=s.mean_ms, throughput=s.throughput,
        peak_mem_mb=result.peak_mem_mb, extra=result.extra)


def write_json(run_dir: Path, target_name: str, result: ProfileResult) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", result.device.split(" (")[0])
    path = run_dir / PROFILES_DIR / f"{target_name}-{result.precision}-{slug}-t{result.threads or 'default'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return path


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run, args.runs_dir)
    result, target = profile_one(run_dir, args.target, args.precision, args, parse_options(args.option))
    name = target.name if target is not None else BASELINE
    print(result.summary_line())
    print(f"input: {result.extra.get('input', 'see the device tool')}; machine load: {result.extra.get('load', 'n/a')}")
    folder = artifact_dir(run_dir, target.name, args.precision or target.precision) if target is not None else None
    row = record(run_dir, name, result, folder)
    path = write_json(run_dir, name, result)
    print(f"wrote {path} and ledger row {row} in {run_dir.parent / 'ledger.sqlite'}")
    return 0
