"""``humigraph flash`` and ``humigraph console``: argparse wrappers over board.flash and
board.console."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]

CHIPS = (
    "auto",
    "esp32",
    "esp32s2",
    "esp32s3",
    "esp32c3",
    "esp32c6",
    "esp32c2",
    "esp32c5",
    "esp32p4",
)


def register(subparsers: Any) -> None:
    f = subparsers.add_parser(
        "flash",
        help="write MicroPython and the humigraph app to an ESP32 over USB",
        description=(
            "Find the board, identify the chip, write the MicroPython image (--firmware), compile "
            "and upload the app (only files that changed), write config.json (--config), reset the "
            "board and open the console. Writing the image itself needs a real board."
        ),
    )
    f.add_argument("--port", metavar="PORT", help="serial port (default: the one ESP32 plugged in)")
    f.add_argument("--chip", default="auto", choices=CHIPS, help="expected chip (default auto)")
    f.add_argument("--firmware", type=Path, metavar="BIN", help="MicroPython image to write (.bin)")
    f.add_argument(
        "--config", type=Path, metavar="FILE", help="device config (config.json) to upload"
    )
    f.add_argument(
        "--download",
        action="store_true",
        help="fetch the newest official MicroPython image for the chip (cached with its SHA-256)",
    )
    f.add_argument("--erase", action="store_true", help="erase the whole flash first")
    f.add_argument(
        "--dry-run",
        action="store_true",
        help="print every esptool and mpremote step; touch nothing",
    )
    f.add_argument("--no-console", action="store_true", help="do not open the console at the end")
    f.add_argument("--no-app", action="store_true", help="only write the image, not the app")
    f.set_defaults(func=_flash)

    c = subparsers.add_parser(
        "console",
        help="serial console of a board (timestamps, colours, filters, reconnects)",
        description=(
            "Serial console. Keys: Ctrl-] quits, Ctrl-T R resets the board, Ctrl-T H lists the "
            "keys, Ctrl-C goes to the board (stops the app: REPL helpers status(), read(), "
            "setkey(), start())."
        ),
    )
    c.add_argument("--port", metavar="PORT", help="serial port (default: the one ESP32 plugged in)")
    c.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    c.add_argument("--log", type=Path, metavar="FILE", help="append every line to FILE")
    c.add_argument(
        "--level",
        default="debug",
        choices=("debug", "info", "warning", "error"),
        help="hide log lines below this level",
    )
    c.add_argument("--grep", metavar="REGEX", help="show only lines matching REGEX")
    c.add_argument("--reset", action="store_true", help="reset the board on open (EN via RTS)")
    c.add_argument("--no-color", action="store_true", help="no ANSI colours")
    c.set_defaults(func=_console)


def _flash(args: argparse.Namespace) -> int:
    from . import flash

    port = flash.flash(
        args.port,
        chip=args.chip,
        firmware=args.firmware,
        config_path=args.config,
        erase=args.erase,
        download=args.download,
        dry_run=args.dry_run,
        app=not args.no_app,
    )
    if args.dry_run or args.no_console:
        return 0
    from .console import Console

    print(f"==> console on {port} (Ctrl-] to quit, Ctrl-T H for keys)", flush=True)
    return Console(port).run()


def _console(args: argparse.Namespace) -> int:
    from .console import Console
    from .flash import select_port

    console = Console(
        select_port(args.port),
        baud=args.baud,
        reset=args.reset,
        level=args.level,
        grep=args.grep,
        log=args.log,
        color=False if args.no_color else None,
    )
    return console.run()
