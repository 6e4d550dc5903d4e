"""The device-side agent: `python -m edgevit.profile.agent ARTIFACT_DIR [--threads N ...]`.

Runs the local runners on whatever Linux machine it is started on and prints one JSON object on
stdout (progress and runtime chatter go to stderr), so the SSH runner can read the numbers back
without parsing prose. Exit 0 with {"ok": true, "result": {...}}; exit 3 with {"ok": false,
"error": "..."} when the artifact or its runtime is missing there.

It needs only the Python standard library, numpy and the artifact's runtime: the SSH runner ships
this package's source next to the artifact, so edgevit need not be installed on the device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_FAILED = 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgevit.profile.agent", description=__doc__.splitlines()[0])
    p.add_argument("artifact", help="folder with the exported model and its manifest.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="runtime option passed to open_predictor (repeatable)",
    )
    p.add_argument("--check", action="store_true", help="only report whether the runtime is available")
    return p


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from edgevit.errors import EdgevitError
    except ImportError as exc:  # pragma: no cover - the shipped source is incomplete
        print(json.dumps({"ok": False, "error": f"edgevit source not importable on the device: {exc}"}))
        return EXIT_FAILED
    try:
        from edgevit.profile.runners import check_runtime, load_artifact, profile_artifact

        artifact = load_artifact(args.artifact)
        check_runtime(artifact.format)
        if args.check:
            print(json.dumps({"ok": True, "format": artifact.format}))
            return 0
        options = dict(kv.split("=", 1) for kv in args.option)
        result = profile_artifact(
            artifact,
            threads=args.threads,
            batch=args.batch,
            iterations=args.iterations,
            warmup=args.warmup,
            options={k: _value(v) for k, v in options.items()},
        )
    except EdgevitError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        return EXIT_FAILED
    except ModuleNotFoundError as exc:
        print(json.dumps({"ok": False, "error": f"python package '{exc.name}' is missing on the device"}))
        return EXIT_FAILED
    result.extra["python"] = sys.version.split()[0]
    print(json.dumps({"ok": True, "result": result.to_dict()}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
