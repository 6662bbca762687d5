"""The gateway's configuration: one declarative schema, read from TOML, overridden by flags.

``humigraph gateway --config /etc/humigraph/gateway.toml [--flag ...]``: the file gives the
values, every flag given on the command line wins over the file, and anything not given takes
the default in :data:`SCHEMA`. Everything is checked before the gateway starts; an error names the
key (``broker.tls.ca``) and says what is expected. Unknown keys are refused, so a typo never
silently falls back to a default. ``[alerts]`` is passed through as a table to the alert engine,
which validates its own keys.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6): the same parser, from PyPI
    import tomli as tomllib

DEFAULT_DB = "sqlite:///humigraph-gateway.db"


@dataclass(frozen=True)
class Key:
    """One configuration key: its dotted name in the file, the flag that overrides it, its type."""

    name: str  # dotted TOML path, also the GatewayConfig attribute with dots -> underscores
    kind: str  # str | int | float | bool | path | list[str] | table
    default: Any
    help: str
    flag: str | None = None  # the command-line option overriding it
    lo: float | None = None  # numeric bounds (inclusive)
    hi: float | None = None

    @property
    def attr(self) -> str:
        return self.name.replace(".", "_")


# The one schema: the file's keys, their flags, types, bounds and defaults.
SCHEMA: tuple[Key, ...] = (
    Key("broker.url", "str", None, "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", "--broker"),
    Key("broker.username", "str", None, "MQTT login (the broker's password_file)", "--user"),
    Key("broker.password", "str", None, "MQTT password (prefer password_file)"),
    Key("broker.password_file", "path", None, "file holding the MQTT password", "--password-file"),
    Key("broker.client_id", "str", "humigraph-gateway", "MQTT client id of the persistent session",
        "--client-id"),
    Key("broker.tls.ca", "path", None, "CA certificate that signed the broker's certificate",
        "--tls-ca"),
    Key("broker.tls.cert", "path", None, "client certificate (PEM), with broker.tls.key",
        "--tls-cert"),
    Key("broker.tls.key", "path", None, "client private key (PEM), with broker.tls.cert",
        "--tls-key"),
    Key("db", "str", None, "sqlite:///PATH, sqlite:////ABS/PATH or postgresql://...", "--db"),
    Key("data_dir", "path", None, "where the default SQLite database lives", "--data-dir"),
    Key("http", "str", "127.0.0.1:8080", "HTTP API address HOST:PORT, or 'off'", "--http"),
    Key("prefix", "str", "humigraph", "MQTT topic prefix", "--prefix"),
    Key("sites", "list[str]", None, "accept only these sites (default: any)", "--site"),
    Key("model.path", "path", None, "the INT8 reasoning model (.tflite, card beside it)",
        "--model"),
    Key("model.infer_interval", "float", None,
        "seconds between inferences per site (default: the model card's step)",
        "--infer-interval", 0.1, 86400),
    Key("ingest.batch_max", "int", 5000, "most messages per transaction", "--batch-max", 1, 100_000),
    Key("ingest.batch_wait", "float", 0.02, "longest wait (s) to fill a batch", "--batch-wait",
        0, 10),
    Key("flood.factor", "float", 10.0,
        "a board may publish this many times faster than its meta interval", "--flood-factor",
        0, 1e6),
    Key("flood.rate", "float", 5.0,
        "messages/s allowed per board whose interval is unknown; 0 turns the limit off",
        "--flood-rate", 0, 1e6),
    Key("flood.burst", "int", 100, "messages a board may send at once above its rate",
        "--flood-burst", 1, 1_000_000),
    Key("alerts", "table", None, "alert thresholds, read by the alert engine"),
)  # fmt: skip

SCHEMA_BY_NAME = {k.name: k for k in SCHEMA}
_TABLES = {".".join(k.name.split(".")[:i]) for k in SCHEMA for i in range(1, k.name.count(".") + 1)}


@dataclass
class GatewayConfig:
    """Every setting of the gateway, validated; paths are absolute."""

    broker_url: str = ""
    broker_username: str | None = None
    broker_password: str | None = None
    broker_password_file: Path | None = None
    broker_client_id: str = "humigraph-gateway"
    broker_tls_ca: Path | None = None
    broker_tls_cert: Path | None = None
    broker_tls_key: Path | None = None
    db: str = DEFAULT_DB
    data_dir: Path | None = None
    http: str | None = "127.0.0.1:8080"
    prefix: str = "humigraph"
    sites: list[str] | None = None
    model_path: Path | None = None
    model_infer_interval: float | None = None
    ingest_batch_max: int = 5000
    ingest_batch_wait: float = 0.02
    flood_factor: float = 10.0
    flood_rate: float = 5.0
    flood_burst: int = 100
    alerts: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None  # the file it was read from

    @property
    def tls(self) -> bool:
        return self.broker_url.startswith("mqtts://") or self.broker_tls_ca is not None

    def gateway_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :class:`~humigraph.gateway.service.Gateway`."""
        return {
            "http": self.http,
            "prefix": self.prefix,
            "client_id": self.broker_client_id,
            "sites": self.sites,
            "batch_max": self.ingest_batch_max,
            "batch_wait": self.ingest_batch_wait,
            "username": self.broker_username,
            "password": self.broker_password,
            "tls": self.tls,
            "tls_ca": self.broker_tls_ca,
            "tls_cert": self.broker_tls_cert,
            "tls_key": self.broker_tls_key,
            "flood_factor": self.flood_factor,
            "flood_rate": self.flood_rate,
            "flood_burst": self.flood_burst,
            "model": self.model_path,
            "infer_interval": self.model_infer_interval,
            "alerts": self.alerts,
        }


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if name in SCHEMA_BY_NAME:
            out[name] = v
        elif isinstance(v, dict) and name in _TABLES:
            out.update(_flatten(v, name + "."))
        else:
            known = ", ".join(sorted(n for n in SCHEMA_BY_NAME if n.startswith(prefix)))
            hint = ""
            if prefix and (k in SCHEMA_BY_NAME or k in _TABLES):
                hint = f" ({k!r} is a top-level key: top-level keys go before the first [table])"
            raise UsageError(
                f"config: unknown key {name!r}{hint}: remove it or use one of: {known or 'none'}"
            )
    return out


def read_file(path: Path) -> dict[str, Any]:
    """The TOML file -> ``{dotted key: raw value}``, unknown keys refused."""
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UsageError(f"config: cannot read {path}: {e.strerror or e}") from e
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config: {path} is not valid TOML: {e}") from e
    return _flatten(data)


def _check(key: Key, value: Any, base: Path | None) -> Any:
    """One raw value -> its typed value, or a UsageError naming the key and what it expects."""
    where = f"config: {key.name}"

    def want(what: str) -> UsageError:
        return UsageError(f"{where}: expected {what} ({key.help}), got {value!r}")

    if key.kind in ("str", "path"):
        if not isinstance(value, str) or not value:
            raise want("a non-empty string")
        if key.kind == "path":
            p = Path(value).expanduser()
            return p if p.is_absolute() or base is None else (base / p)
        return value
    if key.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise want("an integer")
    elif key.kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise want("a number")
        value = float(value)
    elif key.kind == "list[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise want('a list of strings like ["home"]')
        return list(value)
    elif key.kind == "table":
        if not isinstance(value, dict):
            raise want("a table")
        return dict(value)
    if key.lo is not None and key.hi is not None and not key.lo <= value <= key.hi:
        raise UsageError(f"{where}: expected {key.lo:g} to {key.hi:g} ({key.help}), got {value!r}")
    return value


def load(
    path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """Reads ``path`` (if any), applies ``overrides`` (dotted key -> value, from the flags; None
    means not given), checks everything and returns the config.

    Relative paths in the file are relative to the file's directory; those given as flags, to the
    current directory. ``HUMIGRAPH_MQTT_PASSWORD`` in ``env`` supplies a password when neither
    broker.password nor broker.password_file is set.
    """
    env = os.environ if env is None else env
    raw: dict[str, tuple[Any, Path | None]] = {}
    source = Path(path) if path is not None else None
    if source is not None:
        base = source.resolve().parent
        raw.update({k: (v, base) for k, v in read_file(source).items()})
    for name, value in (overrides or {}).items():
        if name not in SCHEMA_BY_NAME:
            raise UsageError(f"config: unknown key {name!r}")
        if value is not None:
            raw[name] = (value, Path.cwd())

    cfg = GatewayConfig(source=source)
    for key in SCHEMA:
        if key.name in raw:
            value, base = raw[key.name]
            setattr(cfg, key.attr, _check(key, value, base))
        elif key.default is not None:
            setattr(cfg, key.attr, key.default)
    _finish(cfg, env, explicit=set(raw))
    return cfg


def _finish(cfg: GatewayConfig, env: Mapping[str, str], explicit: set[str]) -> None:
    """Rules between keys, defaults that depend on others, and the checks of the values (the
    parsers' errors start with the key's name: ``broker: expected mqtt://HOST[:PORT] ...``)."""
    from . import store as st
    from .service import check_prefix, parse_broker_url, parse_http

    if not cfg.broker_url:
        raise UsageError(
            "config: broker.url is required: set it in the file ([broker] url = "
            '"mqtt://127.0.0.1:1883") or pass --broker'
        )
    parse_broker_url(cfg.broker_url)
    if cfg.broker_password is not None and cfg.broker_password_file is not None:
        raise UsageError("config: broker.password and broker.password_file are both set: keep one")
    if cfg.broker_password_file is not None:
        try:
            cfg.broker_password = cfg.broker_password_file.read_text().strip()
        except OSError as e:
            raise UsageError(
                f"config: broker.password_file: cannot read {cfg.broker_password_file}: "
                f"{e.strerror or e}"
            ) from e
    elif cfg.broker_password is None and env.get("HUMIGRAPH_MQTT_PASSWORD"):
        cfg.broker_password = env["HUMIGRAPH_MQTT_PASSWORD"]
    if cfg.broker_password is not None and not cfg.broker_username:
        raise UsageError(
            "config: broker.username: a password was given without a username (--user)"
        )
    if (cfg.broker_tls_cert is None) != (cfg.broker_tls_key is None):
        raise UsageError(
            "config: broker.tls.cert and broker.tls.key go together: set both or neither"
        )
    for name in ("broker.tls.ca", "broker.tls.cert", "broker.tls.key"):
        p = getattr(cfg, SCHEMA_BY_NAME[name].attr)
        if p is not None and not p.is_file():
            raise UsageError(f"config: {name}: no such file {p}")
    if cfg.data_dir is not None and "db" not in explicit:
        cfg.db = f"sqlite:///{(cfg.data_dir / 'gateway.db').resolve()}"
    st.parse_db(cfg.db)
    if cfg.http in ("off", ""):
        cfg.http = None
    if cfg.http is not None:
        parse_http(cfg.http or "")
    check_prefix(cfg.prefix)
    _check_alerts(cfg.alerts)
    if cfg.sites is not None:
        from .validate import ID_RE

        for s in cfg.sites:
            if not ID_RE.match(s):
                raise UsageError(f"config: sites: {s!r} is not a site id (1-32 of a-z 0-9 _ -)")


def _check_alerts(table: Mapping[str, Any]) -> None:
    """``[alerts]`` is the alert engine's: its own validator names the key (``alerts.rh_high``)."""
    try:
        from .alerts import AlertConfig
    except ImportError:  # a gateway built without the alert engine: nothing reads the table
        return
    AlertConfig.from_mapping(table, "config: alerts")
