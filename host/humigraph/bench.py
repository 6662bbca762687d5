"""``humigraph bench firmware``: the real firmware on a virtual board, measured against a baseline.

- soak: one board with a 64 KiB heap for N minutes: readings delivered, peak live heap, and the
  time from a reading being taken (its ``ts``) to its arrival at a subscriber of the broker;
- replay: a board that boots with ``--replay`` readings already buffered on its flash (as after a
  long outage) drains them; its rate is compared with a stop-and-wait QoS 1 publisher (what
  umqtt.simple does: publish, wait for the PUBACK, next) running on the same MicroPython binary
  with the same MQTT client against the same broker.

``humigraph bench ingest`` (bench_ingest.py) measures the gateway's ingest against a naive
subscriber; ``humigraph bench model`` (bench_model.py) the INT8 model against its float32 twin.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from .broker import Mosquitto
from .errors import HumigraphError, UsageError

# The firmware's on-flash record (firmware/humigraph/buffer.py): boot, seq, ts s, ts ms, up ms,
# t 0.1 °C, rh 0.1 %, err, sensor; segment files of 64 records, cursor (magic, head, tail, dropped).
_REC = struct.Struct("<IIIHIhHBB")
_SEG = 64
_CUR = struct.Struct("<IIII")
_CUR_MAGIC = 0x48474231


def prefill_flash(flash: Path, n: int, boot: int = 1, ts0: int | None = None) -> None:
    """Writes n buffered readings into a board's flash, exactly as the firmware stores them."""
    buf = flash / "buf"
    buf.mkdir(parents=True, exist_ok=True)
    ts0 = int(time.time()) - n * 2 if ts0 is None else ts0
    for seg in range((n + _SEG - 1) // _SEG):
        recs = b"".join(
            _REC.pack(boot, i, ts0 + 2 * i, 0, 2000 * i, 215, 452, 0, 1)
            for i in range(seg * _SEG, min(n, (seg + 1) * _SEG))
        )
        (buf / str(seg)).write_bytes(recs)
    (buf / "cur").write_bytes(_CUR.pack(_CUR_MAGIC, 0, n, 0))
    (flash / ".boot").write_text(str(boot))


class _Sub:
    def __init__(self, port: int, topic: str) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.acks: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}"
        )
        self.c.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        time.sleep(0.5)

    def _msg(self, c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        now = time.time()
        try:
            d = json.loads(m.payload)
        except ValueError:
            return
        with self.lock:
            if m.topic.endswith("/state"):
                self.arrivals.append((now, d))
            elif m.topic.endswith("/ack"):
                self.acks.append(d)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def bench_soak(minutes: float, heap: str = "64K", interval: float = 2.0) -> dict[str, Any]:
    from .board.virtual import VirtualBoard

    with Mosquitto(persistence=False) as broker:
        sub = _Sub(broker.port, "humigraph/bench/#")
        board = VirtualBoard("soak-1", "bench", broker.url, heap=heap, interval=interval)
        board.start()
        try:
            end = time.monotonic() + minutes * 60
            n = 0
            while time.monotonic() < end:
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
                n += 1
                sub.c.publish(
                    "humigraph/bench/soak-1/cmd",
                    json.dumps({"id": f"ping{n}", "cmd": "ping"}),
                    qos=1,
                )
            time.sleep(2)
            errors = [ln for ln in board.console if "MemoryError" in ln or "Traceback" in ln]
            running = board.running
            # What the process got on top of the application's budget: the shims' allowance
            # and the ROMFS image (ROM and flash on a real board).
            extra = board.heap_extra_bytes
        finally:
            board.stop()
            sub.close()
    with sub.lock:
        arrivals = list(sub.arrivals)
        acks = [a for a in sub.acks if a.get("ok")]
    lat = [(at - d["ts"]) * 1000 for at, d in arrivals if d.get("ts")]
    seqs = sorted({d["seq"] for _, d in arrivals})
    peaks = [a["result"]["heap_peak"] for a in acks]
    frees = [a["result"]["free"] for a in acks]
    return {
        "minutes": minutes,
        "heap": heap,
        "interval_s": interval,
        "readings": len(arrivals),
        "missing": (seqs[-1] + 1 - len(seqs)) if seqs else None,
        "memory_errors": len(errors),
        "still_running": running,
        "heap_peak_bytes": max(peaks) - extra if peaks else None,
        "heap_peak_process_bytes": max(peaks) if peaks else None,
        "heap_extra_bytes": extra,
        "free_min_bytes": min(frees) if frees else None,
        "latency_ms": {
            "p50": round(_pct(lat, 50), 1) if lat else None,
            "p95": round(_pct(lat, 95), 1) if lat else None,
            "max": round(max(lat), 1) if lat else None,
        },
    }


_BASELINE = r"""
import sys, time, asyncio
sys.path.insert(0, sys.argv[1])
from humigraph.mqtt import MQTTClient
N = int(sys.argv[3])
acked = [0]
async def main():
    c = MQTTClient("bench-baseline", "127.0.0.1", int(sys.argv[2]), keepalive=30)
    ev = asyncio.Event()
    def on_puback(pid):
        acked[0] += 1
        ev.set()
    c.on_puback = on_puback
    await c.connect()
    t0 = time.ticks_ms()
    for i in range(N):
        ev.clear()
        msg = '{"v":1,"dev":"base-1","boot":1,"seq":%d,"ts":1764400000.000,"up":%d,"t":21.5,"rh":45.2,"ok":true,"err":null,"sensor":"dht22"}' % (i, i * 2000)
        await c.publish("humigraph/bench/base-1/state", msg, qos=1)
        await ev.wait()
    dt = time.ticks_diff(time.ticks_ms(), t0)
    print("BASELINE %d %d" % (acked[0], dt))
    await c.disconnect()
asyncio.run(main())
"""


def bench_replay(n: int, heap: str = "64K") -> dict[str, Any]:
    from .board.virtual import VirtualBoard, find_micropython, firmware_dir

    with Mosquitto(persistence=False) as broker, tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp) / "flash"
        board = VirtualBoard(
            "replay-1", "bench", broker.url, heap=heap, interval=60.0, flash_dir=flash
        )
        prefill_flash(flash, n)  # the board installs the firmware around it and finds them at boot
        # One subscriber measures both sides the same way: arrival times at a broker client.
        sub = _Sub(broker.port, "humigraph/bench/+/state")
        board.start()
        try:
            deadline = time.monotonic() + max(120.0, n / 20)
            while time.monotonic() < deadline:
                with sub.lock:
                    got = {d["seq"] for _, d in sub.arrivals if d["boot"] == 1}
                if len(got) >= n:
                    break
                time.sleep(0.2)
            with sub.lock:
                times = [at for at, d in sub.arrivals if d["boot"] == 1]
                got = {d["seq"] for _, d in sub.arrivals if d["boot"] == 1}
        finally:
            board.stop()
        if len(got) < n:
            raise HumigraphError(f"replay bench: only {len(got)} of {n} buffered readings arrived")
        board_rate = (n - 1) / (max(times) - min(times))

        # The baseline gets the same compiled client the board runs (compiling it from source
        # alone would not fit the heap).
        from .board.install import compile_file, find_mpy_cross

        lib = Path(tmp) / "lib"
        (lib / "humigraph").mkdir(parents=True)
        for name in ("__init__", "mqtt"):
            src = firmware_dir() / "humigraph" / f"{name}.py"
            compile_file(src, lib / "humigraph" / f"{name}.mpy", find_mpy_cross())
        script = Path(tmp) / "baseline.py"
        script.write_text(_BASELINE)
        out = subprocess.run(
            [
                str(find_micropython()),
                "-X",
                f"heapsize={heap}",
                str(script),
                str(lib),
                str(broker.port),
                str(n),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BASELINE")), None)
        time.sleep(1.0)
        sub.close()
        if line is None:
            raise HumigraphError(
                f"baseline publisher failed: {out.stdout[-300:]} {out.stderr[-300:]}"
            )
        _, acked, ms = line.split()
        with sub.lock:
            btimes = [at for at, d in sub.arrivals if d.get("dev") == "base-1"]
        if len(btimes) < n:
            raise HumigraphError(f"baseline: only {len(btimes)} of {n} readings arrived")
        base_rate = (n - 1) / (max(btimes) - min(btimes))
    return {
        "buffered": n,
        "delivered": len(got),
        "board_readings_per_s": round(board_rate, 1),
        "baseline_stop_and_wait_per_s": round(base_rate, 1),
        "baseline_acked_per_s_at_the_publisher": round(int(acked) / (int(ms) / 1000), 1),
        "ratio": round(board_rate / base_rate, 2),
    }


def run_firmware_bench(minutes: float, replay: int) -> dict[str, Any]:
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "command": f"humigraph bench firmware --minutes {minutes:g} --replay {replay}",
        "soak": bench_soak(minutes),
        "replay": bench_replay(replay),
    }


def _table(r: dict[str, Any]) -> str:
    s, p = r["soak"], r["replay"]
    lat = s["latency_ms"]
    rows = [
        (
            "soak duration",
            f"{s['minutes']:g} min, heap {s['heap']}, interval {s['interval_s']:g} s",
        ),
        ("readings delivered / missing", f"{s['readings']} / {s['missing']}"),
        ("MemoryError or traceback lines", str(s["memory_errors"])),
        (
            "peak live heap of the app (after GC, 1 s samples)",
            f"{s['heap_peak_bytes']} of 65536 bytes (process: {s['heap_peak_process_bytes']}, "
            f"of which {s['heap_extra_bytes']} shims + ROMFS image)",
        ),
        ("lowest free heap seen by ping", f"{s['free_min_bytes']} bytes"),
        (
            "reading -> subscriber latency p50/p95/max",
            f"{lat['p50']} / {lat['p95']} / {lat['max']} ms",
        ),
        (
            "replay of buffered readings",
            f"{p['board_readings_per_s']} readings/s ({p['buffered']} buffered)",
        ),
        ("baseline: stop-and-wait QoS 1", f"{p['baseline_stop_and_wait_per_s']} readings/s"),
        ("replay / baseline", f"{p['ratio']}x"),
    ]
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.what == "ingest":
        from . import bench_ingest

        return bench_ingest.run_command(args)
    if args.what == "model":
        from . import bench_model

        return bench_model.run_command(args)
    if args.minutes <= 0 or args.replay < 10:
        raise UsageError("--minutes must be > 0 and --replay at least 10")
    r = run_firmware_bench(args.minutes, args.replay)
    print(json.dumps(r, indent=2) if args.json else _table(r))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="benchmarks (firmware, ingest, model)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", choices=["firmware", "ingest", "model"], help="what to measure")
    p.add_argument("--minutes", type=float, default=10.0, help="soak duration (default 10)")
    p.add_argument(
        "--replay",
        type=int,
        default=2000,
        help="readings buffered before the replay (default 2000)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    from .bench_ingest import add_arguments as add_ingest_arguments

    add_ingest_arguments(p)  # humigraph bench ingest: see bench_ingest.py
    from .bench_model import add_arguments as add_model_arguments

    add_model_arguments(p)  # humigraph bench model: see bench_model.py
    p.set_defaults(func=_cmd_bench)
