"""What the CLI draws: the stages' log lines on stderr and rich progress bars for their `progress` hook.
Only the CLI and command modules import it; the core logs through `logging` and knows nothing of this."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int], Callable[..., None]]]:
    """Rich progress bars with loss, accuracy and images/s; plain text when not on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f} acc {task.fields[acc]:.1f}% {task.fields[ips]:.0f} img/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, transient=True, disable=not sys.stderr.isatty()) as bar:

        def start(desc: str, total: int) -> Callable[..., None]:
            task = bar.add_task(desc, total=total, loss=0.0, acc=0.0, ips=0.0)
            return lambda done, **fields: bar.update(task, completed=done, **fields)

        yield start


@contextlib.contextmanager
def converter_output_on_stderr() -> Iterator[None]:
    """Converters (coremltools, LiteRT, OpenVINO, ExecuTorch) print progress on stdout: send it to stderr
    while a stage runs, so stdout holds only the command's own table."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def install_log_handler(level: int = logging.INFO) -> None:
    """The core's `edgevit.*` loggers printed on stderr (stdout stays for the command's table), once."""
    root = logging.getLogger("edgevit")
    if any(getattr(h, "_edgevit_cli", False) for h in root.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler._edgevit_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (a redirected or captured stderr included)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)  # type: ignore[assignment]
