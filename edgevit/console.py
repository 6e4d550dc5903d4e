"""What the CLI draws: rich progress bars for the stages' `progress` hook. Only command modules import it."""

from __future__ import annotations

import contextlib
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
