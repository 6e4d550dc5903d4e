"""OpenMP's wait policy for this process, chosen before torch loads libgomp (it reads the variables
once, at load).

Threads that spin between parallel regions win on an idle machine and collapse when another job
wants the cores; threads that sleep (PASSIVE) never starve anyone but pay a wake-up per region.
So a training command on a machine that is idle when it starts keeps libgomp's default (spin a
while, then sleep); anything else, and every command that times latency, sleeps. The measurement
behind the rule and its threshold: benchmarks/wait_policy.py (docs/results/wait_policy.md).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

TRAINING_COMMANDS = frozenset({"distill"})  # their time is training steps; compress/profile time latency
IDLE_LOAD_PER_CPU = 0.25  # 1-minute load average per usable CPU below which the machine counts as idle
chosen: str | None = None  # set_wait_policy's line for this process; a training run logs it once it starts


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_wait_policy(command: str | None, environ: MutableMapping[str, str], load1: float | None, cpus: int) -> str:
    """Set OMP_WAIT_POLICY in `environ` unless it (or GOMP_SPINCOUNT) is set already; returns why,
    in one line, for the log."""
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        if name in environ:
            return f"OpenMP: {name}={environ[name]} from the environment"
    busy = load1 is None or load1 >= IDLE_LOAD_PER_CPU * cpus
    load = "unknown" if load1 is None else f"{load1:.2f}"
    if command in TRAINING_COMMANDS and not busy:
        return (
            f"OpenMP: threads spin before they sleep (libgomp's default): the machine is idle "
            f"(load {load} on {cpus} CPUs); set OMP_WAIT_POLICY=PASSIVE if other jobs will share it"
        )
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    why = "latency is timed" if command not in TRAINING_COMMANDS else f"load {load} on {cpus} CPUs"
    return f"OpenMP: OMP_WAIT_POLICY=PASSIVE ({why}): threads sleep, so no job starves another"


def set_wait_policy(command: str | None) -> str:
    """choose_wait_policy for this process, from its environment and the load average now."""
    global chosen
    try:
        load1: float | None = os.getloadavg()[0]
    except OSError:
        load1 = None
    chosen = choose_wait_policy(command, os.environ, load1, usable_cpus())
    return chosen
