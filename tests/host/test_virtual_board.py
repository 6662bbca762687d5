"""The virtual board: ESP32 shims under the real MicroPython unix port, and the runner around them.

These tests boot a tiny *fake firmware* (written here, not firmware/) whose main.py executes
snippets dropped into its flash as ``cmd.py`` and prints their output between ``BEGIN n`` and
``END n`` lines, so that one board process can answer many questions.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from humigraph.board.virtual import (
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    VirtualBoard,
    check_id,
    find_micropython,
    parse_broker,
    parse_heap,
)
from humigraph.errors import BoardError, UsageError
from humigraph.world.source import DailyCycleSource, Truth

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(60)

FAKE_BOOT = 'print("fake boot.py")\n'
FAKE_MAIN = r"""
import machine, os, time
print("BOOT cause=%d rtc=%r" % (machine.reset_cause(), machine.RTC().memory()))
_n = 0
while True:
    try:
        os.stat("cmd.py")
    except OSError:
        time.sleep_ms(20)
        continue
    with open("cmd.py") as f:
        _src = f.read()
    os.remove("cmd.py")
    _n += 1
    print("BEGIN", _n)
    try:
        exec(_src, {"__name__": "cmd"})
    except Exception as e:
        print("EXC", type(e).__name__, e.args)
    print("END", _n)
"""


class FixedSource:
    """A value source the test sets by hand."""

    def __init__(self, t: float = 21.37, rh: float = 45.21) -> None:
        self.t = t
        self.rh = rh

    def sample(self, dev: str, when: float) -> Truth:
        return Truth(self.t, self.rh)


class Harness:
    def __init__(self, board: VirtualBoard) -> None:
        self.board = board

    def send(self, code: str) -> int:
        """Drop a snippet into the board; returns the console index to search from."""
        start = len(self.board.console)
        tmp = self.board.flash_dir / ".cmd.tmp"
        tmp.write_text(code)
        os.replace(tmp, self.board.flash_dir / "cmd.py")
        return start

    def run(self, code: str, timeout: float = 10.0) -> list[str]:
        """Run a snippet to completion; returns the lines it printed."""
        start = self.send(code)
        n = self.board.wait_for_line(r"^END (\d+)$", timeout, start).group(1)
        lines = self.board.console[start:]
        b = lines.index(f"BEGIN {n}")
        e = lines.index(f"END {n}")
        return lines[b + 1 : e]


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def client(c: socket.socket) -> None:
        with c:
            while True:
                try:
                    d = c.recv(4096)
                except OSError:
                    return
                if not d:
                    return
                c.sendall(d)

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=client, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.fixture(scope="module")
def echo_port() -> Iterator[int]:
    """A TCP echo server standing in for the broker: the link proxy is plain TCP."""
    srv, port = _echo_server()
    yield port
    srv.close()


@pytest.fixture(scope="module")
def fake_fw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fakefw")
    (d / "boot.py").write_text(FAKE_BOOT)
    (d / "main.py").write_text(FAKE_MAIN)
    return d


@pytest.fixture(scope="module")
def shared(fake_fw: Path, echo_port: int) -> Iterator[tuple[VirtualBoard, Harness, FixedSource]]:
    """One board for the tests that only talk to the shims."""
    src = FixedSource()
    b = VirtualBoard(
        "shim-1", "lab", f"mqtt://127.0.0.1:{echo_port}", firmware_dir=fake_fw, source=src
    )
    b.start()
    try:
        b.wait_for_line(r"^BOOT cause=1", 15)
        yield b, Harness(b), src
    finally:
        b.stop()


def make(fake_fw: Path, echo_port: int, **kw: Any) -> VirtualBoard:
    kw.setdefault("firmware_dir", fake_fw)
    return VirtualBoard(kw.pop("device", "dev-1"), "lab", f"mqtt://127.0.0.1:{echo_port}", **kw)


# ---- pure host side -----------------------------------------------------------------------


def test_daily_cycle_source_is_deterministic_and_plausible() -> None:
    a, b = DailyCycleSource(seed=3), DailyCycleSource(seed=3)
    day = 1764374400.0  # a midnight UTC
    assert a.sample("kitchen-1", day + 123.0) == b.sample("kitchen-1", day + 123.0)
    assert a.sample("kitchen-1", day) != a.sample("bath-1", day)
    assert a.sample("kitchen-1", day) != DailyCycleSource(seed=4).sample("kitchen-1", day)
    morning = a.sample("kitchen-1", day + 5 * 3600)
    afternoon = a.sample("kitchen-1", day + 15 * 3600)
    assert afternoon.t > morning.t + 2.5 and afternoon.rh < morning.rh - 8
    for h in range(0, 24 * 60, 7):
        s = a.sample("kitchen-1", day + h * 60)
        assert 0.0 <= s.rh <= 100.0 and 15.0 < s.t < 27.0
    # smooth: one minute apart never jumps
    x, y = a.sample("kitchen-1", day + 7000), a.sample("kitchen-1", day + 7060)
    assert abs(x.t - y.t) < 0.1 and abs(x.rh - y.rh) < 0.5


def test_argument_validation() -> None:
    assert parse_broker("mqtt://127.0.0.1:1883") == ("mqtt", "127.0.0.1", 1883)
    assert parse_broker("mqtts://broker.lan:8883") == ("mqtts", "broker.lan", 8883)
    for bad in ("127.0.0.1:1883", "http://x:1", "mqtt://x", "mqtt://x:0", "mqtt://x:70000"):
        with pytest.raises(UsageError, match="--broker: expected mqtt://HOST:PORT"):
            parse_broker(bad, "--broker")
    assert check_id("kitchen-1") == "kitchen-1"
    for bad in ("Kitchen", "-x", "", "a" * 33, "a b"):
        with pytest.raises(UsageError, match="--device"):
            check_id(bad, "--device")
    assert parse_heap("64K") == 65536 and parse_heap("1M") == 1 << 20
    with pytest.raises(UsageError):
        parse_heap("lots")
    with pytest.raises(UsageError):
        VirtualBoard("ok-1", "lab", "mqtt://127.0.0.1:1", sensor="dht99")


# ---- the DHT shim -------------------------------------------------------------------------

READ = """
import dht, machine
d = dht.{cls}(machine.Pin({pin}))
try:
    d.measure()
    print("BUF", list(d.buf), round(d.temperature(), 2), round(d.humidity(), 2))
except OSError as e:
    print("OSERROR", e.errno)
except Exception as e:
    print("EXCEPTION", type(e).__name__, e.args)
"""


def _read(h: Harness, cls: str, pin: int) -> str:
    (line,) = h.run(READ.format(cls=cls, pin=pin))
    return line


def _checksum(b: list[int]) -> list[int]:
    return b + [sum(b) & 0xFF]


def test_dht_encodings(shared: tuple[VirtualBoard, Harness, FixedSource]) -> None:
    board, h, src = shared
    src.t, src.rh = 21.37, 45.21
    board.update_sensor()
    buf = _checksum([452 >> 8, 452 & 0xFF, 0, 214])
    assert _read(h, "DHT22", 13) == f"BUF {buf} 21.4 45.2"
    # DHT11: integer part and first decimal; the driver reports the integer parts
    assert _read(h, "DHT11", 14) == f"BUF {_checksum([45, 2, 21, 4])} 21 45"
    src.t, src.rh = -3.45, 45.26
    board.update_sensor()
    buf = _checksum([453 >> 8, 453 & 0xFF, 0x80, 35])
    assert _read(h, "DHT22", 15) == f"BUF {buf} -3.5 45.3"
    # the newer DHT11 encoding of negative temperatures: sign in bit 7 of the decimal byte
    assert _read(h, "DHT11", 16) == f"BUF {_checksum([45, 3, 3, 0x85])} 3 45"
    # esp.dht_readinto takes the encoding from the configured model (dht22 by default)
    line = h.run(
        "import esp, machine\nb = bytearray(5)\nesp.dht_readinto(machine.Pin(17), b)\nprint(list(b))"
    )
    assert line == [str(buf)]


def test_dht_faults_and_stale_reads(shared: tuple[VirtualBoard, Harness, FixedSource]) -> None:
    board, h, src = shared
    src.t, src.rh = 20.0, 50.0
    board.update_sensor()
    try:
        board.inject("timeout")
        assert _read(h, "DHT22", 18) == "OSERROR 110"
        board.inject("nan")
        assert _read(h, "DHT22", 18) == "OSERROR 110"
        board.inject("checksum")
        assert _read(h, "DHT22", 19) == "EXCEPTION Exception ('checksum error',)"
        board.inject("implausible_zero")
        assert _read(h, "DHT22", 21) == "BUF [0, 0, 0, 0, 0] 0.0 0.0"
        board.inject("fake_1_1")
        assert _read(h, "DHT11", 22) == "BUF [1, 0, 1, 0, 2] 1 1"
    finally:
        board.inject(None)
    # read again within 2 s: the DHT22 answers with its previous conversion
    first = _read(h, "DHT22", 23)
    assert first.endswith(" 20.0 50.0")
    src.t, src.rh = 25.0, 60.0
    board.update_sensor()
    lines = h.run(
        READ.format(cls="DHT22", pin=23)
        + "import time\ntime.sleep_ms(2100)\n"
        + READ.format(cls="DHT22", pin=23)
    )
    assert lines[0] == first
    assert lines[1].endswith(" 25.0 60.0")


# ---- network, proxy, ntptime, NVS, ids --------------------------------------------------------

CONNECT = """
import network, time
w = network.WLAN(network.STA_IF)
w.active(True)
w.connect("humigraph-virtual", "virtual")
try:
    w.connect("humigraph-virtual", "virtual")
except OSError as e:
    print("QUIRK", e)
print("STATUS", w.status())
t0 = time.ticks_ms()
while not w.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 3000:
    time.sleep_ms(10)
print("CONNECTED", w.isconnected(), w.status(), time.ticks_diff(time.ticks_ms(), t0))
"""

WAIT_STATUS = """
import network, time
w = network.WLAN(network.STA_IF)
t0 = time.ticks_ms()
while w.status() != {want} and time.ticks_diff(time.ticks_ms(), t0) < 5000:
    time.sleep_ms(10)
print("NOW", w.isconnected(), w.status())
"""

THROUGH_PROXY = """
import socket
s = socket.socket()
s.settimeout(3)
try:
    s.connect(socket.getaddrinfo("127.0.0.1", {port})[0][-1])
    s.send(b"ping")
    print("RECV", s.recv(16))
except OSError as e:
    print("SOCKERR", e.errno)
s.close()
"""


def _host_proxy_roundtrip(port: int) -> bytes | None:
    """What a connection through the proxy gets back for b'x' (None: reset by peer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"x")
            return s.recv(16)
    except (ConnectionResetError, BrokenPipeError):
        return None


def test_wifi_states_and_link_proxy(shared: tuple[VirtualBoard, Harness, FixedSource]) -> None:
    board, h, _ = shared
    out = h.run(CONNECT)
    assert out[0] == "QUIRK Wifi Internal Error"
    assert out[1] == "STATUS 1001"
    connected, ok, status, ms = out[2].split()
    assert (ok, status) == ("True", "1010") and 250 <= int(ms) <= 1500
    assert h.run(THROUGH_PROXY.format(port=board.mqtt_port)) == ["RECV b'ping'"]
    assert _host_proxy_roundtrip(board.mqtt_port) == b"x"

    board.set_rssi(-71)
    assert h.run("import network\nprint(network.WLAN(network.STA_IF).status('rssi'))") == ["-71"]

    # a live connection through the proxy is cut when Wi-Fi goes down
    live = socket.create_connection(("127.0.0.1", board.mqtt_port), timeout=3)
    live.sendall(b"a")
    assert live.recv(16) == b"a"
    board.set_wifi("down")
    with contextlib.suppress(ConnectionResetError):
        assert live.recv(16) == b""
    live.close()
    assert _host_proxy_roundtrip(board.mqtt_port) in (b"", None)
    assert h.run(WAIT_STATUS.format(want=201)) == ["NOW False 201"]  # STAT_NO_AP_FOUND
    out = h.run(THROUGH_PROXY.format(port=board.mqtt_port))
    assert out[0] in ("RECV b''", "SOCKERR 104", "SOCKERR 111")
    out = h.run(
        "import ntptime\nntptime.timeout = 0\ntry:\n    ntptime.settime()\nexcept OSError as e:\n    print('NTP', e.errno)"
    )
    assert out == ["NTP 110"]

    # back up: the ESP32 reassociates by itself
    board.set_wifi("up")
    assert h.run(WAIT_STATUS.format(want=1010)) == ["NOW True 1010"]
    assert h.run(THROUGH_PROXY.format(port=board.mqtt_port)) == ["RECV b'ping'"]
    assert h.run("import ntptime, time\nprint('NTP', abs(ntptime.time() - time.time()) < 5)") == [
        "NTP True"
    ]

    board.set_wifi("wrong_password")
    out = h.run(
        "import network\nw = network.WLAN(network.STA_IF)\nw.disconnect()\nprint(w.status())\nw.connect('x', 'y')\n"
        + WAIT_STATUS.format(want=202)
    )
    assert out == ["1000", "NOW False 202"]
    board.set_wifi("up")
    assert h.run(WAIT_STATUS.format(want=1010)) == ["NOW True 1010"]


def test_nvs_ids_and_filesystem(shared: tuple[VirtualBoard, Harness, FixedSource]) -> None:
    board, h, _ = shared
    out = h.run(
        """
import esp32, machine, network, os
n = esp32.NVS("hg")
n.set_i32("boots", 7)
n.set_blob("k", b"\\x01\\x02")
n.commit()
m = esp32.NVS("hg")
buf = bytearray(8)
print(m.get_i32("boots"), m.get_blob("k", buf), bytes(buf[:2]))
try:
    m.get_i32("missing")
except OSError as e:
    print("ENOENT", e.errno)
uid = machine.unique_id()
print(len(uid), uid == network.WLAN(network.STA_IF).config("mac"))
# the flash is the root filesystem: absolute paths, rename included
with open("/a.tmp", "w") as f:
    f.write("x")
os.rename("/a.tmp", "/a.txt")
print(os.getcwd(), "a.txt" in os.listdir("/"), open("a.txt").read())
"""
    )
    assert out[0] == "7 2 b'\\x01\\x02'"
    assert out[1] == "ENOENT 2"
    assert out[2] == "6 True"
    assert out[3] == "/ True x"
    assert (board.flash_dir / "a.txt").read_text() == "x"
    assert (board.flash_dir / ".nvs_hg.json").exists()


# ---- resets -----------------------------------------------------------------------------------


def test_resets_rtc_memory_watchdog_and_power(
    fake_fw: Path, echo_port: int, tmp_path: Path
) -> None:
    flash = tmp_path / "flash"
    with make(fake_fw, echo_port, flash_dir=flash) as b:
        h = Harness(b)
        b.wait_for_line(r"^BOOT cause=1 rtc=b''$", 15)
        assert b.reset_cause == PWRON_RESET and b.restarts == 0 and b.state == "running"
        assert (flash / "main.py").exists() and (flash / "config.json").exists()

        start = h.send("import machine\nmachine.RTC().memory(b'abc')\nmachine.reset()")
        b.wait_for_line(r"^--- reset: SOFT_RESET ---$", 10, start)
        b.wait_for_line(r"^BOOT cause=5 rtc=b'abc'$", 10, start)
        assert b.restarts == 1

        start = h.send("import machine\nmachine.deepsleep(300)")
        b.wait_for_line(r"^--- deep sleep 300 ms ---$", 10, start)
        b.wait_for_line(r"^BOOT cause=4 rtc=b'abc'$", 10, start)
        assert h.run("import machine\nprint(machine.wake_reason())") == ["4"]

        start = h.send("import machine\nw = machine.WDT(timeout=1000)\nw.feed()\nprint('armed')")
        b.wait_for_line(r"^armed$", 10, start)
        t0 = time.monotonic()
        b.wait_for_line(r"^--- reset: WDT_RESET ---$", 10, start)
        assert 0.9 < time.monotonic() - t0 < 4.0
        b.wait_for_line(r"^BOOT cause=3 rtc=b'abc'$", 10, start)

        (flash / "keep.txt").write_text("still here")
        start = len(b.console)
        b.power_cycle(0.2)
        b.wait_for_line(r"^BOOT cause=1 rtc=b''$", 10, start)
        assert (flash / "keep.txt").read_text() == "still here"

        h.run("import machine\nmachine.RTC().memory(b'xyz')")
        start = len(b.console)
        b.reset()
        b.wait_for_line(r"^BOOT cause=2 rtc=b'xyz'$", 10, start)
        assert b.reset_cause == HARD_RESET

        # an application's own sys.exit() is a soft reboot: reset_cause does not change
        start = h.send("import sys\nsys.exit()")
        b.wait_for_line(r"^MPY: soft reboot$", 10, start)
        b.wait_for_line(r"^BOOT cause=2 rtc=b'xyz'$", 10, start)

        b.kill()
        assert not b.running and b.state == "off"
    assert flash.exists()  # a given flash dir is kept
    assert not b.ctl_dir.exists()


def test_rtc_memory_limit_and_idle_board(fake_fw: Path, echo_port: int, tmp_path: Path) -> None:
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "boot.py").write_text("")
    (fw / "main.py").write_text(
        "import machine\n"
        "try:\n    machine.RTC().memory(bytes(2049))\nexcept ValueError:\n    print('too long')\n"
        "machine.RTC().memory(bytes(2048))\nprint('len', len(machine.RTC().memory()))\n"
    )
    with make(fake_fw, echo_port, firmware_dir=fw) as b:
        b.wait_for_line(r"^len 2048$", 15)
        assert "too long" in b.console
        deadline = time.monotonic() + 5
        while b.state != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.state == "idle" and not b.running and b.restarts == 0


def test_bare_board_has_an_empty_flash(fake_fw: Path, echo_port: int) -> None:
    with make(fake_fw, echo_port, bare=True) as b:
        deadline = time.monotonic() + 5
        while b.state != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.state == "idle"
        assert list(b.flash_dir.iterdir()) == []
        flash = b.flash_dir
    assert not flash.exists()  # a temporary flash belongs to the board


def test_wait_for_line_timeout_names_the_pattern(
    shared: tuple[VirtualBoard, Harness, FixedSource],
) -> None:
    board, _, _ = shared
    with pytest.raises(BoardError, match="no console line matched 'never-printed'"):
        board.wait_for_line("never-printed", 0.2)


# ---- serial console + mpremote ------------------------------------------------------------


def _mpremote(link: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "mpremote"), "connect", str(link), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.skipif(not (BIN / "mpremote").exists(), reason="mpremote is not installed")
def test_serial_console_with_mpremote(fake_fw: Path, echo_port: int, tmp_path: Path) -> None:
    link = tmp_path / "ttyVB0"
    with make(fake_fw, echo_port, serial=link) as b:
        b.wait_for_line(r"^BOOT cause=1", 15)
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")

        r = _mpremote(link, "exec", "print(6*7)")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "42"
        assert "MPY: soft reboot" in b.console  # mpremote's soft reset, emulated

        local = tmp_path / "hello.txt"
        local.write_text("hello board\n")
        r = _mpremote(link, "cp", str(local), ":hello.txt")
        assert r.returncode == 0, r.stderr
        assert (b.flash_dir / "hello.txt").read_text() == "hello board\n"
        r = _mpremote(link, "ls")
        assert r.returncode == 0 and "hello.txt" in r.stdout and "main.py" in r.stdout

        # `mpremote reset` is machine.reset(): a full boot, main.py runs again
        start = len(b.console)
        r = _mpremote(link, "reset")
        assert r.returncode == 0, r.stderr
        b.wait_for_line(r"^BOOT cause=5", 15, start)
        assert b.reset_cause == SOFT_RESET
    assert not link.is_symlink()


# ---- the CLI ------------------------------------------------------------------------------


def _ask(sock_path: Path, lines: list[str]) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(sock_path))
        answers = []
        f = s.makefile("rwb")
        for line in lines:
            f.write(line.encode() + b"\n")
            f.flush()
            answers.append(f.readline().decode().strip())
        return answers


def test_cli_board_run_with_control_socket(echo_port: int, tmp_path: Path) -> None:
    ctl = tmp_path / "vb.sock"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "humigraph.cli", "board", "run", "--device", "cli-1", "--site", "lab",
         "--broker", f"mqtt://127.0.0.1:{echo_port}", "--bare", "--control", str(ctl),
         "--flash-dir", str(tmp_path / "flash")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not ctl.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert ctl.exists(), "no control socket: " + (
            proc.communicate()[1] if proc.poll() is not None else ""
        )
        answers = _ask(ctl, ["status", "wifi down", "fault timeout", "fault none", "rssi -80", "wifi sideways",
                             "power-cycle 0.1", "status"])  # fmt: skip
        assert answers[0].startswith("ok state=") and "mqtt_port=" in answers[0]
        assert answers[1:5] == ["ok"] * 4
        assert answers[5].startswith("error:")
        assert answers[6] == "ok"
        assert "restarts=1" in answers[7]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # a failed test must not leave the board running
            proc.communicate()
            raise
    assert proc.returncode == 0, err
    assert "--- reset: PWRON_RESET ---" in out
    assert not ctl.exists()


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"))
    r = subprocess.run(
        [sys.executable, "-m", "humigraph.cli", "board", "run", "--device", "k1", "--site", "lab",
         "--broker", "tcp://x:1"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and "--broker" in r.stderr and "mqtt://HOST:PORT" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "humigraph.cli", "board", "run", "--device", "K 1", "--site", "lab",
         "--broker", "mqtt://x:1"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert r.returncode == 2 and "--device" in r.stderr


# ---- through a real Mosquitto ------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="no mosquitto",
)
def test_mqtt_through_the_link_proxy(fake_fw: Path, tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt
    from humigraph.broker import Mosquitto
    from paho.mqtt.enums import CallbackAPIVersion

    with Mosquitto() as broker:
        b = VirtualBoard("mq-1", "lab", broker.url, firmware_dir=fake_fw)
        with b:
            connected = threading.Event()
            dropped = threading.Event()
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="through-proxy")
            c.on_connect = lambda *a: connected.set()
            c.on_disconnect = lambda *a: dropped.set()
            c.connect("127.0.0.1", b.mqtt_port, keepalive=10)
            c.loop_start()
            try:
                assert connected.wait(10)
                assert b.proxy_connections == 1
                b.set_wifi("down")
                assert dropped.wait(10)
            finally:
                c.loop_stop()
                c.disconnect()


def test_micropython_is_found() -> None:
    assert find_micropython().name == "micropython"
