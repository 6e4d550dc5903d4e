"""Profile on a remote device over SSH with the OpenSSH client.

Every step is one `ssh` subprocess given an argument list (never a local shell): make a temp
folder on the device, stream the artifact (model files + manifest) and this package's source
into it as a tar on stdin, run the device's own tool, read the numbers back, remove the folder.
Host-key checking stays on (StrictHostKeyChecking=yes, optionally against a known_hosts file
you pass), BatchMode=yes so nothing ever waits for a password, and every step has both ssh's
ConnectTimeout and a subprocess timeout. Failures become one-line EdgevitErrors that say which
step failed and what to do.

Two device tools:
- `agent`: `python3 -m edgevit.profile.agent` -- the local runners, on any Linux box with Python
  and the artifact's runtime (edgevit itself need not be installed: its source is shipped).
- `trtexec`: TensorRT on a Jetson builds an engine from the ONNX at the artifact's precision and
  times it; we parse its GPU compute time.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

from edgevit.errors import EdgevitError
from edgevit.profile.runners import ProfileResult
from edgevit.profile.trtexec import artifact_command, parse_trtexec, trtexec_stats

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the edgevit package folder
TRTEXEC_CANDIDATES = ("trtexec", "/usr/src/tensorrt/bin/trtexec")  # JetPack puts it off PATH


@dataclass(frozen=True)
class SshDevice:
    host: str
    user: str | None = None
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> "SshDevice":
        """`ssh://[user@]host[:port]` -> SshDevice."""
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/"):
            raise EdgevitError(f"bad device {url!r}: use local or ssh://user@host[:port]")
        try:
            port = parts.port or 22
        except ValueError:
            raise EdgevitError(f"bad device {url!r}: the port must be a number from 1 to 65535") from None
        if parts.hostname.startswith("-") or (parts.username or "").startswith("-"):
            raise EdgevitError(f"bad device {url!r}: host and user may not start with '-'")
        return cls(host=parts.hostname, user=parts.username, port=port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"ssh://{self.destination}:{self.port}"


def _classify(stderr: str, device: SshDevice, known_hosts: str | None) -> str | None:
    """ssh's own failure (exit 255) as one line that says what to do; None if not recognised."""
    kh = known_hosts or "~/.ssh/known_hosts"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return (
            f"the host key of {device.host}:{device.port} has CHANGED since it was stored in {kh}: "
            "if the device was reinstalled, remove the old key (ssh-keygen -R) after checking the new fingerprint"
        )
    if "Host key verification failed" in stderr or "host key is known" in stderr:
        return (
            f"the host key of {device.host}:{device.port} is not in {kh} (host-key checking is on): check its "
            f"fingerprint, then add it, e.g. ssh-keyscan -p {device.port} {device.host} >> {kh}"
        )
    if "Connection refused" in stderr:
        return f"cannot reach {device}: connection refused (is sshd running and listening on port {device.port}?)"
    if "Could not resolve hostname" in stderr:
        return f"cannot reach {device}: unknown host name '{device.host}'"
    if re.search(r"timed out|No route to host|Network is unreachable", stderr):
        return f"cannot reach {device}: {stderr.strip().splitlines()[-1]}"
    if "Permission denied" in stderr:
        return (
            f"{device} refused the login: key authentication failed for user "
            f"'{device.user or 'default'}' (give an identity file, or add your public key on the device)"
        )
    return None


class SshRunner:
    """Runs the profiling steps on one device. Every call is bounded by a timeout."""

    def __init__(
        self,
        device: SshDevice | str,
        *,
        known_hosts: str | Path | None = None,
        identity: str | Path | None = None,
        ssh_config: str | Path | None = None,
        connect_timeout: int = 10,
        timeout: float = 600.0,
        workdir: str = "/tmp",
        python: str = "python3",
        ssh: str = "ssh",
    ):
        self.device = SshDevice.parse(device) if isinstance(device, str) else device
        self.known_hosts = str(known_hosts) if known_hosts else None
        self.identity = str(identity) if identity else None
        self.ssh_config = str(ssh_config) if ssh_config else None
        self.connect_timeout = int(connect_timeout)
        self.timeout = float(timeout)
        self.workdir = workdir
        self.python = python
        self.ssh = ssh
        self._staged: dict[str, Any] | None = None  # inside staging(): the device's folder and what it holds
        if self.known_hosts and not Path(self.known_hosts).is_file():
            raise EdgevitError(f"known_hosts file {self.known_hosts} does not exist")
        if self.identity and not Path(self.identity).is_file():
            raise EdgevitError(f"identity file {self.identity} does not exist")

    # -------------------------------------------------------------------------------- plumbing
    def ssh_argv(self, remote: list[str]) -> list[str]:
        """The full local argv: ssh options, destination, then the remote command, shell-quoted for
        the remote shell (ssh hands the remote side one string)."""
        argv = [self.ssh]
        if self.ssh_config:
            argv += ["-F", self.ssh_config]
        argv += [
            "-T",
            "-p",
            str(self.device.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"ConnectTimeout={self.connect_timeout}",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if self.identity:
            argv += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        return argv + ["--", self.device.destination, shlex.join(remote)]

    def run(
        self,
        remote: list[str],
        step: str,
        *,
        stdin: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess:
        timeout = timeout or self.timeout
        try:
            proc = subprocess.run(self.ssh_argv(remote), input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise EdgevitError(
                f"the OpenSSH client '{self.ssh}' is not installed here (apt-get install openssh-client)"
            ) from None
        except subprocess.TimeoutExpired:
            raise EdgevitError(f"{step} on {self.device} timed out after {timeout:.0f} s") from None
        if proc.returncode == 255:
            err = proc.stderr.decode(errors="replace")
            raise EdgevitError(
                _classify(err, self.device, self.known_hosts)
                or f"{step} on {self.device} failed: ssh: {(err.strip().splitlines() or ['exit 255'])[-1]}"
            )
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise EdgevitError(
                f"{step} on {self.device} failed (exit {proc.returncode}): {err[-1] if err else 'no output'}"
            )
        return proc

    def make_tempdir(self) -> str:
        out = self.run(
            ["mktemp", "-d", f"{self.workdir.rstrip('/')}/edgevit-XXXXXXXX"],
            "creating a temp folder",
            timeout=self.connect_timeout + 30,
        )
        path = out.stdout.decode().strip()
        if not path.startswith("/"):
            raise EdgevitError(f"creating a temp folder on {self.device} returned {path!r}")
        return path

    def upload(self, remote_dir: str, trees: dict[str, Path]) -> None:
        """Copy local folders (name on the device -> local path) by streaming a tar into `tar -x`."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, path in trees.items():
                tar.add(str(path), arcname=name, filter=_skip_caches)
        self.run(["tar", "-xf", "-", "-C", remote_dir], "copying the artifact", stdin=buf.getvalue())

    def cleanup(self, remote_dir: str) -> None:
        """Best effort: a failed cleanup must not hide the result or the real error."""
        try:
            self.run(["rm", "-rf", "--", remote_dir], "cleaning up", timeout=self.connect_timeout + 30, check=False)
        except EdgevitError:
            pass

    @contextlib.contextmanager
    def staging(self) -> Iterator["SshRunner"]:
        """Within it the package and each artifact are copied to the device once, not per call (a
        search times every candidate in several rounds), and removed at the end."""
        self._staged = {"dir": self.make_tempdir(), "sent": {}}
        try:
            yield self
        finally:
            self.cleanup(self._staged["dir"])
            self._staged = None

    def _on_device(self, artifact_dir: Path) -> tuple[str, str, bool]:
        """(the device folder, the artifact's path there, whether the folder is this call's own)."""
        if self._staged is None:
            tmp = self.make_tempdir()
            self.upload(tmp, {"artifact": artifact_dir, "pkg/edgevit": PACKAGE_ROOT})
            return tmp, f"{tmp}/artifact", True
        tmp, sent = self._staged["dir"], self._staged["sent"]
        key = str(artifact_dir.resolve())
        if key not in sent:
            name = f"artifact-{len(sent)}"
            self.upload(tmp, {name: artifact_dir, **({} if sent else {"pkg/edgevit": PACKAGE_ROOT})})
            sent[key] = f"{tmp}/{name}"
        return tmp, sent[key], False

    # -------------------------------------------------------------------------------- tools
    def profile_agent(
        self,
        artifact_dir: str | Path,
        *,
        threads: int | None = None,
        batch: int | None = None,
        iterations: int = 100,
        warmup: int = 10,
        options: dict[str, Any] | None = None,
    ) -> ProfileResult:
        """Run `python -m edgevit.profile.agent` on the device against a copy of the artifact."""
        tmp, remote_artifact, own = self._on_device(Path(artifact_dir))
        try:
            remote = [
                "env",
                f"PYTHONPATH={tmp}/pkg",
                "OMP_WAIT_POLICY=PASSIVE",
                self.python,
                "-m",
                "edgevit.profile.agent",
                remote_artifact,
                "--iterations",
                str(iterations),
                "--warmup",
                str(warmup),
            ]
            if threads:
                remote += ["--threads", str(threads)]
            if batch:
                remote += ["--batch", str(batch)]
            for key, value in (options or {}).items():
                remote += ["--option", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
            proc = self.run(remote, "running the agent", check=False)
        finally:
            if own:
                self.cleanup(tmp)
        out = proc.stdout.decode(errors="replace").strip().splitlines()
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        if proc.returncode == 127 or (not out and any("not found" in e for e in err)):
            raise EdgevitError(f"{self.device} has no '{self.python}' (set remote_python to its path)", "remote_python")
        try:
            reply = json.loads(out[-1])
        except (IndexError, json.JSONDecodeError):
            raise EdgevitError(
                f"the agent on {self.device} failed (exit {proc.returncode}): {err[-1] if err else 'no output'}"
            ) from None
        if not reply.get("ok"):
            raise EdgevitError(f"on {self.device}: {reply.get('error', 'the agent failed')}")
        result = ProfileResult.from_dict(reply["result"])
        result.device = f"{self.device} ({result.device.removeprefix('local ').strip('()')})"
        return result

    def find_trtexec(self, tool: str | None = None) -> str:
        candidates = [tool] if tool else list(TRTEXEC_CANDIDATES)
        for c in candidates:
            proc = self.run(
                ["sh", "-c", 'command -v "$1"', "sh", c],
                "looking for trtexec",
                timeout=self.connect_timeout + 30,
                check=False,
            )
            if proc.returncode == 0 and proc.stdout.strip():
                return proc.stdout.decode().strip().splitlines()[0]
        raise EdgevitError(
            f"{self.device} has no trtexec (looked for {', '.join(candidates)}): "
            "install TensorRT (JetPack) or set remote_tool to its path",
            "remote_tool",
        )

    def profile_trtexec(
        self,
        artifact_dir: str | Path,
        *,
        precision: str,
        iterations: int = 200,
        batch: int = 1,
        tool: str | None = None,
    ) -> ProfileResult:
        """Build the artifact's TensorRT engine on the device with the exact command its build_engine.sh
        holds (edgevit.profile.trtexec.artifact_command), from a copy of the artifact folder, and time it."""
        from edgevit.profile.runners import load_artifact

        artifact = load_artifact(artifact_dir)
        trtexec = self.find_trtexec(tool)
        argv = artifact_command(artifact.manifest, trtexec, iterations)
        tmp = self.make_tempdir()
        try:
            self.upload(tmp, {"artifact": Path(artifact_dir)})
            remote = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", f"{tmp}/artifact", *argv]
            proc = self.run(remote, "building and timing the TensorRT engine", check=False)
        finally:
            self.cleanup(tmp)
        text = proc.stdout.decode(errors="replace") + "\n" + proc.stderr.decode(errors="replace")
        parsed = parse_trtexec(text)
        return ProfileResult(
            runtime=f"tensorrt {parsed.get('tensorrt_version', '')} (trtexec)".replace("  ", " "),
            format=artifact.format,
            precision=precision,
            device=str(self.device),
            threads=None,
            batch=batch,
            input_shape=list(artifact.input_shape),
            stats=trtexec_stats(parsed, batch),
            peak_mem_mb=None,
            extra={"trtexec": parsed, "command": argv, "metric": "GPU Compute Time (kernels only)"},
        )


def _skip_caches(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    name = Path(info.name).name
    return None if name in ("__pycache__",) or name.endswith(".pyc") else info
