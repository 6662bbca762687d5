"""The ``humigraph`` command: thin argparse wrappers over the library API.

Every library error is a :class:`~humigraph.errors.HumigraphError`; it is turned into one line on
stderr and an exit code here, and nowhere else.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from . import __version__
from .errors import HumigraphError

# Each command module exposes ``register(subparsers)``; imported lazily so that ``humigraph --help``
# and the edge commands never pay for (or require) the board or training dependencies.
_COMMAND_MODULES = (
    "humigraph.board.commands",
    "humigraph.board.flash_commands",
    "humigraph.world.commands",
    "humigraph.gateway.commands",
    "humigraph.demo",
    "humigraph.bench",
    "humigraph.model.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="humigraph",
        description="humigraph: DHT sensors on ESP32 boards, an edge gateway and a site reasoning model.",
    )
    parser.add_argument("--version", action="version", version=f"humigraph {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int | None] = args.func
    try:
        return int(func(args) or 0)
    except HumigraphError as e:
        print(f"humigraph {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"humigraph {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
