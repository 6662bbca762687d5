"""The shipped deployment files work: deploy/gateway.toml validates, Mosquitto starts with
deploy/mosquitto/humigraph.conf and its ACL (paths rewritten to a temp dir, a free port) and lets
each board write only its own topics, and systemd accepts the unit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.broker import find_mosquitto, free_port, wait_port
from humigraph.gateway import config as cfgmod
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion
from support.owner import give_to_mosquitto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def example_toml(tmp_path: Path, uncomment_tls: bool = False) -> Path:
    text = (DEPLOY / "gateway.toml").read_text()
    if uncomment_tls:
        lines = []
        for line in text.splitlines():
            if line.startswith(("# [broker.tls]", "# ca =", "# cert =", "# key =")):
                line = line[2:]
            lines.append(line)
        text = "\n".join(lines) + "\n"
        for f in ("ca.crt", "gateway.crt", "gateway.key"):
            (tmp_path / f).write_text("pem")
    p = tmp_path / "gateway.toml"
    p.write_text(text)
    (tmp_path / "mqtt-password").write_text("gw-secret\n")
    return p


def test_the_example_gateway_toml_validates(tmp_path: Path) -> None:
    c = cfgmod.load(example_toml(tmp_path), env={})
    assert c.broker_url == "mqtt://127.0.0.1:1883" and c.broker_username == "gateway"
    assert c.broker_password == "gw-secret"
    assert c.db == "sqlite:////var/lib/humigraph/gateway.db"
    assert c.sites == ["home"] and c.http == "127.0.0.1:8080"
    assert c.alerts["rh_high"] == 70.0
    tls = cfgmod.load(example_toml(tmp_path, uncomment_tls=True), env={})
    assert tls.broker_tls_ca == tmp_path / "ca.crt" and tls.tls
    # and through the command, as the unit's ExecStartPre runs it
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    out = subprocess.run(
        [sys.executable, "-m", "humigraph.gateway", "--config", str(tmp_path / "gateway.toml"),
         "--check"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout and "gw-secret" not in out.stdout


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    exe = shutil.which("systemd-analyze")
    if not exe:
        pytest.skip("systemd-analyze is not installed")
    text = (DEPLOY / "humigraph-gateway.service").read_text()
    assert (
        "ExecStart=/opt/humigraph/bin/humigraph -v gateway --config /etc/humigraph/gateway.toml"
        in text
    )
    assert "StateDirectory=humigraph" in text and "StandardOutput=journal" in text
    unit = tmp_path / "humigraph-gateway.service"
    unit.write_text(text.replace("/opt/humigraph/bin/humigraph", "/bin/true"))
    out = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in out.stderr.splitlines() if str(unit) in ln]
    assert out.returncode == 0 and not problems, out.stderr


class ShippedBroker:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"


@pytest.fixture
def shipped_broker() -> Iterator[ShippedBroker]:
    exe = find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto is not installed")
    work = Path(tempfile.mkdtemp(prefix="humigraph-deploy-"))
    work.chmod(0o755)
    proc: subprocess.Popen[bytes] | None = None
    try:
        (work / "conf.d").mkdir()
        (work / "data").mkdir()
        port = free_port()
        conf = (DEPLOY / "mosquitto" / "humigraph.conf").read_text()
        conf = conf.replace("/etc/mosquitto/humigraph.passwd", str(work / "passwd"))
        conf = conf.replace("/etc/mosquitto/humigraph.acl", str(work / "acl"))
        assert "\nlistener 1883\n" in conf
        conf = conf.replace("\nlistener 1883\n", f"\nlistener {port} 127.0.0.1\n")
        (work / "conf.d" / "humigraph.conf").write_text(conf)
        shutil.copy(DEPLOY / "mosquitto" / "humigraph.acl", work / "acl")
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for i, user in enumerate(("gateway", "kitchen-1", "bedroom-2")):
            flags = ["-b", "-c"] if i == 0 else ["-b"]
            subprocess.run([passwd, *flags, str(work / "passwd"), user, f"{user}-pw"],
                           check=True, timeout=30)  # fmt: skip
        # the main file as Debian ships it (what humigraph.conf is included into)
        (work / "mosquitto.conf").write_text(
            f"persistence_location {work / 'data'}/\nlog_dest stderr\n"
            f"include_dir {work / 'conf.d'}\n"
        )
        for f in (work / "passwd", work / "acl"):
            f.chmod(0o600)
        give_to_mosquitto([work / "passwd", work / "acl", work / "data"])
        log = open(work / "mosquitto.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([exe, "-c", str(work / "mosquitto.conf")], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        log.close()
        if not wait_port("127.0.0.1", port, 10):
            raise AssertionError(
                f"mosquitto did not start: {(work / 'mosquitto.log').read_text()[-800:]}"
            )
        assert proc.poll() is None, (work / "mosquitto.log").read_text()
        yield ShippedBroker(port)
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def reading(dev: str, seq: int) -> str:
    return json.dumps(
        {"v": 1, "dev": dev, "boot": 1, "seq": seq, "ts": 1764400000.0 + seq, "up": seq * 1000,
         "t": 21.0, "rh": 40.0, "ok": True, "err": None, "sensor": "dht22"}
    )  # fmt: skip


def board(port: int, user: str, password: str) -> tuple[mqtt.Client, list[Any]]:
    rc: list[Any] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, reason, p: rc.append(reason)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, rc


def test_the_shipped_mosquitto_conf_and_acl(shipped_broker: ShippedBroker, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    port = shipped_broker.port
    with Gateway(
        shipped_broker.url, f"sqlite:///{db}", http=None, username="gateway", password="gateway-pw"
    ) as gw:
        deadline = time.monotonic() + 10
        while not gw.connected:
            assert time.monotonic() < deadline, gw.status()
            time.sleep(0.05)
        time.sleep(0.3)
        k1, rc = board(port, "kitchen-1", "kitchen-1-pw")
        try:
            deadline = time.monotonic() + 10
            while not rc:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert not rc[0].is_failure
            # MQTT 5: the broker answers a refused QoS 1 publish with "Not authorized" in the PUBACK
            k1.publish(
                "humigraph/home/bedroom-2/state", reading("bedroom-2", 1), 1
            ).wait_for_publish(10)
            k1.publish(
                "humigraph/home/kitchen-1/status", "online", 1, retain=True
            ).wait_for_publish(10)
            for seq in range(5):
                k1.publish(
                    "humigraph/home/kitchen-1/state", reading("kitchen-1", seq), 1
                ).wait_for_publish(10)
        finally:
            k1.loop_stop()
            k1.disconnect()
        anon, rc_anon = board(port, "nobody", "guess")
        try:
            deadline = time.monotonic() + 10
            while not rc_anon:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert rc_anon[0].is_failure  # no such login
        finally:
            anon.loop_stop()
            anon.disconnect()
        deadline = time.monotonic() + 10
        while gw.metrics.readings_stored < 5:
            assert time.monotonic() < deadline, gw.metrics.snapshot()
            time.sleep(0.05)
        time.sleep(0.5)
        assert gw.metrics.readings_stored == 5
        assert gw.metrics.messages_received == 6  # 5 readings + status; not bedroom-2's topic
