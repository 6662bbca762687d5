"""``humigraph board run``: a virtual board in the foreground.

The board's console is printed line by line until Ctrl-C (or SIGTERM), which stops it cleanly.
``--control PATH`` opens a unix socket that takes one command per line, so that test scripts and
other processes can drive the board::

    wifi up|down|wrong_password    fault NAME|none    rssi DBM
    power-cycle [SECONDS]          reset              kill          status

Each command is answered with one line: ``ok`` (``ok <details>`` for ``status``) or
``error: <why>``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import HumigraphError, UsageError
from .virtual import (
    FAULTS,
    SENSOR_MODELS,
    WIFI_STATES,
    VirtualBoard,
    check_id,
    parse_broker,
    parse_heap,
)

__all__ = ["ControlServer", "control_command", "register"]


def register(subparsers: Any) -> None:
    board = subparsers.add_parser(
        "board",
        help="virtual boards (the firmware on the MicroPython unix port)",
        description="Board tools. 'board run' runs a virtual ESP32 board in the foreground.",
    )
    sub = board.add_subparsers(dest="board_command", metavar="SUBCOMMAND")
    sub.required = True
    run = sub.add_parser(
        "run",
        help="run a virtual board in the foreground until Ctrl-C",
        description=(
            "Run the humigraph firmware on a virtual ESP32 board (the MicroPython unix port with "
            "ESP32 shims) and print its console until Ctrl-C. The firmware in firmware/ is "
            "installed into an empty flash directory unless --bare."
        ),
    )
    run.add_argument("--device", required=True, metavar="ID", help="device id, e.g. kitchen-1")
    run.add_argument("--site", required=True, metavar="SITE", help="site id, e.g. home")
    run.add_argument(
        "--broker",
        required=True,
        metavar="URL",
        help="MQTT broker, mqtt://HOST:PORT or mqtts://HOST:PORT",
    )
    run.add_argument(
        "--sensor", default="dht22", choices=SENSOR_MODELS, help="DHT model (default dht22)"
    )
    run.add_argument(
        "--interval",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds between readings (default 10)",
    )
    run.add_argument(
        "--heap",
        default="64K",
        metavar="SIZE",
        help="MicroPython heap for the application (default 64K)",
    )
    run.add_argument(
        "--serial",
        type=Path,
        metavar="LINK",
        help="expose the console on a pty and make LINK a symlink to it",
    )
    run.add_argument(
        "--flash-dir",
        type=Path,
        metavar="DIR",
        help="keep the board's flash in DIR (created if missing; default: a temporary directory)",
    )
    run.add_argument(
        "--bare",
        action="store_true",
        help="empty filesystem: no firmware, no config (like a freshly flashed MicroPython)",
    )
    run.add_argument(
        "--world",
        type=int,
        default=0,
        metavar="SEED",
        help="seed of the simulated room climate (default 0)",
    )
    run.add_argument(
        "--control",
        type=Path,
        metavar="PATH",
        help="unix socket taking control commands (wifi, fault, power-cycle, ...)",
    )
    run.add_argument(
        "--sleep-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply deep-sleep durations by X (e.g. 0.1 to wake 10x sooner; default 1)",
    )
    run.add_argument(
        "--no-romfs",
        action="store_true",
        help="put the humigraph package on the flash instead of a ROMFS image at /rom "
        "(the bytecode then costs heap, as on a board without a ROMFS partition)",
    )
    run.add_argument(
        "--no-mpy",
        action="store_true",
        help="install the firmware package as .py source (default: compiled to .mpy, as humigraph flash does)",
    )
    run.add_argument(
        "--micropython", type=Path, metavar="PATH", help="the MicroPython unix port binary to use"
    )
    run.set_defaults(func=cmd_run)


def _validate(args: argparse.Namespace) -> None:
    check_id(args.device, "--device")
    check_id(args.site, "--site")
    parse_broker(args.broker, "--broker")
    parse_heap(args.heap, "--heap")
    if not args.interval > 0:
        raise UsageError(f"--interval: must be a positive number of seconds, got {args.interval:g}")
    if not args.sleep_scale >= 0:
        raise UsageError(f"--sleep-scale: must be >= 0, got {args.sleep_scale:g}")
    if args.serial is not None and args.serial.exists() and not args.serial.is_symlink():
        raise UsageError(f"--serial: {args.serial} exists and is not a symlink; pick another path")
    if args.control is not None and args.control.exists() and not args.control.is_socket():
        raise UsageError(f"--control: {args.control} exists and is not a socket; pick another path")
    if args.flash_dir is not None and args.flash_dir.exists() and not args.flash_dir.is_dir():
        raise UsageError(f"--flash-dir: {args.flash_dir} is not a directory")


def cmd_run(args: argparse.Namespace) -> int:
    _validate(args)
    from ..world.live import WorldSource

    def echo(line: str) -> None:
        print(line, flush=True)

    board = VirtualBoard(
        args.device,
        args.site,
        args.broker,
        sensor=args.sensor,
        interval=args.interval,
        heap=args.heap,
        flash_dir=args.flash_dir,
        bare=args.bare,
        source=WorldSource(args.world, site=args.site, sensor=args.sensor),
        serial=args.serial,
        sleep_scale=args.sleep_scale,
        micropython=args.micropython,
        on_line=echo,
        compile_firmware=not args.no_mpy,
        romfs=not args.no_romfs,
    )
    stop = threading.Event()
    old_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server: ControlServer | None = None
    try:
        board.start()
        if args.control is not None:
            server = ControlServer(board, args.control)
        print(
            f"humigraph board run: {args.device} ({args.site}) up; flash {board.flash_dir}; "
            f"MQTT via 127.0.0.1:{board.mqtt_port} -> {args.broker}"
            + (f"; serial {args.serial}" if args.serial else "")
            + (f"; control {args.control}" if args.control else "")
            + "; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if server is not None:
            server.close()
        board.stop()
    print(f"humigraph board run: {args.device} stopped", file=sys.stderr, flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# control socket


def control_command(board: VirtualBoard, line: str) -> str:
    """Run one control command on ``board``; returns the answer line (without newline)."""
    words = line.split()
    if not words:
        return "error: empty command"
    cmd, rest = words[0].lower(), words[1:]
    try:
        if cmd == "wifi" and len(rest) == 1 and rest[0] in WIFI_STATES:
            board.set_wifi(rest[0])
        elif cmd == "fault" and len(rest) == 1 and (rest[0] in FAULTS or rest[0] == "none"):
            board.inject(None if rest[0] == "none" else rest[0])
        elif cmd == "rssi" and len(rest) == 1:
            try:
                dbm = int(rest[0])
            except ValueError:
                return f"error: rssi takes a whole number of dBm, got {rest[0]!r}"
            board.set_rssi(dbm)
        elif cmd in ("power-cycle", "power_cycle") and len(rest) <= 1:
            try:
                off = float(rest[0]) if rest else 0.5
            except ValueError:
                return f"error: power-cycle takes an off time in seconds, got {rest[0]!r}"
            board.power_cycle(off)
        elif cmd == "reset" and not rest:
            board.reset()
        elif cmd == "kill" and not rest:
            board.kill()
        elif cmd == "status" and not rest:
            return (
                f"ok state={board.state} running={str(board.running).lower()} "
                f"restarts={board.restarts} reset_cause={board.reset_cause} mqtt_port={board.mqtt_port}"
            )
        else:
            return (
                "error: unknown command; use: wifi up|down|wrong_password, "
                f"fault {'|'.join(FAULTS)}|none, rssi DBM, power-cycle [S], reset, kill, status"
            )
    except HumigraphError as e:
        return f"error: {e}"
    return "ok"


class ControlServer:
    """A unix stream socket at ``path``: one command per line, one answer line each."""

    def __init__(self, board: VirtualBoard, path: Path) -> None:
        self.board = board
        self.path = Path(path)
        if self.path.is_socket():
            self.path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.bind(str(self.path))
        except OSError as e:
            self._sock.close()
            raise UsageError(f"--control: cannot listen on {self.path}: {e.strerror or e}") from e
        self._sock.listen(8)
        self._sock.settimeout(0.5)
        self._closed = threading.Event()
        self._lock = threading.Lock()  # one command at a time
        self._clients: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._serve, name="vb-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        for c in list(self._clients):
            with contextlib.suppress(OSError):
                c.close()
        self._sock.close()
        with contextlib.suppress(OSError):
            if self.path.is_socket():
                os.unlink(self.path)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.add(conn)
            threading.Thread(
                target=self._client, args=(conn,), name="vb-control-client", daemon=True
            ).start()

    def _client(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        buf = b""
        try:
            while not self._closed.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line:
                        continue
                    with self._lock:
                        answer = control_command(self.board, line)
                    conn.sendall(answer.encode() + b"\n")
        except OSError:
            pass
        finally:
            self._clients.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
