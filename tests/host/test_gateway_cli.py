"""``humigraph gateway``: options, errors that name the option, no TensorFlow on the edge path."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from humigraph.errors import GatewayError
from humigraph.gateway import commands
from humigraph.gateway.service import Gateway, parse_broker_url, parse_http

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="humigraph")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["gateway", *argv])


def test_defaults() -> None:
    a = parse("--broker", "mqtt://127.0.0.1:1883")
    assert a.func is commands.run
    c = commands.load_config(a)
    assert (c.broker_url, c.db, c.http, c.prefix, c.broker_client_id, c.sites) == (
        "mqtt://127.0.0.1:1883", commands.DEFAULT_DB, "127.0.0.1:8080", "humigraph",
        "humigraph-gateway", None,
    )  # fmt: skip


def test_broker_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main([]) == 2
    assert "broker.url is required" in capsys.readouterr().err


def test_address_parsing() -> None:
    assert parse_broker_url("mqtt://broker.lan") == ("broker.lan", 1883)
    assert parse_broker_url("mqtt://[::1]:1884") == ("::1", 1884)
    assert parse_http("0.0.0.0:9000") == ("0.0.0.0", 9000)
    with pytest.raises(GatewayError, match="broker"):
        parse_broker_url("tcp://x:1")
    with pytest.raises(GatewayError, match="http"):
        parse_http("8080")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"broker": "localhost:1883"}, "broker"),
        ({"db": "mysql://db/humigraph"}, "db: expected"),
        ({"http": "nowhere"}, "http"),
        ({"prefix": "a/+/b"}, "prefix"),
        ({"batch_wait": -1.0}, "batch-wait"),
    ],
)
def test_bad_options_name_the_option(kw: dict[str, object], match: str, tmp_path: Path) -> None:
    args: dict[str, object] = {"broker": "mqtt://127.0.0.1:1883", "db": tmp_path / "g.db", **kw}
    broker = args.pop("broker")
    db = args.pop("db")
    with pytest.raises(GatewayError, match=match):
        Gateway(broker, db, **args)  # type: ignore[arg-type]


def test_main_prints_one_line_and_an_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["--broker", "nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("humigraph gateway: error: broker:")


def test_the_gateway_imports_no_tensorflow() -> None:
    code = (
        "import sys, humigraph.gateway.service, humigraph.gateway.commands; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_wired_into_the_humigraph_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from humigraph import cli

    if "humigraph.gateway.commands" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(cli, "_COMMAND_MODULES", ("humigraph.gateway.commands",))
    assert cli.main(["gateway", "--broker", "mqtt://127.0.0.1:1883", "--http", "bad"]) == 1
    assert capsys.readouterr().err.strip() == (
        "humigraph gateway: error: http: expected HOST:PORT (e.g. 127.0.0.1:8080), got 'bad'"
    )


def test_password_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HUMIGRAPH_MQTT_PASSWORD", raising=False)
    missing = str(tmp_path / "missing")
    assert commands.main(["--broker", "mqtt://127.0.0.1:1", "--password-file", missing]) == 2
    assert "broker.password_file: cannot read" in capsys.readouterr().err
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert commands.main(["--broker", "mqtt://127.0.0.1:1", "--password-file", str(secret)]) == 2
    assert "without a username (--user)" in capsys.readouterr().err
    args = parse("--broker", "mqtt://h:1", "--user", "gateway", "--password-file", str(secret))
    assert commands.load_config(args).broker_password == "s3cret"
    monkeypatch.setenv("HUMIGRAPH_MQTT_PASSWORD", "from-env")
    assert commands.load_config(
        parse("--broker", "mqtt://h:1", "--user", "gw")
    ).broker_password == ("from-env")
