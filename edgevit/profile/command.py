"""`edgevit profile RUN --target NAME [--device local|ssh://user@host[:port]]`: parses and calls
`edgevit.profile.stage.profile`. `--target pytorch` times the run's student in PyTorch eager FP32."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgevit.errors import EdgevitError
from edgevit.profile.runners import DEFAULT_ITERATIONS, DEFAULT_WARMUP
from edgevit.profile.stage import Device, Timing


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by `profile` and `benchmark`: how to time and where."""
    p.add_argument(
        "--device", default=None, help="local, or ssh://user@host[:port] (default: the target's device section)"
    )
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help="timed calls (default %(default)s)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed calls first (default %(default)s)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every runtime (profile: the runtime's default; benchmark: all CPUs)",
    )
    p.add_argument("--batch", type=int, default=None, help="images per call (default: the artifact's batch)")
    add_ssh_arguments(p)


def add_ssh_arguments(p: argparse.ArgumentParser) -> None:
    """How to reach a device over SSH, and where runs live (also used by `compress`)."""
    p.add_argument("--known-hosts", default=None, help="known_hosts file for the device's host key (checking stays on)")
    p.add_argument("--identity", default=None, help="SSH private key for the device")
    p.add_argument("--ssh-config", default=None, help="ssh config file (ssh -F)")
    p.add_argument("--remote-python", default=None, help="python on the device for the agent (default python3)")
    p.add_argument("--remote-tool", default=None, help="trtexec path on the device (default: the target's tool)")
    p.add_argument("--connect-timeout", type=int, default=10, help="seconds for ssh to connect (default %(default)s)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for any one remote step (default %(default)s)")
    p.add_argument(
        "--runs-dir", default=None, help="where runs live when RUN is a name (default: runs/ or $EDGEVIT_RUNS)"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder, or run name under the runs folder")
    p.add_argument(
        "--target", required=True, help="target name, alias or YAML path; 'pytorch' for the eager FP32 baseline"
    )
    p.add_argument("--precision", default=None, help="which export of the target (default: the target's precision)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="runtime option (repeatable)")
    add_device_arguments(p)


def timing_of(a: argparse.Namespace) -> Timing:
    return Timing(iterations=a.iterations, warmup=a.warmup, threads=a.threads, batch=a.batch)


def device_of(a: argparse.Namespace) -> Device:
    return Device(
        url=a.device or "local",
        known_hosts=a.known_hosts,
        identity=a.identity,
        ssh_config=a.ssh_config,
        remote_python=a.remote_python,
        remote_tool=a.remote_tool,
        connect_timeout=a.connect_timeout,
        timeout=a.timeout,
    )


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


def run(a: argparse.Namespace) -> int:
    from edgevit.profile.stage import profile, resolve_run

    options, device, timing = parse_options(a.option), device_of(a), timing_of(a)  # what was typed, checked first
    run_dir = resolve_run(a.run, a.runs_dir)
    result = profile(
        run_dir,
        a.target,
        a.precision,
        device=device,
        timing=timing,
        options=options,
        use_target_device=a.device is None,
    )
    print(result.summary_line())
    print(f"input: {result.extra.get('input', 'see the device tool')}; machine load: {result.extra.get('load', 'n/a')}")
    print(
        f"wrote {result.extra['json']} and ledger row {result.extra['ledger_id']} in {run_dir.parent / 'ledger.sqlite'}"
    )
    return 0
