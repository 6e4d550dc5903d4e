"""The SSH runner against a real OpenSSH server started here on 127.0.0.1.

The server is an sshd on a free port with its own host key, sshd_config and authorized_keys in
tmp_path; the client uses a throwaway key and a known_hosts file holding only that host key, with
StrictHostKeyChecking=yes. The "device" is this machine, so the agent runs with this Python.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from edgevit.cli import main  # noqa: E402
from edgevit.errors import EdgevitError  # noqa: E402
from edgevit.profile.ssh import SshDevice, SshRunner  # noqa: E402

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
pytestmark = pytest.mark.skipif(
    SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
    reason="needs OpenSSH (apt-get install openssh-server openssh-client)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgevit-test", "-f", str(path)], check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("sshd")
    keygen(d / "host_key")
    keygen(d / "client_key")
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
    )
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd started as root wants its privsep dir
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=open(d / "sshd.log", "w"))
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.skip(f"sshd did not start: {(d / 'sshd.log').read_text().strip()[-300:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (d / "empty_known_hosts").write_text("")
    yield {"dir": d, "port": port, "url": f"ssh://{os.environ.get('USER') or _user()}@127.0.0.1:{port}"}
    proc.terminate()
    proc.wait(timeout=10)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ONNX export made with the ONNX exporter module."""
    import torch

    from edgevit import formats
    from edgevit.config import load_target
    from edgevit.models.students import create_student

    torch.manual_seed(0)
    model = create_student(
        "deit_tiny_distilled_patch16_224",
        {"num_classes": 10, "img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
    ).eval()
    out = tmp_path_factory.mktemp("onnx")
    art = formats.get("onnx").export(model, torch.zeros(1, 3, 32, 32), load_target("onnx"), "fp32", None, out, {})
    art.write_manifest()
    return out


def runner(sshd: dict, known_hosts: str = "known_hosts", python: str = sys.executable) -> SshRunner:
    d = sshd["dir"]
    return SshRunner(
        sshd["url"],
        known_hosts=d / known_hosts,
        identity=d / "client_key",
        connect_timeout=5,
        timeout=120,
        python=python,
    )


def test_agent_runs_remotely_and_returns_numbers(sshd: dict, artifact: Path) -> None:
    r = runner(sshd).profile_agent(artifact, threads=1, iterations=20, warmup=3)
    s = r.stats
    assert r.format == "onnx" and r.runtime == "onnxruntime" and r.threads == 1
    assert s.iterations == 20 and s.warmup == 3
    assert 0 < s.min_ms <= s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms and s.throughput > 0
    assert r.device.startswith("ssh://") and f":{sshd['port']}" in r.device
    # the temp folder on the device was removed
    assert not list(Path("/tmp").glob("edgevit-*/artifact/manifest.json"))


def test_staging_copies_each_artifact_once_and_removes_it_at_the_end(sshd: dict, artifact: Path) -> None:
    """A search times each candidate in several rounds: inside staging() it travels to the device once."""
    r = runner(sshd)
    with r.staging():
        for _ in range(3):
            assert r.profile_agent(artifact, threads=1, iterations=5, warmup=1).stats.iterations == 5
        folder = Path(r._staged["dir"])  # the device is this machine: its folder can be listed here
        assert sorted(p.name for p in folder.iterdir()) == ["artifact-0", "pkg"]
    assert not folder.exists()


def test_agent_profiles_an_executorch_program(sshd: dict, tmp_path: Path) -> None:
    """A .pte (XNNPACK delegate) is profiled on the device like any artifact, load time included."""
    pytest.importorskip("executorch", reason="the [executorch] extra is not installed")
    import torch

    from edgevit import formats
    from edgevit.config import load_target
    from edgevit.models.students import create_student

    torch.manual_seed(0)
    model = create_student(
        "deit_tiny_distilled_patch16_224",
        {"num_classes": 10, "img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
    ).eval()
    art = formats.get("executorch").export(
        model, torch.zeros(1, 3, 32, 32), load_target("executorch-mobile"), "fp32", None, tmp_path, {}
    )
    art.write_manifest()
    r = runner(sshd).profile_agent(tmp_path, threads=1, iterations=10, warmup=2)
    assert r.format == "executorch" and r.runtime.startswith("executorch") and r.threads == 1
    assert r.stats.iterations == 10 and 0 < r.stats.median_ms and r.load_ms is not None and r.load_ms > 0


def test_device_without_the_runtime(sshd: dict, artifact: Path) -> None:
    """The system python3 has no numpy/onnxruntime: the agent says so in one line."""
    system_python = "/usr/bin/python3"
    probe = (
        subprocess.run([system_python, "-c", "import numpy, onnxruntime"], capture_output=True)
        if os.path.exists(system_python)
        else None
    )
    if probe is None or probe.returncode == 0:
        pytest.skip("no python3 without onnxruntime on this machine to stand in for a bare device")
    with pytest.raises(EdgevitError, match="missing on the device|not installed"):
        runner(sshd, python=system_python).profile_agent(artifact, iterations=2, warmup=0)


def test_unknown_host_key_is_refused(sshd: dict, artifact: Path) -> None:
    with pytest.raises(EdgevitError, match="host key .* is not in .*ssh-keyscan"):
        runner(sshd, known_hosts="empty_known_hosts").profile_agent(artifact, iterations=2, warmup=0)


def test_refused_connection_is_one_line_error(sshd: dict, artifact: Path, capsys: pytest.CaptureFixture) -> None:
    dead = free_port()  # nothing listens there
    r = SshRunner(f"ssh://nobody@127.0.0.1:{dead}", known_hosts=sshd["dir"] / "known_hosts", connect_timeout=5)
    with pytest.raises(EdgevitError, match="connection refused"):
        r.profile_agent(artifact, iterations=2, warmup=0)
    # and through the CLI: one line on stderr, exit 2
    run_dir = artifact.parent / "run-refused"
    target_dir = run_dir / "exports" / "onnx" / "fp32"
    if not target_dir.exists():
        shutil.copytree(artifact, target_dir)
    rc = main(
        [
            "profile",
            str(run_dir),
            "--target",
            "onnx",
            "--device",
            f"ssh://nobody@127.0.0.1:{dead}",
            "--known-hosts",
            str(sshd["dir"] / "known_hosts"),
            "--connect-timeout",
            "5",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "connection refused" in err


def test_cli_profile_over_ssh(sshd: dict, artifact: Path, capsys: pytest.CaptureFixture) -> None:
    from edgevit.runs import Ledger

    run_dir = artifact.parent / "run-ssh"
    shutil.copytree(artifact, run_dir / "exports" / "onnx" / "fp32")
    d = sshd["dir"]
    rc = main(
        [
            "profile",
            str(run_dir),
            "--target",
            "onnx",
            "--device",
            sshd["url"],
            "--known-hosts",
            str(d / "known_hosts"),
            "--identity",
            str(d / "client_key"),
            "--remote-python",
            sys.executable,
            "--threads",
            "1",
            "--iterations",
            "10",
            "--warmup",
            "2",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = Ledger(run_dir.parent).profiles("run-ssh")
    assert rows and rows[-1]["device"].startswith("ssh://") and rows[-1]["median_ms"] > 0


def test_device_urls() -> None:
    assert SshDevice.parse("ssh://nvidia@jetson.local:2222") == SshDevice("jetson.local", "nvidia", 2222)
    assert SshDevice.parse("ssh://board").port == 22
    for bad in ("jetson.local", "ssh://", "ssh://-oProxyCommand=x", "ssh://a@b:99999", "http://a@b"):
        with pytest.raises(EdgevitError):
            SshDevice.parse(bad)


FAKE_TRTEXEC = """#!/bin/sh
# Stands in for the Jetson's trtexec: records how it was called, prints NVIDIA's real summary.
printf '%s\\n' "$0" "$@" > "{argv}"
cat "{summary}"
"""


def test_the_engine_profiled_over_ssh_is_the_engine_build_engine_sh_builds(sshd: dict, tmp_path: Path) -> None:
    """One trtexec command: the SSH profiler sends exactly the call the exported build_engine.sh holds
    (same precision flags, FP32 LayerNorm pins, workspace), run from the artifact's folder."""
    import shlex

    from test_profile_local import make_run

    from edgevit.export.pipeline import export_run

    run = make_run(tmp_path / "runs", "jetson-run")
    art = export_run(run, "jetson", "fp16", ledger=False).artifact
    tool = tmp_path / "trtexec"
    summary = Path(__file__).parent / "data" / "trtexec_trt10_summary.txt"
    tool.write_text(FAKE_TRTEXEC.format(argv=tmp_path / "argv.txt", summary=summary))
    tool.chmod(0o755)
    result = runner(sshd).profile_trtexec(art.directory, precision="fp16", iterations=200, tool=str(tool))
    sent = (tmp_path / "argv.txt").read_text().splitlines()
    shipped = shlex.split((art.directory / "build_engine.sh").read_text().strip().splitlines()[-1])
    assert sent[1:] == shipped[1:] and sent[0] == str(tool)  # the same call; only the tool's path is the device's
    assert "--fp16" in sent and any(a.startswith("--layerPrecisions=") and a.count(":fp32") == 5 for a in sent)
    assert result.stats.median_ms > 0 and result.runtime.startswith("tensorrt")


def test_compress_times_its_candidates_on_the_device(sshd: dict, tmp_path: Path) -> None:
    """The latency-budget search with the device over SSH: every candidate timed by the agent there."""
    pytest.importorskip("torch_pruning", reason="compress needs the [prune] extra")
    import json

    from conftest import train_tiny_student

    from edgevit.compress import compress
    from edgevit.compress.latency import CACHE_FILE
    from edgevit.profile.stage import Device

    extra = {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8}
    run = train_tiny_student(tmp_path / "runs" / "tiny", extra=extra, steps=50)
    d = sshd["dir"]
    device = Device(
        sshd["url"],
        known_hosts=str(d / "known_hosts"),
        identity=str(d / "client_key"),
        remote_python=sys.executable,
        connect_timeout=5,
        timeout=120,
    )
    s = compress(
        run,
        "onnx",
        1000,
        device=device,
        depths=[1.0],
        keeps=[1.0, 0.5],
        precisions=["fp32"],
        estimate_epochs=0,
        recover_epochs=0,
        recover_teacher="none",
        rounds=2,
        iterations=20,
        threads=1,
    )
    assert s["device"] == sshd["url"] and s["timed"] == 2
    pick = s["budgets"][0]["pick"]
    assert pick is not None and 0 < pick["remeasured_ms"] <= 1000
    cached = json.loads((run.parent / CACHE_FILE).read_text())
    assert len(cached) == 2 and all(key.startswith(sshd["url"]) for key in cached)
    assert all(e["runtime"] == "onnxruntime" for e in cached.values())
