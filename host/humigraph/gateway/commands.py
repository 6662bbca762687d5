"""``humigraph gateway``: runs the gateway in the foreground until Ctrl-C or SIGTERM.

Settings come from ``--config FILE`` (TOML, see :mod:`humigraph.gateway.config`) and flags; a
flag given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import HumigraphError
from . import config as cfgmod
from . import store as st
from .config import DEFAULT_DB, GatewayConfig

__all__ = ["DEFAULT_DB", "add_arguments", "main", "register", "run"]

# argparse dest -> config key. Every flag defaults to None: "not given", so the file's value stays.
FLAG_KEYS = {
    "broker": "broker.url",
    "user": "broker.username",
    "password_file": "broker.password_file",
    "client_id": "broker.client_id",
    "tls_ca": "broker.tls.ca",
    "tls_cert": "broker.tls.cert",
    "tls_key": "broker.tls.key",
    "db": "db",
    "data_dir": "data_dir",
    "http": "http",
    "prefix": "prefix",
    "sites": "sites",
    "model": "model.path",
    "infer_interval": "model.infer_interval",
    "batch_max": "ingest.batch_max",
    "batch_wait": "ingest.batch_wait",
    "flood_factor": "flood.factor",
    "flood_rate": "flood.rate",
    "flood_burst": "flood.burst",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "gateway",
        help="store every reading from the boards (MQTT -> SQLite/PostgreSQL) and serve the HTTP API",
        description=(
            "Subscribes to <prefix>/+/+/state|status|meta with a persistent QoS 1 session, "
            "stores each reading once (acknowledged only after it is committed, in SQLite or "
            "PostgreSQL), quarantines invalid messages, runs the INT8 model over each site "
            "(forecast, health and insight topics), raises graded alerts, and serves the "
            "dashboard at /, the JSON API under /api, /healthz and /metrics. Settings come from "
            "--config FILE (TOML) and the flags below; a flag wins over the file."
        ),
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    def opt(*names: str, default_key: str | None = None, **kw: Any) -> None:
        if default_key is not None:
            key = cfgmod.SCHEMA_BY_NAME[default_key]
            kw["help"] = f"{kw.get('help', key.help)} (default: {key.default})"
        p.add_argument(*names, default=None, **kw)

    p.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the configuration (file and flags), print it and exit",
    )
    opt("--broker", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS)")
    opt("--db", help=f"sqlite:///relative/path, sqlite:////absolute/path or postgresql://... "
        f"(default: {DEFAULT_DB}, or DATA_DIR/gateway.db)")  # fmt: skip
    opt("--data-dir", metavar="DIR", help="where the default SQLite database lives")
    opt("--http", default_key="http", help="HTTP API address HOST:PORT, or 'off'")
    opt("--prefix", default_key="prefix", help="MQTT topic prefix")
    opt(
        "--client-id",
        default_key="broker.client_id",
        help="MQTT client id: the broker keeps this id's session while the gateway is down",
    )
    opt(
        "--site",
        action="append",
        dest="sites",
        metavar="SITE",
        help="accept only these sites (repeatable; default: any site)",
    )
    opt(
        "--model",
        metavar="PATH",
        help="the INT8 reasoning model (.tflite with its card beside it; default: "
        "models/humigraph-int8.tflite of this checkout when it exists); reloaded when it changes",
    )
    opt("--infer-interval", type=float, metavar="S",
        help="seconds between inferences per site (default: the model card's step_s)")  # fmt: skip
    opt("--user", help="MQTT username (the broker's password_file login)")
    opt(
        "--password-file",
        metavar="FILE",
        help="file holding the MQTT password (or set HUMIGRAPH_MQTT_PASSWORD)",
    )
    opt("--tls-ca", metavar="FILE", help="CA certificate of the broker (turns TLS on)")
    opt("--tls-cert", metavar="FILE", help="client certificate (PEM), with --tls-key")
    opt("--tls-key", metavar="FILE", help="client private key (PEM), with --tls-cert")
    opt("--batch-wait", type=float, metavar="S", default_key="ingest.batch_wait",
        help="longest wait to fill a batch before committing, seconds")  # fmt: skip
    opt("--batch-max", type=int, metavar="N", default_key="ingest.batch_max",
        help="most messages per transaction")  # fmt: skip
    opt("--flood-factor", type=float, metavar="X", default_key="flood.factor")
    opt("--flood-rate", type=float, metavar="R", default_key="flood.rate")
    opt("--flood-burst", type=int, metavar="N", default_key="flood.burst")


def load_config(args: argparse.Namespace) -> GatewayConfig:
    """The file named by ``--config`` (if any) with the flags given on top."""
    overrides = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
    return cfgmod.load(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from .service import Gateway

    cfg = load_config(args)
    if getattr(args, "check", False):
        print(describe(cfg))
        return 0
    kwargs = cfg.gateway_kwargs()
    if kwargs.get("model") is None:
        from .reasoner import default_model

        kwargs["model"] = default_model()
    gw = Gateway(cfg.broker_url, cfg.db, **kwargs)
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        gw.start()
        addr = gw.http_address
        model = gw.reasoner.model_info() if gw.reasoner else None
        print(
            f"humigraph gateway: {cfg.broker_url} -> {gw.db_url}"
            + (f", http://{addr[0]}:{addr[1]}" if addr else "")
            + (f", model {model['id']} ({model['backend']})" if model else ", no model"),
            flush=True,
        )
        while not done.wait(1.0):
            pass
    finally:
        gw.stop()
        for s, h in old.items():
            signal.signal(s, h)
    return 0


def describe(cfg: GatewayConfig) -> str:
    """The effective configuration, one ``key = value`` a line (the password hidden)."""
    lines = [f"# humigraph gateway: configuration OK ({cfg.source or 'flags only'})"]
    for key in cfgmod.SCHEMA:
        value = getattr(cfg, key.attr)
        if key.name == "broker.password" and value is not None:
            value = "***"
        if key.name == "db":
            value = str(st.parse_db(value))
        lines.append(f"{key.name} = {value if not isinstance(value, Path) else str(value)!r}")
    return "\n".join(lines)


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
