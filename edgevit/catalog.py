"""`edgevit recipes` and `edgevit targets`: what ships, one line each."""

from __future__ import annotations

import argparse

from edgevit.config import Recipe, list_recipes, list_targets


def add_recipes_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--paths", action="store_true", help="show each file's path")


add_targets_arguments = add_recipes_arguments


def run_recipes(a: argparse.Namespace) -> int:
    rows = list_recipes()
    for name, path, r in rows:
        where = f"  [{path}]" if a.paths else ""
        if isinstance(r, Recipe):
            t = "+".join(r.teacher.names) if r.distill.type != "none" else "-"
            print(
                f"{name:<28} {r.student.name} <- {t} ({r.distill.type}), {r.data.spec} @ {r.data.img_size}px, "
                f"{r.epochs} ep: {r.description}{where}"
            )
        else:
            print(f"{name:<28} INVALID: {r}")
    return 0 if all(isinstance(r, Recipe) for _, _, r in rows) else 2


def run_targets(a: argparse.Namespace) -> int:
    rows = list_targets()
    print(f"{'target':<16} {'format':<9} {'precision':<9} {'precisions':<20} {'device':<7} hardware")
    for name, path, t in rows:
        if isinstance(t, str):
            print(f"{name:<16} INVALID: {t}")
            continue
        where = f"ssh {t.device.host}" if t.device.kind == "ssh" else "local"
        alias = f" (aliases: {', '.join(t.aliases)})" if t.aliases else ""
        print(
            f"{name:<16} {t.format:<9} {t.precision:<9} {','.join(t.precisions):<20} {where:<7} "
            f"{t.device_name}{alias}" + (f"  [{path}]" if a.paths else "")
        )
    return 0 if all(not isinstance(t, str) for _, _, t in rows) else 2
