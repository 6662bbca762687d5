"""The gateway against a real Mosquitto with a TLS listener (client certificates required) and a
password file: a throwaway CA and certificates made with the openssl command for each test run."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.broker import Mosquitto, free_port
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion
from support.owner import give_to_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

OPENSSL = shutil.which("openssl")


def _run(*args: str, cwd: Path) -> None:
    assert OPENSSL
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)  # fmt: skip


def make_cert(d: Path, ca: str, name: str, san: str | None) -> None:
    _run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName = {san}\n" if san else "basicConstraints = CA:FALSE\n")
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-days", "2", "-extfile", ext.name, "-out", f"{name}.crt", cwd=d)  # fmt: skip


class TlsBroker:
    def __init__(self, work: Path, mosquitto: Mosquitto, tls_port: int) -> None:
        self.work, self.m, self.tls_port = work, mosquitto, tls_port

    def file(self, name: str) -> Path:
        return self.work / name


@pytest.fixture
def tls_broker() -> Iterator[TlsBroker]:
    if not OPENSSL:
        pytest.skip("the openssl command is needed to make test certificates")
    # Not under tmp_path: a broker started as root runs as "mosquitto" and cannot enter it.
    work = Path(tempfile.mkdtemp(prefix="humigraph-gw-tls-"))
    work.chmod(0o755)
    try:
        make_ca(work, "ca")
        make_ca(work, "rogue")
        make_cert(work, "ca", "broker", "IP:127.0.0.1,DNS:localhost")
        make_cert(work, "ca", "gateway", None)
        make_cert(work, "rogue", "intruder", None)
        pw = work / "passwd"
        exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run([exe, "-b", "-c", str(pw), "gateway", "gw-secret"], check=True, timeout=30)
        for f in work.iterdir():
            f.chmod(0o644)
        give_to_mosquitto([pw])
        pw.chmod(0o600)
        tls_port = free_port()
        extra = (
            f"password_file {pw}\n"
            f"listener {tls_port} 127.0.0.1\n"
            f"cafile {work / 'ca.crt'}\ncertfile {work / 'broker.crt'}\n"
            f"keyfile {work / 'broker.key'}\nrequire_certificate true\n"
        )
        with Mosquitto(extra_config=extra, workdir=work / "broker") as m:
            yield TlsBroker(work, m, tls_port)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def reading(dev: str, seq: int) -> str:
    return json.dumps(
        {"v": 1, "dev": dev, "boot": 1, "seq": seq, "ts": 1764400000.0 + seq, "up": seq * 1000,
         "t": 21.0, "rh": 40.0, "ok": True, "err": None, "sensor": "dht22"}
    )  # fmt: skip


def test_tls_with_a_client_certificate_and_a_password(
    tls_broker: TlsBroker, tmp_path: Path
) -> None:
    f = tls_broker.file
    db = tmp_path / "gw.db"
    with Gateway(
        f"mqtts://127.0.0.1:{tls_broker.tls_port}", f"sqlite:///{db}", http=None,
        username="gateway", password="gw-secret",
        tls_ca=f("ca.crt"), tls_cert=f("gateway.crt"), tls_key=f("gateway.key"),
    ) as gw:  # fmt: skip
        wait(lambda: gw.connected, 15, "the gateway to connect over TLS")
        time.sleep(0.3)
        # a board with its own certificate and login, publishing over the same TLS listener
        board = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kitchen-1")
        board.username_pw_set("gateway", "gw-secret")
        board.tls_set(ca_certs=str(f("ca.crt")), certfile=str(f("gateway.crt")),
                      keyfile=str(f("gateway.key")))  # fmt: skip
        board.connect("127.0.0.1", tls_broker.tls_port)
        board.loop_start()
        try:
            for seq in range(20):
                board.publish("humigraph/home/kitchen-1/state", reading("kitchen-1", seq), 1)
            board.publish(
                "humigraph/home/kitchen-1/state", reading("kitchen-1", 19), 1
            ).wait_for_publish(10)
        finally:
            board.loop_stop()
            board.disconnect()
        wait(lambda: gw.metrics.readings_stored + gw.metrics.duplicates >= 21, 15, "the readings")
        assert (gw.metrics.readings_stored, gw.metrics.duplicates) == (20, 1)
        assert gw.status()["broker_refused"] is None


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("no client certificate", "TLS"),
        ("a certificate from another CA", "TLS"),
        ("the wrong CA for the broker", "TLS"),
        ("a wrong password", "Not authorized"),
    ],
)
def test_the_broker_refuses_what_it_should(
    tls_broker: TlsBroker, tmp_path: Path, case: str, expect: str
) -> None:
    f = tls_broker.file
    kw: dict[str, Any] = {"username": "gateway", "password": "gw-secret", "tls_ca": f("ca.crt"),
                          "tls_cert": f("gateway.crt"), "tls_key": f("gateway.key")}  # fmt: skip
    if case == "no client certificate":
        kw.update(tls_cert=None, tls_key=None)
    elif case == "a certificate from another CA":
        kw.update(tls_cert=f("intruder.crt"), tls_key=f("intruder.key"))
    elif case == "the wrong CA for the broker":
        kw.update(tls_ca=f("rogue.crt"))
    else:
        kw.update(password="wrong")
    url = f"mqtts://127.0.0.1:{tls_broker.tls_port}"
    with Gateway(url, f"sqlite:///{tmp_path / 'gw.db'}", http=None, **kw) as gw:
        wait(lambda: gw.status()["broker_refused"], 15, "the refusal")
        assert expect.lower() in str(gw.status()["broker_refused"]).lower()
        assert not gw.connected


def test_the_plain_listener_wants_the_password_too(tls_broker: TlsBroker, tmp_path: Path) -> None:
    with Gateway(tls_broker.m.url, f"sqlite:///{tmp_path / 'gw.db'}", http=None) as gw:
        wait(lambda: gw.status()["broker_refused"], 15, "the refusal")
        assert not gw.connected


def test_a_missing_tls_file_is_named(tmp_path: Path) -> None:
    from humigraph.errors import UsageError

    with pytest.raises(UsageError, match=r"broker\.tls\.ca: no such file"):
        Gateway("mqtts://127.0.0.1:8883", f"sqlite:///{tmp_path / 'g.db'}", http=None,
                tls_ca=tmp_path / "none.crt").start()  # fmt: skip
    assert ssl.OPENSSL_VERSION  # the stdlib ssl module is what paho uses
