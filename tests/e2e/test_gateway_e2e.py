"""The gateway against a real Mosquitto: stored once, nothing lost across broker restarts and
gateway crashes (SIGKILL), HTTP API answers; one virtual board with the real firmware."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.broker import free_port
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
BASE_TS = 1764400000.0


def payload(dev: str, seq: int, boot: int = 1) -> bytes:
    return json.dumps(
        {"v": 1, "dev": dev, "boot": boot, "seq": seq, "ts": BASE_TS + seq, "up": seq * 1000,
         "t": 20.0 + (seq % 50) / 10, "rh": 45.0, "ok": True, "err": None, "sensor": "dht22"}
    ).encode()  # fmt: skip


class Publisher:
    """A board stand-in: persistent QoS 1 session, so paho resends what the broker did not ack."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(1, 2)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self._lock = threading.Lock()
        self.sent: list[int] = []
        self.acked: set[int] = set()
        self.client.on_publish = self._on_publish
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self.acked.add(mid)

    def publish(self, topic: str, data: bytes, retain: bool = False) -> None:
        # While the broker is down paho keeps QoS 1 messages and sends them after reconnecting
        # (rc says "not connected"): completion is the PUBACK, seen by on_publish.
        info = self.client.publish(topic, data, qos=1, retain=retain)
        with self._lock:
            self.sent.append(info.mid)

    def wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if set(self.sent) <= self.acked:
                    return
            assert time.monotonic() < deadline, "the broker did not acknowledge every publish"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def db_query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        conn.close()


def stored(db: Path, dev: str) -> list[int]:
    return [s for (s,) in db_query(db, f"SELECT seq FROM readings WHERE dev='{dev}' ORDER BY seq")]


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read().decode()
            return r.status, (json.loads(body) if "json" in r.headers["Content-Type"] else body)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


@pytest.fixture
def publisher(broker: Any) -> Iterator[Publisher]:
    p = Publisher(broker.port)
    yield p
    p.close()


def test_readings_are_stored_once_and_the_http_api_answers(
    broker: Any, publisher: Publisher, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    with Gateway(broker.url, f"sqlite:///{db}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)  # SUBACK
        base = "humigraph/home/kitchen-1"
        publisher.publish(base + "/status", b"online", retain=True)
        publisher.publish(
            base + "/meta", b'{"fw":"0.1.0","buffered":0,"sensor":"dht22"}', retain=True
        )
        for seq in range(50):
            publisher.publish(base + "/state", payload("kitchen-1", seq))
        for seq in range(40, 50):  # a replay after a lost PUBACK: duplicates
            publisher.publish(base + "/state", payload("kitchen-1", seq))
        publisher.publish(base + "/state", payload("bedroom-2", 1))  # spoofed dev
        publisher.publish(base + "/state", b"\x00garbage")
        publisher.publish("humigraph/Home/kitchen-1/state", payload("kitchen-1", 1))
        publisher.wait_all(10)
        wait_until(lambda: gw.metrics.messages_received >= 65, 10, "every message")
        wait_until(lambda: gw.queue_depth() == 0 and gw.metrics.duplicates == 10, 10, "the commits")

        assert stored(db, "kitchen-1") == list(range(50))
        reasons = sorted(r for (r,) in db_query(db, "SELECT reason FROM quarantine"))
        assert reasons == ["bad_topic", "dev_mismatch", "not_json"]
        spoof = db_query(db, "SELECT topic, payload FROM quarantine WHERE reason='dev_mismatch'")
        assert spoof == [(base + "/state", payload("bedroom-2", 1))]

        host, port = gw.http_address or ("", 0)
        url = f"http://{host}:{port}"
        code, health = get(url + "/healthz")
        assert code == 200 and health["ok"] is True and health["broker"] == "connected"
        assert health["readings"] == 50
        code, devs = get(url + "/api/devices")
        assert code == 200 and len(devs) == 1
        d = devs[0]
        assert {k: d[k] for k in ("dev", "site", "online", "sensor", "fw", "buffered", "gaps")} == {
            "dev": "kitchen-1", "site": "home", "online": True, "sensor": "dht22", "fw": "0.1.0",
            "buffered": 0, "gaps": 0,
        }  # fmt: skip
        code, rows = get(url + f"/api/readings?dev=kitchen-1&since={BASE_TS + 10}&limit=5")
        assert code == 200 and [r["seq"] for r in rows] == [10, 11, 12, 13, 14]
        assert set(rows[0]) == {"dev", "boot", "seq", "ts", "t", "rh", "ok", "err"}
        code, rows = get(url + f"/api/readings?dev=kitchen-1&until={BASE_TS + 2}")
        assert [r["seq"] for r in rows] == [0, 1, 2]
        assert get(url + "/api/readings")[0] == 400
        assert get(url + "/api/readings?dev=kitchen-1&limit=x")[0] == 400
        assert get(url + "/api/nothing")[0] == 404
        code, text = get(url + "/metrics")
        assert code == 200
        for line in (
            "humigraph_messages_received_total 65",
            "humigraph_readings_stored_total 50",
            "humigraph_duplicates_total 10",
            'humigraph_quarantined_total{reason="dev_mismatch"} 1',
            'humigraph_quarantined_total{reason="not_json"} 1',
            "humigraph_gaps_total 0",
            "humigraph_queue_depth 0",
        ):
            assert line in text.splitlines(), line


def _stream(pub: Publisher, dev: str, n: int, rate: float, stop: threading.Event) -> None:
    for seq in range(n):
        if stop.is_set():
            return
        pub.publish(f"humigraph/home/{dev}/state", payload(dev, seq))
        time.sleep(1 / rate)


def test_a_broker_restart_mid_stream_loses_nothing(
    broker: Any, publisher: Publisher, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    n = 400
    with Gateway(broker.url, f"sqlite:///{db}", http=None) as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        stop = threading.Event()
        t = threading.Thread(target=_stream, args=(publisher, "kitchen-1", n, 200.0, stop))
        t.start()
        try:
            wait_until(lambda: len(stored(db, "kitchen-1")) >= 100, 20, "the first readings")
            broker.restart()
            t.join(30)
        finally:
            stop.set()
            t.join(5)
        publisher.wait_all(30)
        wait_until(lambda: len(stored(db, "kitchen-1")) >= n, 30, f"{n} readings")
        time.sleep(0.5)
        assert stored(db, "kitchen-1") == list(range(n))
        assert db_query(db, "SELECT SUM(max_seq - min_seq + 1 - n) FROM boots") == [(0,)]
        assert gw.metrics.readings_stored == n


def _gateway_proc(broker: Any, db: Path, http_port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "humigraph.gateway", "--broker", broker.url,
             "--db", f"sqlite:///{db}", "--http", f"127.0.0.1:{http_port}", "-v",
             # long batches: at each SIGKILL many messages are received and not yet committed
             "--batch-wait", "0.3"],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT),
        )  # fmt: skip


def test_a_gateway_killed_mid_stream_loses_nothing(
    broker: Any, publisher: Publisher, tmp_path: Path
) -> None:
    db = tmp_path / "gw.db"
    log = tmp_path / "gateway.log"
    http_port = free_port()
    n = 600
    proc = _gateway_proc(broker, db, http_port, log)
    try:
        wait_until(
            lambda: (
                get(f"http://127.0.0.1:{http_port}/healthz")[1]["broker"] == "connected"
                if _listening(http_port)
                else False
            ),
            20,
            "the gateway process",
        )
        time.sleep(0.3)
        stop = threading.Event()
        t = threading.Thread(target=_stream, args=(publisher, "kitchen-1", n, 300.0, stop))
        t.start()
        try:
            for threshold in (100, 300):  # two crashes, each in the middle of the stream
                wait_until(lambda th=threshold: len(stored(db, "kitchen-1")) >= th, 30, "readings")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                time.sleep(0.5)  # the stream goes on while the gateway is down
                proc = _gateway_proc(broker, db, http_port, log)
            t.join(30)
        finally:
            stop.set()
            t.join(5)
        publisher.wait_all(30)
        wait_until(lambda: len(stored(db, "kitchen-1")) >= n, 40, f"{n} readings")
        time.sleep(0.5)
        assert stored(db, "kitchen-1") == list(range(n)), log.read_text()[-2000:]
        code, devs = get(f"http://127.0.0.1:{http_port}/api/devices")
        assert code == 200 and devs[0]["gaps"] == 0
        proc.send_signal(signal.SIGTERM)  # a clean stop exits 0
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_virtual_board_with_the_real_firmware(broker: Any, tmp_path: Path) -> None:
    from humigraph.board.virtual import VirtualBoard

    db = tmp_path / "gw.db"
    with Gateway(broker.url, f"sqlite:///{db}", http="127.0.0.1:0") as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        with VirtualBoard(
            "kitchen-1", "home", broker.url, interval=2.0, flash_dir=tmp_path / "flash"
        ):
            wait_until(lambda: len(stored(db, "kitchen-1")) >= 3, 60, "3 readings from the board")
        host, port = gw.http_address or ("", 0)
        wait_until(
            lambda: get(f"http://{host}:{port}/api/devices")[1][0]["fw"] is not None, 10, "meta"
        )
        dev = get(f"http://{host}:{port}/api/devices")[1][0]
        assert dev["dev"] == "kitchen-1" and dev["site"] == "home" and dev["gaps"] == 0
        rows = get(f"http://{host}:{port}/api/readings?dev=kitchen-1")[1]
        assert len(rows) >= 3 and all(r["ok"] for r in rows)
        assert db_query(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]


def test_a_board_replaying_its_buffer_after_an_outage_leaves_no_gap(
    broker: Any, tmp_path: Path
) -> None:
    from humigraph.board.virtual import VirtualBoard

    db = tmp_path / "gw.db"

    def boots() -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for boot, seq in db_query(db, "SELECT boot, seq FROM readings ORDER BY boot, seq"):
            out.setdefault(boot, []).append(seq)
        return out

    with Gateway(broker.url, f"sqlite:///{db}", http=None) as gw:
        wait_until(lambda: gw.connected, 10, "the gateway to connect")
        flash = tmp_path / "flash"
        with VirtualBoard("kitchen-1", "home", broker.url, interval=2.0, flash_dir=flash) as b:
            wait_until(lambda: len(stored(db, "kitchen-1")) >= 2, 60, "the first readings")
            b.set_wifi("down")  # readings pile up in the board's buffer
            time.sleep(7)
            n_before = len(stored(db, "kitchen-1"))
            broker.restart()  # and the broker reboots meanwhile
            b.set_wifi("up")
            wait_until(
                lambda: len(stored(db, "kitchen-1")) >= n_before + 3, 60, "the buffer replayed"
            )
            first = boots()
            b.power_cycle()
            wait_until(lambda: len(boots()) >= 2 and len(boots()[max(boots())]) >= 2, 60, "reboot")
        got = boots()
        for boot, seqs in got.items():  # every boot: contiguous, each seq once
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (boot, seqs)
        assert got[min(got)][: len(first[min(first)])] == first[min(first)]
        assert db_query(db, "SELECT COALESCE(SUM(max_seq - min_seq + 1 - n), 0) FROM boots") == [
            (0,)
        ]
        assert db_query(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]


def test_with_logins_and_acls_each_board_writes_only_its_own_topics(tmp_path: Path) -> None:
    import shutil
    import tempfile

    from humigraph.broker import Mosquitto

    # Not under tmp_path: a broker started as root runs as "mosquitto" and cannot enter it.
    work = Path(tempfile.mkdtemp(prefix="humigraph-gw-acl-"))
    if os.geteuid() == 0:
        with_mosquitto_user(work)
    pw, acl = work / "passwd", work / "acl"
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for i, (user, secret) in enumerate((("gateway", "gw-secret"), ("kitchen-1", "k1-secret"))):
        flags = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run([exe, *flags, str(pw), user, secret], check=True, timeout=30)
    acl.write_text(
        "user gateway\ntopic read humigraph/#\n\n"
        "user kitchen-1\ntopic write humigraph/home/kitchen-1/#\n"
    )
    for f in (pw, acl):
        f.chmod(0o600)
        if os.geteuid() == 0:
            with_mosquitto_user(f)
    try:
        extra = f"password_file {pw}\nacl_file {acl}\n"
        with Mosquitto(extra_config=extra, workdir=work / "broker") as broker:
            db = tmp_path / "gw.db"
            with Gateway(
                broker.url, f"sqlite:///{db}", http=None, username="gateway", password="wrong"
            ) as bad:
                wait_until(lambda: bad.status()["broker_refused"], 10, "the refusal")
                assert bad.status()["broker"] == "disconnected"
            with Gateway(
                broker.url, f"sqlite:///{db}", http=None, username="gateway", password="gw-secret"
            ) as gw:
                wait_until(lambda: gw.connected, 10, "the gateway to connect")
                time.sleep(0.3)
                board = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kitchen-1")
                board.username_pw_set("kitchen-1", "k1-secret")
                board.connect("127.0.0.1", broker.port)
                board.loop_start()
                try:
                    for topic, data in (
                        ("humigraph/home/bedroom-2/state", payload("bedroom-2", 1)),  # not its own
                        ("humigraph/home/kitchen-1/state", payload("kitchen-1", 1)),
                    ):
                        board.publish(topic, data, qos=1).wait_for_publish(10)
                finally:
                    board.loop_stop()
                    board.disconnect()
                wait_until(lambda: stored(db, "kitchen-1") == [1], 10, "the board's own reading")
                time.sleep(0.5)
                assert stored(db, "bedroom-2") == []
                assert gw.metrics.messages_received == 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def with_mosquitto_user(path: Path) -> None:
    import pwd

    try:
        u = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    os.chown(path, u.pw_uid, u.pw_gid)
