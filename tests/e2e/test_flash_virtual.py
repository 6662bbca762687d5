"""``humigraph flash`` against a virtual board's pty: really compiles with mpy-cross, uploads with
mpremote, resets the board, which then publishes to a real Mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from humigraph import cli
from humigraph.board import flash
from humigraph.board.virtual import VirtualBoard
from humigraph.broker import Mosquitto
from support.collector import Collector

pytestmark = pytest.mark.e2e


@pytest.fixture
def bare_board(tmp_path: Path) -> Iterator[tuple[VirtualBoard, Mosquitto, Path]]:
    with Mosquitto() as m:
        # A board fresh from writing the MicroPython image: empty filesystem, a REPL on the pty.
        # heap="96K": `flash` puts the package on the board's filesystem as .mpy files, which the
        # 64-bit unix port loads into its heap (about twice what the same bytecode costs on a
        # 32-bit ESP32); the ROMFS mode that `board run` uses by default runs it in place instead.
        board = VirtualBoard(
            "kitchen-1",
            "home",
            m.url,
            serial=tmp_path / "tty",
            bare=True,
            flash_dir=tmp_path / "flash",
            romfs=False,
            heap="96K",
            interval=2,
        )
        board.start()
        try:
            board.wait_for_line(r"Type \"help\(\)\"", timeout=20)
            yield board, m, tmp_path
        finally:
            board.stop()


def _config(board: VirtualBoard, path: Path, **over: object) -> Path:
    cfg: dict[str, object] = {
        "device": "kitchen-1",
        "site": "home",
        "wifi": {"ssid": "lab", "password": "s3cret-wifi"},
        "mqtt": {"host": "127.0.0.1", "port": board.mqtt_port},
        "sensor": {"model": "dht22", "pin": 4, "interval": 2},
    }
    cfg.update(over)
    path.write_text(json.dumps(cfg))
    return path


def test_flash_installs_app_and_board_publishes(
    bare_board: tuple[VirtualBoard, Mosquitto, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    board, m, tmp = bare_board
    link = str(tmp / "tty")
    cfg = _config(board, tmp / "config.json")
    col = Collector(m.port, ["humigraph/#"])
    try:
        t0 = time.monotonic()
        rc = cli.main(["flash", "--port", link, "--config", str(cfg), "--no-console"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "uploading 19 changed file(s)" in out
        assert "online" in out
        assert "s3cret-wifi" not in out
        files = sorted(
            p.relative_to(board.flash_dir).as_posix() for p in board.flash_dir.rglob("*")
        )
        assert "humigraph/app.mpy" in files and "main.py" in files and "config.json" in files
        assert json.loads((board.flash_dir / "config.json").read_text())["wifi"]["ssid"] == "lab"
        col.wait_for(lambda _: col.readings("kitchen-1"), 30, "a reading from the flashed board")
        # the second run finds every file unchanged
        rc = cli.main(["flash", "--port", link, "--config", str(cfg), "--no-console"])
        out = capsys.readouterr().out
        assert rc == 0, out
        assert "all 19 files are up to date; nothing uploaded" in out
        assert time.monotonic() - t0 < 60
    finally:
        col.close()


def test_bad_config_is_refused_before_upload(
    bare_board: tuple[VirtualBoard, Mosquitto, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    board, _m, tmp = bare_board
    cfg = _config(board, tmp / "bad.json", sensor={"model": "dht22", "pin": 34, "interval": 2})
    rc = cli.main(["flash", "--port", str(tmp / "tty"), "--config", str(cfg), "--no-console"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "sensor.pin" in err and "nothing was uploaded" in err
    assert len(err.strip().splitlines()) == 1
    assert not (board.flash_dir / "main.py").exists()
    assert not (board.flash_dir / "config.json").exists()


def test_install_app_uploads_only_what_changed(
    bare_board: tuple[VirtualBoard, Mosquitto, Path],
) -> None:
    board, _m, tmp = bare_board
    link = str(tmp / "tty")
    said: list[str] = []
    first = flash.install_app(link, None, say=said.append)
    assert len(first.uploaded) == 18 and "config.json" not in first.uploaded
    assert any("no config.json" in s for s in said)
    config = flash.prepare_config(_config(board, tmp / "c.json"), ask=None)
    assert flash.install_app(link, config, say=said.append).uploaded == ["config.json"]
    config = dict(config or {}, sensor={"model": "dht22", "pin": 4, "interval": 5})
    assert flash.install_app(link, config, say=said.append).uploaded == ["config.json"]
    again = flash.install_app(link, config, say=said.append)
    assert again.uploaded == [] and len(again.unchanged) == 19
    assert json.loads((board.flash_dir / "config.json").read_text())["sensor"]["interval"] == 5
