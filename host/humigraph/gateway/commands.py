"""``humigraph gateway``: runs the gateway in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import HumigraphError, UsageError

DEFAULT_DB = "sqlite:///humigraph-gateway.db"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="store every reading from the boards (MQTT -> SQLite) and serve the HTTP API",
        description=(
            "Subscribes to <prefix>/+/+/state|status|meta with a persistent QoS 1 session, "
            "stores each reading once (acknowledged only after it is committed), quarantines "
            "invalid messages, and serves /healthz, /api/devices, /api/readings and /metrics."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="mqtt://HOST[:PORT]")
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        help="sqlite:///relative/path or sqlite:////absolute/path (default: %(default)s)",
    )
    p.add_argument(
        "--http", default="127.0.0.1:8080", help="HTTP API address, or 'off' (default: %(default)s)"
    )
    p.add_argument("--prefix", default="humigraph", help="MQTT topic prefix (default: %(default)s)")
    p.add_argument(
        "--client-id",
        default="humigraph-gateway",
        help="MQTT client id: the broker keeps this id's session while the gateway is down",
    )
    p.add_argument(
        "--site",
        action="append",
        dest="sites",
        metavar="SITE",
        help="accept only these sites (repeatable; default: any site)",
    )
    p.add_argument("--user", help="MQTT username (the broker's password_file login)")
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the MQTT password (or set HUMIGRAPH_MQTT_PASSWORD)",
    )
    p.add_argument(
        "--batch-wait",
        type=float,
        default=0.02,
        metavar="S",
        help="longest wait to fill a batch before committing (default: %(default)s s)",
    )
    p.add_argument(
        "--batch-max",
        type=int,
        default=1000,
        metavar="N",
        help="most messages per transaction (default: %(default)s)",
    )


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file:
        try:
            return Path(args.password_file).read_text().strip()
        except OSError as e:
            raise UsageError(f"password-file: cannot read {args.password_file}: {e}") from e
    return os.environ.get("HUMIGRAPH_MQTT_PASSWORD")


def run(args: argparse.Namespace) -> int:
    from .service import Gateway

    password = _password(args)
    if password is not None and not args.user:
        raise UsageError("user: a password was given without --user")
    gw = Gateway(
        args.broker,
        args.db,
        http=None if args.http == "off" else args.http,
        prefix=args.prefix,
        client_id=args.client_id,
        sites=args.sites,
        batch_max=args.batch_max,
        batch_wait=args.batch_wait,
        username=args.user,
        password=password,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        gw.start()
        addr = gw.http_address
        print(
            f"humigraph gateway: {args.broker} -> {gw.db_path}"
            + (f", http://{addr[0]}:{addr[1]}" if addr else ""),
            flush=True,
        )
        while not done.wait(1.0):
            pass
    finally:
        gw.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m humigraph.gateway ...`` (same options as ``humigraph gateway``)."""
    parser = argparse.ArgumentParser(prog="humigraph gateway")
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
    )
    try:
        return run(args)
    except HumigraphError as e:
        print(f"humigraph gateway: error: {e}", file=sys.stderr)
        return e.exit_code
