"""Gateway configuration: TOML file + flags, one schema, errors that name the key and the fix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from humigraph.errors import GatewayError, UsageError
from humigraph.gateway import commands
from humigraph.gateway import config as cfgmod

FULL = """
db = "postgresql://gw@127.0.0.1/humigraph"
http = "0.0.0.0:9000"
prefix = "house"
sites = ["home", "cellar"]
data_dir = "data"

[broker]
url = "mqtts://broker.lan"
username = "gateway"
password_file = "mqtt.pass"
client_id = "gw-1"

[broker.tls]
ca = "ca.crt"
cert = "gw.crt"
key = "gw.key"

[model]
path = "models/humigraph-int8.tflite"

[ingest]
batch_max = 500
batch_wait = 0.05

[flood]
factor = 20
rate = 2.5
burst = 50

[alerts]
rh_high = 75.0
surface_t = 12.5
disabled = ["spike"]
"""


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="humigraph")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["gateway", *argv])


@pytest.fixture
def full(tmp_path: Path) -> Path:
    for f in ("ca.crt", "gw.crt", "gw.key"):
        (tmp_path / f).write_text("pem")
    (tmp_path / "mqtt.pass").write_text("s3cret\n")
    return write(tmp_path, FULL)


def test_every_key_of_the_file_is_read(full: Path) -> None:
    c = cfgmod.load(full, env={})
    d = full.parent
    assert c.broker_url == "mqtts://broker.lan" and c.tls
    assert (c.broker_username, c.broker_password, c.broker_client_id) == (
        "gateway",
        "s3cret",
        "gw-1",
    )
    assert (c.broker_tls_ca, c.broker_tls_cert, c.broker_tls_key) == (
        d / "ca.crt", d / "gw.crt", d / "gw.key",
    )  # fmt: skip
    assert c.db == "postgresql://gw@127.0.0.1/humigraph"
    assert (c.http, c.prefix, c.sites, c.data_dir) == (
        "0.0.0.0:9000",
        "house",
        ["home", "cellar"],
        d / "data",
    )
    assert c.model_path == d / "models/humigraph-int8.tflite"
    assert (c.ingest_batch_max, c.ingest_batch_wait) == (500, 0.05)
    assert (c.flood_factor, c.flood_rate, c.flood_burst) == (20.0, 2.5, 50)
    assert c.alerts == {"rh_high": 75.0, "surface_t": 12.5, "disabled": ["spike"]}
    kw = c.gateway_kwargs()
    assert kw["tls_ca"] == d / "ca.crt" and kw["alerts"]["rh_high"] == 75.0
    assert kw["model"] == d / "models/humigraph-int8.tflite"


def test_flags_override_the_file(full: Path, tmp_path: Path) -> None:
    args = parse(
        "--config", str(full), "--broker", "mqtt://10.0.0.2:1884", "--http", "off",
        "--site", "attic", "--batch-max", "10", "--flood-rate", "0", "--db", "sqlite:///x.db",
    )  # fmt: skip
    c = commands.load_config(args)
    assert c.broker_url == "mqtt://10.0.0.2:1884"
    assert c.http is None and c.sites == ["attic"] and c.ingest_batch_max == 10
    assert c.flood_rate == 0.0 and c.db == "sqlite:///x.db"
    assert c.prefix == "house" and c.broker_username == "gateway"  # untouched by flags


def test_defaults_without_a_file() -> None:
    c = cfgmod.load(None, {"broker.url": "mqtt://127.0.0.1"}, env={})
    assert (c.db, c.http, c.prefix, c.ingest_batch_max, c.flood_rate) == (
        cfgmod.DEFAULT_DB, "127.0.0.1:8080", "humigraph", 5000, 5.0,
    )  # fmt: skip
    assert not c.tls and c.alerts == {} and c.model_path is None


def test_data_dir_places_the_default_database(tmp_path: Path) -> None:
    c = cfgmod.load(write(tmp_path, f'data_dir = "{tmp_path}/state"\n[broker]\nurl = "mqtt://h"\n'))
    assert c.db == f"sqlite:///{tmp_path}/state/gateway.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[broker]\nurl = "mqtt://h"\nport = 1883\n', "unknown key 'broker.port'"),
        ('[broker]\nurl = "mqtt://h"\n[brokr]\nurl = "x"\n', "unknown key 'brokr'"),
        ('[broker]\nurl = "mqtt://h"\n[ingest]\nbatch_max = "big"\n',
         "ingest.batch_max: expected an integer"),
        ('[broker]\nurl = "mqtt://h"\n[ingest]\nbatch_max = 0\n',
         "ingest.batch_max: expected 1 to 100000"),
        ('[broker]\nurl = "mqtt://h"\n[flood]\nrate = -1\n', "flood.rate: expected 0 to"),
        ('sites = "home"\n[broker]\nurl = "mqtt://h"\n', "sites: expected a list of strings"),
        ('sites = ["Home!"]\n[broker]\nurl = "mqtt://h"\n', "sites: 'Home!' is not a site id"),
        ('alerts = 3\n[broker]\nurl = "mqtt://h"\n', "alerts: expected a table"),
        ('[broker]\nurl = "mqtt://h"\n[broker.tls]\nca = "missing.crt"\n',
         "broker.tls.ca: no such file"),
        ('[broker]\nurl = "mqtt://h"\n[broker.tls]\ncert = "c"\n', "go together"),
        ('[broker]\nurl = "mqtt://h"\npassword = "p"\n', "without a username"),
        ('[broker]\nurl = "mqtt://h"\nusername = "u"\npassword = "p"\npassword_file = "f"\n',
         "keep one"),
        ("[broker]\n", "broker.url is required"),
        ('[broker]\nurl = "mqtt://h"\n[alerts]\nrh_hgh = 80\n', "alerts.rh_hgh: unknown key"),
        ('[broker]\nurl = "mqtt://h"\n[alerts]\nrh_high = "80"\n', "alerts.rh_high: expected a number"),
        ('[broker]\nurl = "mqtt://h"\ndb = "x"\n', "top-level keys go before the first [table]"),
        ("broker = [\n", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match="config: ") as e:
        cfgmod.load(write(tmp_path, text), env={})
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[broker]\nurl = "tcp://h"\n', "broker: expected mqtt://HOST[:PORT]"),
        ('db = "mysql://x"\n[broker]\nurl = "mqtt://h"\n', "db: expected sqlite:///PATH"),
        ('http = "8080"\n[broker]\nurl = "mqtt://h"\n', "http: expected HOST:PORT"),
        ('prefix = "a/+"\n[broker]\nurl = "mqtt://h"\n', "prefix: expected a topic prefix"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(GatewayError, match="expected") as e:
        cfgmod.load(write(tmp_path, text), env={})
    assert message in str(e.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="config: cannot read .*nope.toml"):
        cfgmod.load(tmp_path / "nope.toml")


def test_check_prints_the_effective_config(full: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--config", str(full), "--check"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out and "broker.url = 'mqtts://broker.lan'" in out
    assert "s3cret" not in out and "broker.password = '***'" in out
    assert commands.main(["--config", str(full), "--batch-max", "0", "--check"]) == 2
    assert "ingest.batch_max: expected 1 to 100000" in capsys.readouterr().err


def test_every_schema_key_has_a_config_attribute() -> None:
    fields = set(cfgmod.GatewayConfig.__dataclass_fields__)
    assert {k.attr for k in cfgmod.SCHEMA} <= fields
    assert set(commands.FLAG_KEYS.values()) <= set(cfgmod.SCHEMA_BY_NAME)
