"""``humigraph demo``: the whole stack on one machine, with the dashboard.

A broker (Mosquitto when installed, else the embedded one), one simulated site of six virtual
boards running the real firmware on the MicroPython unix port, fed by the world simulator running
faster than the clock, the gateway (SQLite in a temporary directory, the committed INT8 model when
present) and its dashboard. During the first minute and a half a script makes every feature show:
people entering a room, a door opened, a shower pushing the bathroom toward condensation, a sensor
stuck and then spiking, a board losing Wi-Fi and replaying its buffer. Ctrl-C (or SIGTERM) stops
everything; nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from .broker import EmbeddedBroker, Mosquitto, local_broker
from .errors import GatewayError, UsageError
from .world.physics import abs_humidity, rel_humidity
from .world.source import Truth

SITE = "home"
# One board per room of world seed 1 with 6 rooms (humigraph.world.site.make_site).
DEMO_BOARDS = ("hall-1", "living-1", "kitchen-1", "bath-1", "bed-1", "office-1")
WORLD_SEED = 1
WORLD_SPEED = 30.0  # one world hour every two wall-clock minutes
REPO_MODEL = Path(__file__).resolve().parents[2] / "models" / "humigraph-int8.tflite"
# Thresholds tuned so the scripted events raise their alerts within the demo's first minutes
# (keys of humigraph.gateway.alerts.AlertConfig).
DEMO_ALERTS: dict[str, object] = {"stuck_readings": 12, "min_hold_s": 10.0}


def _ramp(x: float) -> float:
    """0 before the start, then rising smoothly toward 1 (63 % at x = 1)."""
    return 0.0 if x <= 0 else 1.0 - math.exp(-x)


def _pulse(elapsed: float, duration: float, rise: float, fall: float) -> float:
    """Rises for ``duration`` s (time constant ``rise``), then decays (``fall``)."""
    if elapsed <= 0:
        return 0.0
    if elapsed <= duration:
        return _ramp(elapsed / rise)
    return _ramp(duration / rise) * math.exp(-(elapsed - duration) / fall)


@dataclass
class DemoWorld:
    """A value source: the world simulator plus the scripted events, in wall seconds since
    ``t0``. Each event is an overlay on what the simulated sensors measure."""

    world: Any  # humigraph.world.live.WorldSource
    t0: float
    people: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # start, s, n
    doors: list[tuple[float, str, str]] = field(default_factory=list)  # start, dev a, dev b
    showers: dict[str, tuple[float, float]] = field(default_factory=dict)  # start, s
    stuck: dict[str, tuple[float, float]] = field(default_factory=dict)  # start, end
    spikes: dict[str, tuple[float, float]] = field(default_factory=dict)  # start, end
    _frozen: dict[str, Truth] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sample(self, dev: str, when: float) -> Truth:
        with self._lock:
            return self._sample(dev, when)

    def fault(self, dev: str, when: float) -> str | None:
        return self.world.fault(dev, when)  # type: ignore[no-any-return]

    def _sample(self, dev: str, when: float) -> Truth:
        el = when - self.t0
        st = self.stuck.get(dev)
        if st and st[0] <= el < st[1]:
            # The element froze: the same value from the first read after the onset.
            if dev not in self._frozen:
                self._frozen[dev] = self._climate(dev, when)
            return self._frozen[dev]
        truth = self._climate(dev, when)
        sp = self.spikes.get(dev)
        # One reading in three (readings every 2 s) jumps up 9 °C with the RH down: a spike that
        # moves the dew point little, so it raises no condensation alert elsewhere.
        if sp and sp[0] <= el < sp[1] and int(when // 2) % 3 == 0:
            return Truth(t=truth.t + 9.0, rh=max(1.0, truth.rh - 25.0))
        return truth

    def _climate(self, dev: str, when: float) -> Truth:
        base = self._room(dev, when)
        el = when - self.t0
        for start, a, b in self.doors:
            if dev in (a, b) and el >= start:
                other = self._room(b if dev == a else a, when)
                mix = 0.45 * _ramp((el - start) / 25.0)  # the two rooms' air mixes
                ah = abs_humidity(base.t, base.rh)
                ah_o = abs_humidity(other.t, other.rh)
                t = base.t + (other.t - base.t) * mix
                base = Truth(t=t, rh=float(rel_humidity(t, ah + (ah_o - ah) * mix)))
        return base

    def _room(self, dev: str, when: float) -> Truth:
        """The world plus people and showers (not doors: no recursion between two rooms)."""
        tr = self.world.sample(dev, when)
        t, ah = tr.t, float(abs_humidity(tr.t, tr.rh))
        el = when - self.t0
        if dev in self.people:
            start, dur, n = self.people[dev]
            p = _pulse(el - start, dur, 40.0, 60.0)
            t += 0.35 * n * p  # ~100 W each, in a small room, world running fast
            ah += 0.6 * n * p  # ~60 g/h of moisture each
        if dev in self.showers:
            start, dur = self.showers[dev]
            p = _pulse(el - start, dur, 30.0, 70.0)
            target = float(abs_humidity(tr.t + 1.5, 97.0))  # steam: almost saturated
            t += 1.5 * p
            ah += max(0.0, target - ah) * p
        rh = float(rel_humidity(t, ah))
        return Truth(t=t, rh=min(99.5, max(0.5, rh)))


@dataclass
class Step:
    at: float  # seconds after the boards start
    text: str
    action: Callable[[], None]


def script(world: DemoWorld, boards: dict[str, Any]) -> list[Step]:
    """The scripted events of the first two minutes, in order."""

    def people() -> None:
        world.people["living-1"] = (world_el(), 70.0, 3)

    def door() -> None:
        world.doors.append((world_el(), "kitchen-1", "living-1"))

    def shower() -> None:
        world.showers["bath-1"] = (world_el(), 60.0)

    def stuck() -> None:
        # 40 s: the stuck rule sees its 12 identical readings from about 24 s on, and the alert
        # pass runs every 10 s (the model's step); with 30 s a pass could fall between the two
        world.stuck["office-1"] = (world_el(), world_el() + 40.0)

    def spikes() -> None:
        world.spikes["office-1"] = (world_el(), world_el() + 40.0)

    def wifi(state: str) -> Callable[[], None]:
        return lambda: boards["bed-1"].set_wifi(state)

    def world_el() -> float:
        return time.time() - world.t0

    return [
        Step(10, "three people walk into the living room: living-1's temperature and humidity "
             "rise; the model's occupancy goes up", people),
        Step(15, "a shower starts in the bathroom: bath-1's humidity climbs toward the dew "
             "point of the coldest room (condensation alert)", shower),
        Step(20, "office-1's sensor gets stuck: the same reading again and again (stuck alert; "
             "the model forecasts it from its neighbours)", stuck),
        Step(30, "bed-1 loses Wi-Fi: it goes offline (its last will) and buffers its readings",
             wifi("down")),
        Step(40, "the door between the kitchen and the living room opens: their air mixes",
             door),
        Step(60, "office-1's sensor now spikes: jumps of +9 °C (spike alert)", spikes),
        Step(70, "bed-1's Wi-Fi is back: it reconnects and replays every buffered reading, "
             "nothing lost (see its gaps: 0)", wifi("up")),
        Step(100, "the script is over; the world keeps running (30x faster than the clock)",
             lambda: None),
    ]  # fmt: skip


class SiteView:
    """Follows the site over MQTT for the terminal: who is online, alerts as they come."""

    def __init__(self, port: int, out: TextIO, t0: float, prefix: str = "humigraph") -> None:
        self.out = out
        self.t0 = t0
        self.lock = threading.Lock()
        self.online: dict[str, bool] = {}
        self.readings: dict[str, int] = {}
        self.active: dict[str, str] = {}
        self.model_outputs = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="humigraph-demo-view")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{prefix}/{SITE}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()

    def say(self, text: str) -> None:
        el = max(0, int(time.time() - self.t0))
        with self.lock:
            self.out.write(f"[{el // 60:02d}:{el % 60:02d}] {text}\n")
            self.out.flush()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        try:
            if len(parts) == 3 and parts[2] == "alerts":
                self._alert(json.loads(msg.payload))
            elif len(parts) == 3 and parts[2] == "insight":
                with self.lock:
                    self.model_outputs += 1
            elif len(parts) == 4 and parts[3] == "status":
                with self.lock:
                    self.online[parts[2]] = msg.payload == b"online"
            elif len(parts) == 4 and parts[3] == "state":
                with self.lock:
                    self.readings[parts[2]] = self.readings.get(parts[2], 0) + 1
        except (ValueError, AttributeError):
            pass  # not ours to judge: the gateway quarantines bad payloads

    def _alert(self, ev: dict[str, Any]) -> None:
        key = str(ev.get("id"))
        what = f"{ev.get('kind')} {ev.get('dev') or ev.get('site')}"
        if ev.get("state") == "cleared":
            with self.lock:
                self.active.pop(key, None)
            self.say(f"alert cleared: {what}: {ev.get('message')}")
        else:
            with self.lock:
                self.active[key] = what
            self.say(f"alert {str(ev.get('level')).upper()}: {what}: {ev.get('message')}")

    def summary(self) -> str:
        with self.lock:
            up = sum(1 for d in DEMO_BOARDS if self.online.get(d))
            n = sum(self.readings.values())
            return (
                f"{up}/{len(DEMO_BOARDS)} boards online, {n} readings, "
                f"{len(self.active)} active alerts, model outputs: {self.model_outputs}"
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _start_gateway(broker_url: str, db: Path, http: str, model: Path | None) -> Any:
    from .gateway.service import Gateway

    kwargs: dict[str, Any] = {
        "model": model,
        "alerts": DEMO_ALERTS,
        # every 10 s instead of the card's step (60 s), so the demo's forecasts move
        "infer_interval": 10.0 if model is not None else None,
        # the model's one-minute grid step is 2 s of the demo's clock: it sees the house's
        # dynamics at the pace it was trained on, not thirty times faster
        "time_scale": WORLD_SPEED,
    }
    try:
        return Gateway(broker_url, f"sqlite:///{db}", http=http, **kwargs).start()
    except GatewayError as e:
        # The dashboard's port is taken (another gateway, a second demo): any free one.
        if str(e).startswith("http:") and not http.endswith(":0"):
            host = http.rsplit(":", 1)[0]
            return Gateway(broker_url, f"sqlite:///{db}", http=f"{host}:0", **kwargs).start()
        raise


def run_demo(
    duration: float | None = None,
    interval: float = 2.0,
    http: str = "127.0.0.1:8080",
    model: Path | None = None,
    out: TextIO = sys.stdout,
) -> int:
    from .board.virtual import VirtualBoard
    from .world.live import WorldSource

    stop = threading.Event()
    old_term = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    broker: Mosquitto | EmbeddedBroker = local_broker()
    tmp = tempfile.TemporaryDirectory(prefix="humigraph-demo-")
    boards: dict[str, VirtualBoard] = {}
    gateway: Any = None
    view: SiteView | None = None
    model = model if model is not None else (REPO_MODEL if REPO_MODEL.is_file() else None)
    try:
        kind = "Mosquitto" if isinstance(broker, Mosquitto) else "the embedded amqtt broker"
        broker.start()
        print(f"broker: {kind} on {broker.url}", file=out)
        gateway = _start_gateway(broker.url, Path(tmp.name) / "gateway.db", http, model)
        host, port = gateway.http_address
        if model is None:
            print(
                "model: none (models/humigraph-int8.tflite is missing): reasoning is off, so no "
                "forecasts, health or insights; the alert rules still run. Build it with "
                "`make train quantize`.",
                file=out,
            )
        else:
            print(f"model: {model}", file=out)
        t0 = time.time()
        world = DemoWorld(WorldSource(seed=WORLD_SEED, rooms=6, speed=WORLD_SPEED), t0)
        view = SiteView(broker.port, out, t0)
        for dev in DEMO_BOARDS:
            b = VirtualBoard(dev, SITE, broker.url, sensor="dht22", interval=interval, source=world)
            boards[dev] = b
            b.start()
        print(
            f"boards: {', '.join(DEMO_BOARDS)}: the real firmware on the MicroPython unix port "
            f"(64 KiB heap each), a reading every {interval:g} s; the world runs "
            f"{WORLD_SPEED:g}x faster than the clock",
            file=out,
        )
        print(
            f"\ndashboard: http://{host}:{port}/\n"
            "  look at: the site graph (boards placed by the model's learned links), each board's "
            "charts with the +5/+15/+30 min forecast ahead, the alerts with their explanations\n"
            f"  API: http://{host}:{port}/api/devices  ·  MQTT: mosquitto_sub -p {broker.port} "
            "-t 'humigraph/#' -v\n"
            "Ctrl-C stops everything.\n",
            file=out,
        )
        out.flush()
        steps = script(world, boards)
        world.t0 = time.time()  # the script's clock starts with the boards
        view.t0 = world.t0
        next_summary = 10.0
        while not stop.is_set():
            el = time.time() - world.t0
            if duration is not None and el >= duration:
                break
            while steps and steps[0].at <= el:
                s = steps.pop(0)
                s.action()
                view.say(s.text)
            if el >= next_summary:
                view.say(view.summary())
                next_summary += 30.0
            stop.wait(0.25)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old_term)
        # Ctrl-C again while stopping must not leave half of it running.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            print("\nstopping the boards, the gateway and the broker...", file=out)
            out.flush()
            if view:
                view.close()
            for b in boards.values():
                with contextlib.suppress(Exception):
                    b.stop()
            if gateway is not None:
                with contextlib.suppress(Exception):
                    gateway.stop()
            broker.close()
            tmp.cleanup()
        finally:
            signal.signal(signal.SIGINT, old_int)
        print("stopped.", file=out)
        out.flush()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be a positive number of seconds")
    if not args.interval >= 2:
        raise UsageError(
            f"--interval must be at least 2 s (the DHT22's minimum), got {args.interval:g}"
        )
    model = Path(args.model) if args.model else None
    if model is not None and not model.is_file():
        raise UsageError(
            f"--model {args.model}: no such file; give a .tflite with its card beside it"
        )
    return run_demo(duration=args.duration, interval=args.interval, http=args.http, model=model)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "demo",
        help="the whole stack on one machine: broker, six virtual boards, gateway, dashboard",
        description="Starts a broker, six virtual boards running the real firmware in a simulated "
        "home, the gateway with the INT8 model and its dashboard, and plays scripted events "
        "(people, a door, a shower, a failing sensor, a Wi-Fi loss). Ctrl-C stops everything.",
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="board reading interval in s (default 2; the script's alerts are timed for 2)",
    )
    p.add_argument(
        "--http",
        default="127.0.0.1:8080",
        help="dashboard address HOST:PORT (default 127.0.0.1:8080; a free port when taken)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a .tflite model (default: models/humigraph-int8.tflite when present)",
    )
    p.set_defaults(func=_cmd_demo)
