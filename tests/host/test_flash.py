"""The esptool stage of ``humigraph flash`` as a plan, port selection with fake port lists, chip
detection with a fake esptool, and config.json preparation. Writing the image needs a real board;
everything here runs without one."""

from __future__ import annotations

import errno
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from humigraph import cli
from humigraph.board import flash
from humigraph.errors import FlashError, UsageError

PY = [sys.executable, "-m", "esptool"]


@dataclass
class FakePortInfo:
    """What pyserial's ``ListPortInfo`` gives us."""

    device: str
    vid: int | None = None
    pid: int | None = None
    description: str = "n/a"


CP2102 = FakePortInfo("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART Bridge Controller")
CH340 = FakePortInfo("/dev/ttyUSB1", 0x1A86, 0x7523, "USB Serial")
NATIVE = FakePortInfo("/dev/ttyACM0", 0x303A, 0x1001, "USB JTAG/serial debug unit")
MOUSE = FakePortInfo("/dev/ttyACM3", 0x046D, 0xC52B, "Logitech receiver")
BUILTIN = FakePortInfo("/dev/ttyS0", None, None, "ttyS0")


@pytest.mark.parametrize(
    ("chip", "offset"),
    [
        ("esp32", "0x1000"),
        ("esp32s2", "0x1000"),
        ("esp32s3", "0x0"),
        ("esp32c3", "0x0"),
        ("esp32c6", "0x0"),
        ("esp32c2", "0x0"),
        ("esp32c5", "0x2000"),
        ("esp32p4", "0x2000"),
    ],
)
def test_plan_writes_at_the_chips_offset_with_baud_fallback(chip: str, offset: str) -> None:
    fw = Path("/img/ESP32_GENERIC.bin")
    steps = flash.esptool_plan(chip, "/dev/ttyUSB0", fw, erase=True)
    assert [s.what for s in steps] == ["erase the flash", f"write MicroPython at {offset}"]
    erase, write = steps
    common = [*PY, "--chip", chip, "--port", "/dev/ttyUSB0", "--baud"]
    assert erase.argv == [*common, "460800", "erase-flash"]
    assert erase.fallback == [*common, "115200", "erase-flash"]
    args = ["write-flash", "--flash-size", "detect", offset, str(fw)]
    assert write.argv == [*common, "460800", *args]
    assert write.fallback == [*common, "115200", *args]


def test_plan_without_erase_and_chip_names() -> None:
    steps = flash.esptool_plan("ESP32-S3", "/dev/ttyACM0", Path("fw.bin"))
    assert len(steps) == 1 and "0x0" in steps[0].argv
    assert flash.esptool_plan("esp32", "/dev/ttyUSB0", None) == []
    with pytest.raises(UsageError, match="esp8266"):
        flash.esptool_plan("esp8266", "/dev/ttyUSB0", Path("fw.bin"))
    assert flash.normalize_chip("ESP32-C3 (QFN32) (revision v0.4)") == "esp32c3"


def test_run_esptool_falls_back_to_115200() -> None:
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> int:
        calls.append(argv)
        return 0 if "115200" in argv else 1

    said: list[str] = []
    flash.run_esptool(
        flash.esptool_plan("esp32", "/dev/ttyUSB0", Path("fw.bin")), runner=runner, say=said.append
    )
    assert [c[c.index("--baud") + 1] for c in calls] == ["460800", "115200"]
    assert any("retrying at 115200" in s for s in said)
    with pytest.raises(FlashError, match="also at 115200 baud"):
        flash.run_esptool(
            flash.esptool_plan("esp32", "/dev/ttyUSB0", Path("fw.bin")),
            runner=lambda argv: 2,
            say=said.append,
        )


def test_port_selection() -> None:
    assert flash.select_port("/dev/ttyX", []) == "/dev/ttyX"
    assert flash.select_port(None, [BUILTIN, MOUSE, CP2102]) == "/dev/ttyUSB0"
    assert flash.select_port(None, [NATIVE, BUILTIN]) == "/dev/ttyACM0"
    with pytest.raises(FlashError) as e:
        flash.select_port(None, [BUILTIN, MOUSE])
    msg = str(e.value)
    assert "no ESP32 board found" in msg and "/dev/ttyACM3 (046d:c52b" in msg
    assert "/dev/ttyS0 (no USB id" in msg and "PORT=" in msg
    with pytest.raises(FlashError, match="no serial ports at all"):
        flash.select_port(None, [])
    with pytest.raises(FlashError) as e:
        flash.select_port(None, [CP2102, CH340, MOUSE])
    msg = str(e.value)
    assert msg.startswith("2 boards look like an ESP32")
    assert "/dev/ttyUSB0" in msg and "/dev/ttyUSB1" in msg and "ttyACM3" not in msg
    assert "PORT=" in msg


def _raises(exc: BaseException) -> Any:
    def opener(path: str) -> None:
        raise exc

    return opener


def test_port_access_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FlashError, match=r"sudo usermod -aG dialout \$USER"):
        flash.check_port_access("/dev/ttyUSB0", _raises(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(FlashError, match="does not exist"):
        flash.check_port_access("/dev/ttyUSB9", _raises(FileNotFoundError(errno.ENOENT, "x")))
    monkeypatch.setattr(flash, "holders", lambda dev: ["screen (pid 4242)"])
    with pytest.raises(FlashError, match=r"busy \(held by screen \(pid 4242\)\)"):
        flash.check_port_access("/dev/ttyUSB0", _raises(OSError(errno.EBUSY, "busy")))
    monkeypatch.setattr(flash, "holders", lambda dev: [])
    with pytest.raises(FlashError, match=r"busy \(held\): close the other serial monitor"):
        flash.check_port_access("/dev/ttyUSB0", _raises(OSError(errno.EWOULDBLOCK, "locked")))


def test_port_busy_names_the_holder(tmp_path: Path) -> None:
    import fcntl
    import os

    master, slave = os.openpty()
    name = os.ttyname(slave)
    fd = os.open(name, os.O_RDWR | os.O_NOCTTY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as pyserial's exclusive=True does
    try:
        with pytest.raises(FlashError, match=rf"busy \(held by .*\(pid {os.getpid()}\)\)"):
            flash.check_port_access(name)
    finally:
        for f in (fd, slave, master):
            os.close(f)


class FakeESP:
    def __init__(self, name: str) -> None:
        self.CHIP_NAME = name
        self.closed = False

        class P:
            def close(inner: Any) -> None:
                self.closed = True

        self._port = P()


def test_detect_chip_with_esptool_api() -> None:
    esp = FakeESP("ESP32-S3")
    seen: dict[str, Any] = {}

    def detector(**kw: Any) -> FakeESP:
        seen.update(kw)
        return esp

    assert flash.detect_chip("/dev/ttyACM0", "auto", detector=detector) == "esp32s3"
    assert seen["port"] == "/dev/ttyACM0" and esp.closed
    assert flash.detect_chip("/dev/ttyACM0", "esp32s3", detector=detector) == "esp32s3"
    with pytest.raises(FlashError, match="is an esp32s3, not an esp32: use --chip esp32s3"):
        flash.detect_chip("/dev/ttyACM0", "esp32", detector=detector)

    def silent(**kw: Any) -> FakeESP:
        raise RuntimeError("Failed to connect to Espressif device: No serial data received.")

    with pytest.raises(FlashError, match="hold BOOT, press EN"):
        flash.detect_chip("/dev/ttyUSB0", detector=silent)


def test_detect_chip_is_esptool_v5_api() -> None:
    import inspect

    from esptool.cmds import detect_chip

    params = inspect.signature(detect_chip).parameters
    assert {"port", "baud", "connect_mode"} <= set(params)


# ---- config.json


def _cfg(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


GOOD = {
    "device": "kitchen-1",
    "site": "home",
    "wifi": {"ssid": "lab", "password": "pw-123"},
    "mqtt": {"host": "192.168.1.10", "port": 1883},
    "sensor": {"model": "dht22", "pin": 4, "interval": 10},
}


def test_config_is_validated_with_the_firmware_schema(tmp_path: Path) -> None:
    assert flash.prepare_config(None) is None
    assert flash.prepare_config(_cfg(tmp_path, GOOD), ask=None) == GOOD
    bad = dict(GOOD, sensor={"model": "dht22", "pin": 34, "interval": 10})
    with pytest.raises(FlashError, match=r"sensor\.pin: GPIO 34.*nothing was uploaded"):
        flash.prepare_config(_cfg(tmp_path, bad), ask=None)
    with pytest.raises(FlashError, match=r"sensor\.interval"):
        flash.prepare_config(
            _cfg(tmp_path, dict(GOOD, sensor={"model": "dht22", "interval": 1})), ask=None
        )
    with pytest.raises(FlashError, match="colour"):
        flash.prepare_config(_cfg(tmp_path, dict(GOOD, colour="red")), ask=None)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(FlashError, match="not valid JSON"):
        flash.prepare_config(tmp_path / "broken.json", ask=None)


def test_missing_wifi_and_broker_are_asked_for(tmp_path: Path) -> None:
    asked: list[tuple[str, bool]] = []
    answers = {"Wi-Fi network name (SSID)": "lab", "Wi-Fi password": "hunter2"}

    def ask(prompt: str, secret: bool) -> str:
        asked.append((prompt, secret))
        return answers.get(prompt, "10.0.0.2")

    cfg = flash.prepare_config(_cfg(tmp_path, {"device": "kitchen-1"}), ask=ask)
    assert cfg is not None
    assert cfg["wifi"] == {"ssid": "lab", "password": "hunter2"}
    assert cfg["mqtt"]["host"] == "10.0.0.2"
    assert [secret for _, secret in asked] == [False, True, False]  # the password without echo
    with pytest.raises(FlashError, match="wifi.ssid is missing and there is no terminal"):
        flash.prepare_config(_cfg(tmp_path, {"device": "kitchen-1"}), ask=None)


def test_dry_run_prints_every_step_and_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fw = tmp_path / "ESP32_GENERIC-v1.26.bin"
    fw.write_bytes(b"\xe9" + bytes(15))
    cfg = _cfg(tmp_path, GOOD)
    rc = cli.main(
        [
            "flash",
            "--port",
            "/dev/ttyUSB7",
            "--chip",
            "esp32c3",
            "--firmware",
            str(fw),
            "--config",
            str(cfg),
            "--erase",
            "--dry-run",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "--chip esp32c3 --port /dev/ttyUSB7 --baud 460800 erase-flash" in out
    assert f"--baud 460800 write-flash --flash-size detect 0x0 {fw}" in out
    assert f"--baud 115200 write-flash --flash-size detect 0x0 {fw}" in out
    assert "mpremote" in out and "connect /dev/ttyUSB7" in out and ":config.json" in out
    assert "pw-123" not in out


def test_missing_image_says_where_to_get_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["flash", "--port", "/dev/ttyUSB7", "--firmware", str(tmp_path / "x.bin")])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert "micropython.org/download" in err and len(err.splitlines()) == 1


def test_a_board_without_micropython_is_named_quickly(tmp_path: Path) -> None:
    import os
    import time
    import tty

    master, slave = os.openpty()  # a port where nothing answers
    tty.setraw(slave)
    try:
        t0 = time.monotonic()
        with pytest.raises(FlashError, match="does not answer the MicroPython REPL.*--firmware"):
            flash.probe_repl(os.ttyname(slave), timeout=1.0)
        assert time.monotonic() - t0 < 5
        assert os.read(master, 64).startswith(b"\r\x03\x03\x01")
    finally:
        os.close(slave)
        os.close(master)


PAGE = """<a href="/resources/firmware/ESP32_GENERIC_S3-20250415-v1.25.0.bin">v1.25.0</a>
<a href="/resources/firmware/ESP32_GENERIC_S3-20250809-v1.26.0.bin">v1.26.0</a>
<a href="/resources/firmware/ESP32_GENERIC_S3-20251001-v1.27.0-preview.12.g0.bin">preview</a>
<a href="/resources/firmware/ESP32_GENERIC_S3-20250415-v1.25.0.uf2">uf2</a>"""


def test_download_picks_the_newest_stable_image_and_caches_it(tmp_path: Path) -> None:
    image = b"\xe9" + bytes(100 * 1024)
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return PAGE.encode() if url.endswith("/") else image

    said: list[str] = []
    got = flash.download_firmware("esp32s3", cache=tmp_path, fetch=fetch, say=said.append)
    assert got == tmp_path / "ESP32_GENERIC_S3-20250809-v1.26.0.bin"
    assert fetched == [
        "https://micropython.org/download/ESP32_GENERIC_S3/",
        "https://micropython.org/resources/firmware/ESP32_GENERIC_S3-20250809-v1.26.0.bin",
    ]
    assert got.read_bytes() == image
    assert (tmp_path / (got.name + ".sha256")).read_text().split()[0] == flash._sha256(got)
    # the second time only the page is read; the cached image's checksum is checked
    fetched.clear()
    assert flash.download_firmware("esp32s3", cache=tmp_path, fetch=fetch, say=said.append) == got
    assert len(fetched) == 1 and any("cached" in s for s in said)
    # a corrupted cache is downloaded again
    got.write_bytes(b"\xe9garbage")
    fetched.clear()
    flash.download_firmware("esp32s3", cache=tmp_path, fetch=fetch, say=said.append)
    assert len(fetched) == 2 and got.read_bytes() == image


def test_download_failures_say_where_to_get_the_image(tmp_path: Path) -> None:
    def offline(url: str) -> bytes:
        raise OSError("Network is unreachable")

    with pytest.raises(FlashError, match="micropython.org/download.*--firmware"):
        flash.download_firmware("esp32", cache=tmp_path, fetch=offline)
    with pytest.raises(FlashError, match="does not look like an ESP32 image"):
        flash.download_firmware(
            "esp32s3",
            cache=tmp_path,
            fetch=lambda url: PAGE.encode() if url.endswith("/") else b"<html>",
        )


def test_dry_run_with_download_names_the_page(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(
        ["flash", "--port", "/dev/ttyACM0", "--chip", "esp32s3", "--download", "--dry-run"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "https://micropython.org/download/ESP32_GENERIC_S3/" in out
    assert "--baud 460800 write-flash --flash-size detect 0x0 ESP32_GENERIC_S3-" in out


def test_config_errors_come_before_questions(tmp_path: Path) -> None:
    """A wrong pin is named at once, not after asking for a missing Wi-Fi password."""
    cfg = tmp_path / "c.json"
    cfg.write_text(
        '{"device": "k1", "wifi": {"ssid": "w"}, "mqtt": {"host": "h"}, "sensor": {"pin": 34}}'
    )
    asked: list[str] = []

    def ask(prompt: str, secret: bool) -> str:
        asked.append(prompt)
        return "pw"

    with pytest.raises(flash.FlashError, match=r"sensor\.pin.*input-only"):
        flash.prepare_config(cfg, ask=ask)
    assert asked == []


@pytest.mark.parametrize(
    "machine, chip",
    [
        ("Generic ESP32 module with ESP32", "esp32"),
        ("ESP32S3 module with ESP32S3", "esp32s3"),
        ("ESP32C3 module with ESP32C3", "esp32c3"),
        ("linux [GCC 14.2.1] version", None),  # a virtual board: nothing to check
    ],
)
def test_chip_of_running_micropython(machine: str, chip: str | None) -> None:
    assert flash.chip_of_machine(machine) == chip


def test_app_install_refuses_a_board_for_another_chip() -> None:
    assert (
        flash.check_running_chip("ESP32S3 module with ESP32S3", "auto", "/dev/ttyACM0") == "esp32s3"
    )
    assert flash.check_running_chip("linux [GCC 14.2.1] version", "esp32", "/tmp/vb") is None
    with pytest.raises(
        flash.FlashError, match=r"runs MicroPython for an esp32s3, not an esp32: use --chip esp32s3"
    ):
        flash.check_running_chip("ESP32S3 module with ESP32S3", "esp32", "/dev/ttyACM0")
