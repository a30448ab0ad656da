"""The ``duoseg`` command line (DESIGN section 7).

Bad input ends with a one-line ``duoseg: error: ...`` on stderr and exit status 2;
``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence

from .components import KINDS
from .errors import DuosegError
from .registry import load_plugins

EXIT_BAD_INPUT = 2

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duoseg", description="Full-resolution two-stage U-Net segmentation of 3D volumes."
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    plugins = commands.add_parser("plugins", help="list the components every plugin supplies")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    plugins.set_defaults(run=_plugins)
    return parser


def _plugins(args: argparse.Namespace) -> int:
    registry = load_plugins()
    rows = [registry.describe(kind, name) for kind in KINDS for name in registry.names(kind)]
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    widths = [max([len(h), *(len(getattr(r, h)) for r in rows)]) for h in ("kind", "name")]
    for row in rows:
        source = f"[{row.distribution} {row.version}]"
        print(f"{row.kind:<{widths[0]}}  {row.name:<{widths[1]}}  {row.summary}  {source}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Command = args.run
    try:
        return run(args)
    except DuosegError as exc:
        if args.verbose:
            traceback.print_exc()
        message = " ".join(str(exc).split())
        print(f"duoseg: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
