"""``humigraph demo``: a broker and virtual boards running the real firmware, with a live view.

First version: three boards in one simulated site (humigraph.world), each a MicroPython
unix-port process with a 64 KiB heap, publishing to a local broker; the terminal shows their
latest readings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from .broker import EmbeddedBroker, Mosquitto, local_broker
from .errors import UsageError

DEMO_BOARDS = (("living-1", "dht22"), ("kitchen-1", "dht22"), ("bath-1", "dht11"))


@dataclass
class BoardView:
    dev: str
    status: str = "?"
    reading: dict[str, Any] | None = None
    count: int = 0
    failed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class LiveView:
    """Subscribes to the site and keeps the latest state of every board."""

    def __init__(self, port: int, site: str, prefix: str = "humigraph") -> None:
        self.boards: dict[str, BoardView] = {}
        self.lock = threading.Lock()
        self.prefix = prefix
        self.site = site
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="humigraph-demo-view")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/{site}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) != 4:
            return
        dev, kind = parts[2], parts[3]
        with self.lock:
            b = self.boards.setdefault(dev, BoardView(dev))
            try:
                if kind == "state":
                    r = json.loads(msg.payload)
                    b.reading = r
                    b.count += 1
                    b.failed += 0 if r.get("ok") else 1
                elif kind == "status":
                    b.status = msg.payload.decode(errors="replace")
                elif kind == "meta":
                    b.meta = json.loads(msg.payload)
            except ValueError:
                pass

    def render(self) -> str:
        rows = [
            f"{'board':<12} {'status':<8} {'temp °C':>8} {'RH %':>6} {'boot':>5} {'seq':>6} "
            f"{'readings':>8} {'failed':>6} {'free heap':>9}"
        ]
        with self.lock:
            for dev in sorted(self.boards):
                b = self.boards[dev]
                r = b.reading or {}
                t = "-" if r.get("t") is None else f"{r['t']:.1f}"
                rh = "-" if r.get("rh") is None else f"{r['rh']:.1f}"
                rows.append(
                    f"{dev:<12} {b.status:<8} {t:>8} {rh:>6} {r.get('boot', '-'):>5} "
                    f"{r.get('seq', '-'):>6} {b.count:>8} {b.failed:>6} {b.meta.get('free', '-'):>9}"
                )
        return "\n".join(rows)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_demo(duration: float | None = None, interval: float = 2.0, out: TextIO = sys.stdout) -> int:
    from .board.virtual import VirtualBoard
    from .world.live import WorldSource

    broker: Mosquitto | EmbeddedBroker = local_broker()
    kind = "mosquitto" if isinstance(broker, Mosquitto) else "embedded amqtt broker"
    broker.start()
    boards: list[VirtualBoard] = []
    view: LiveView | None = None
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        print(f"broker: {kind} on {broker.url}", file=out)
        source = WorldSource(seed=1, rooms=6)  # rooms, people, doors and DHT sensors
        for dev, sensor in DEMO_BOARDS:
            b = VirtualBoard(
                dev, "home", broker.url, sensor=sensor, interval=interval, source=source
            )
            b.start()
            boards.append(b)
            print(
                f"board {dev}: {sensor.upper()}, real firmware on the MicroPython unix port, "
                f"64 KiB heap, flash in {b.flash_dir}",
                file=out,
            )
        view = LiveView(broker.port, "home")
        print(f"watch it yourself: mosquitto_sub -p {broker.port} -t 'humigraph/#' -v", file=out)
        print("Ctrl-C stops everything.\n", file=out)
        t0 = time.monotonic()
        tty = out.isatty()
        while not stop.is_set():
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            table = view.render()
            if tty:
                out.write("\x1b[H\x1b[J" + table + "\n")
            else:
                out.write(table + "\n\n")
            out.flush()
            stop.wait(2.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        print("\nstopping boards and broker...", file=out)
        if view:
            view.close()
        for b in boards:
            with contextlib.suppress(Exception):
                b.stop()
        broker.close()
        print("stopped.", file=out)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be a positive number of seconds")
    return run_demo(duration=args.duration, interval=args.interval)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="the whole stack on one machine (broker, virtual boards, live view)",
        description="Starts a broker and three virtual boards running the real firmware, and shows "
        "their readings live until Ctrl-C.",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--interval", type=float, default=2.0, help="board reading interval in s (default 2)"
    )
    p.set_defaults(func=_cmd_demo)
