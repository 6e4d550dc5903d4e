"""The `edgevit` command. Each subcommand lives with its stage and is imported only when used,
so `edgevit --help` stays fast. A problem the user can fix prints one line and exits 2."""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import signal
import sys
import threading
from typing import Callable

from edgevit import __version__, openmp
from edgevit.console import install_log_handler
from edgevit.errors import EdgevitError

# name -> (module, one-line help). The module has add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "distill": ("edgevit.distill.command", "train a small student from a teacher (DeiT distillation)"),
    "prune": (
        "edgevit.prune.command",
        "prune a distilled student (heads, widths, channels) and recover it by distillation",
    ),
    "compress": (
        "edgevit.compress.command",
        "the most accurate pruned x precision student within a latency budget measured on the target",
    ),
    "export": ("edgevit.export.command", "export a run's student for a hardware target and verify it"),
    "quantize": (
        "edgevit.quantize.command",
        "INT8 for a target within an accuracy drop: ptq, tune (float fallback) or qat",
    ),
    "profile": ("edgevit.profile.command", "measure an exported model's latency in its runtime, here or over SSH"),
    "benchmark": (
        "edgevit.profile.benchmark_command",
        "export + verify + time every target; name what to ship on each",
    ),
    "report": ("edgevit.report.command", "the runs ledger as an HTML report: tables, accuracy-vs-latency plots"),
    "recipes": ("edgevit.catalog", "list the shipped training recipes"),
    "targets": ("edgevit.catalog", "list the shipped hardware targets"),
}


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(
        prog="edgevit",
        description="Distil a small vision transformer from a CNN teacher, export it per edge target, "
        "verify it and profile it on the device.",
    )
    parser.add_argument("--version", action="version", version=f"edgevit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    runners: dict[str, Callable[[argparse.Namespace], int]] = {}
    wanted = _command_in(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != wanted:  # import only the module of the command being run
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise EdgevitError(f"'edgevit {name}' needs the package '{exc.name}': pip install -e '.[all]'") from None
        getattr(module, f"add_{name}_arguments", getattr(module, "add_arguments", lambda _p: None))(p)
        runners[name] = getattr(module, f"run_{name}", getattr(module, "run", None))
    return parser, runners


def _as_flag(exc: EdgevitError, parser: argparse.ArgumentParser | None, command: str | None) -> str:
    """The core names its parameters (`lr must be ...`); a CLI user typed flags: say `--lr` instead."""
    message = str(exc)
    if not (exc.params and parser and command):
        return message
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    cmd = sub.choices.get(command) if sub else None
    flags = {a.dest: a.option_strings[0] for a in (cmd._actions if cmd else []) if a.option_strings}
    for param in exc.params:
        flag = next((flags[d] for d in _dests(param) if d in flags), None)
        if flag:
            message = re.sub(rf"(?<![\w.-]){re.escape(param)}\b", flag, message, count=1)
    return message


def _dests(param: str) -> list[str]:
    """argparse dests a parameter may go by: runs_dir is --runs, data.img_size --img-size,
    teacher.checkpoints --teacher-checkpoint, teacher.names --teacher."""
    first, _, last = param.rpartition(".")
    dest = param.replace(".", "_")
    one = last.removesuffix("s")
    return [d for d in (dest, dest.removesuffix("_dir"), last, first and f"{first}_{one}", one, first) if d]


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a `kill` or a scheduler's stop unwinds like Ctrl-C: checkpoints kept, run marked failed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wait_policy = openmp.set_wait_policy(_command_in(argv))  # before a command's module loads torch
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    parser, command = None, None
    try:
        parser, runners = _parser(argv)
        args = parser.parse_args(argv)
        command = args.command
        if not args.command:
            parser.print_help()
            return 0
        install_log_handler()
        logging.getLogger("edgevit.openmp").debug(wait_policy)  # distill prints it once its inputs are valid
        return int(runners[args.command](args) or 0)
    except EdgevitError as exc:
        print(f"edgevit: error: {_as_flag(exc, parser, command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgevit: interrupted; finished checkpoints are kept (resume with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
