"""The OpenMP wait policy the CLI sets before torch loads: the rule, and the real process."""

from __future__ import annotations

import os
import subprocess
import sys

from edgevit.openmp import IDLE_LOAD_PER_CPU, choose_wait_policy


def test_a_training_command_on_an_idle_machine_keeps_libgomps_spinning_default() -> None:
    env: dict[str, str] = {}
    why = choose_wait_policy("distill", env, load1=0.1 * IDLE_LOAD_PER_CPU * 2, cpus=2)
    assert "OMP_WAIT_POLICY" not in env and "idle" in why and "0.05 on 2 CPUs" in why


def test_a_busy_machine_or_a_timing_command_gets_sleeping_threads() -> None:
    busy: dict[str, str] = {}
    assert "load 0.50 on 2 CPUs" in choose_wait_policy("distill", busy, load1=IDLE_LOAD_PER_CPU * 2, cpus=2)
    unknown: dict[str, str] = {}
    choose_wait_policy("distill", unknown, load1=None, cpus=2)
    timing: dict[str, str] = {}
    assert "latency is timed" in choose_wait_policy("compress", timing, load1=0.0, cpus=2)
    assert busy["OMP_WAIT_POLICY"] == unknown["OMP_WAIT_POLICY"] == timing["OMP_WAIT_POLICY"] == "PASSIVE"


def test_the_environments_choice_is_kept() -> None:
    for name, value in (("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "10000")):
        env = {name: value}
        assert choose_wait_policy("profile", env, load1=5.0, cpus=2) == f"OpenMP: {name}={value} from the environment"
        assert env == {name: value}


def test_the_cli_sets_it_in_its_own_process_before_torch_loads() -> None:
    code = (
        "import os, sys; from edgevit.cli import main\n"
        "assert 'torch' not in sys.modules, 'torch (and libgomp) loaded before the policy is set'\n"
        "main(['recipes'])\n"
        "print('policy=' + os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("policy=PASSIVE")  # `recipes` is not a training command
