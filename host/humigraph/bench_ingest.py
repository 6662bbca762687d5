"""``humigraph bench ingest``: the gateway's sustained ingest rate, with zero loss, against baselines.

A load generator in a separate process (a minimal MQTT 3.1.1 publisher on a raw socket, so that it
costs the shared CPU as little as possible) publishes QoS 1 readings from many simulated devices to
a private Mosquitto. The same stream is drained by:

- ``mosquitto_sub -q 1`` to /dev/null: the broker-bound ceiling (no parsing, no storage);
- the gateway (SQLite WAL, synchronous=FULL, acknowledged after commit): the thing measured;
- a naive subscriber: paho, parse, INSERT and COMMIT each message (same durability), ack after.

Each rate is readings received (or stored) divided by the time from the generator's first publish
to the last one drained. The gateway run then checks zero loss: every ``(dev, seq)`` stored exactly
once. Finally the generator is paced at half the gateway's measured rate and the latency from
publish to committed is recorded (the end of the commit that stored each reading minus the ``ts``
the generator put in it when it sent it); its p99 is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .broker import Mosquitto
from .errors import HumigraphError, UsageError

SITE = "bench"
# Values drift slowly per board (as a room does), so the gateway's alert rules see plausible data.
TEMPLATE = (
    '{"v":1,"dev":"%s","boot":%d,"seq":%d,"ts":%.4f,"up":%d,"t":%.1f,"rh":%.1f,"ok":true,'
    '"err":null,"sensor":"dht22"}'
)


# ------------------------------------------------------------------------------------------
# the load generator (runs in its own process: `python -m humigraph.bench_ingest generate ...`)


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _connect_packet(client_id: str) -> bytes:
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"  # MQTT 3.1.1, clean session, keepalive 60 s
    body = var + struct.pack("!H", len(cid)) + cid
    return b"\x10" + _remaining_length(len(body)) + body


def generate(
    host: str,
    port: int,
    devices: int,
    n: int,
    rate: float,
    window: int,
    client_id: str,
    boot: int = 1,
) -> dict[str, Any]:
    """Publishes ``n`` QoS 1 readings round-robin over ``devices`` boards (``rate`` 0: as fast as
    the broker acknowledges, at most ``window`` unacknowledged); returns timing figures."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(_connect_packet(client_id))
    connack = sock.recv(4)
    if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
        raise HumigraphError(f"bench generator: the broker refused the connection ({connack!r})")
    # Plain blocking mode: with a timeout set, Python polls before every recv, so even a
    # MSG_DONTWAIT read would wait for the timeout when no PUBACK is due.
    sock.settimeout(None)
    names = [f"b{d:05d}" for d in range(devices)]
    topics = [f"humigraph/{SITE}/{name}/state".encode() for name in names]
    topic_heads = [struct.pack("!H", len(t)) + t for t in topics]
    chunk = 64
    sent = acked = 0
    pending = b""
    t0 = time.time()

    def read_acks(block: bool) -> None:
        nonlocal acked, pending
        try:
            data = sock.recv(65536, 0 if block else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise HumigraphError("bench generator: the broker closed the connection")
        data = pending + data
        whole = len(data) // 4 * 4  # PUBACKs only: 0x40 0x02 id id
        acked += whole // 4
        pending = data[whole:]

    while sent < n:
        k = min(chunk, n - sent)
        if rate > 0:  # paced: only what is due by now
            due = int((time.time() - t0) * rate) + 1 - sent
            if due <= 0:
                time.sleep(min(0.005, 1.0 / rate))
                read_acks(False)
                continue
            k = min(k, due)
        while sent - acked + k > window:
            read_acks(True)
        buf = bytearray()
        now = time.time()
        for i in range(sent, sent + k):
            d = i % devices
            seq = i // devices
            t = 19.0 + (d % 7) * 0.5 + (seq % 20) * 0.1
            rh = 40.0 + (d % 11) + (seq % 30) * 0.2
            payload = (TEMPLATE % (names[d], boot, seq, now, seq * 1000, t, rh)).encode()
            body = topic_heads[d] + struct.pack("!H", i % 65535 + 1) + payload
            buf += b"\x32" + _remaining_length(len(body)) + body
        sock.sendall(buf)
        sent += k
        read_acks(False)
    while acked < n:
        read_acks(True)
    t_end = time.time()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    return {"n": n, "t_first": t0, "t_acked": t_end, "publish_rate": n / (t_end - t0)}


class Generator:
    """The generator as a child process; :meth:`result` waits for its figures."""

    def __init__(
        self, port: int, devices: int, n: int, rate: float = 0.0, window: int = 2000, boot: int = 1
    ) -> None:
        # the directory holding this package, so the child imports the same humigraph
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "humigraph.bench_ingest", "generate", "--port", str(port),
             "--devices", str(devices), "--n", str(n), "--rate", str(rate),
             "--window", str(window), "--boot", str(boot)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip

    def result(self, timeout: float) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise HumigraphError(f"bench generator failed: {err.strip()[-400:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# ------------------------------------------------------------------------------------------
# the drains


def _broker() -> Mosquitto:
    # no queue limit: a drain slower than the generator must get every message late, not lose it
    return Mosquitto(persistence=False, extra_config="max_queued_messages 0\n")


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise HumigraphError(f"bench ingest: timed out waiting for {what}")
        time.sleep(0.05)


def run_mosquitto_sub(n: int, devices: int, timeout: float) -> dict[str, Any]:
    """The ceiling: mosquitto_sub at QoS 1 writing every payload to /dev/null."""
    import shutil

    exe = shutil.which("mosquitto_sub")
    if exe is None:
        raise HumigraphError("mosquitto_sub is missing: apt-get install mosquitto-clients")
    with _broker() as broker:
        sub = subprocess.Popen(
            [exe, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t",
             f"humigraph/{SITE}/+/state", "-C", str(n), "-i", "bench-mosquitto-sub"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            time.sleep(0.5)  # subscribed
            gen = Generator(broker.port, devices, n)
            sub.wait(timeout)
            t_done = time.time()
            g = gen.result(timeout)
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait(5)
    return {"received": n, "seconds": t_done - g["t_first"], "rate": n / (t_done - g["t_first"]),
            "publish_rate": g["publish_rate"]}  # fmt: skip


def run_gateway(n: int, devices: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """The gateway, sustained: the generator as fast as the broker takes it; zero loss checked."""
    from .gateway import store as st
    from .gateway.service import Gateway

    db = workdir / "gateway.db"
    with _broker() as broker:
        with Gateway(broker.url, f"sqlite:///{db}", http=None, flood_rate=0,
                     client_id="bench-gateway") as gw:  # fmt: skip
            _wait(lambda: gw.connected, 15, "the gateway to connect")
            time.sleep(0.5)  # SUBACK
            gen = Generator(broker.port, devices, n)
            _wait(lambda: gw.metrics.readings_stored >= n or gen.proc.poll() not in (None, 0),
                  timeout, f"{n} readings stored")  # fmt: skip
            t_done = time.time()
            g = gen.result(timeout)
            batches = gw.metrics.batches
        conn = st.open_reader(db)
        try:
            count, distinct = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT dev || '/' || seq) FROM readings"
            ).fetchone()
            gaps = st.gaps_total(conn)
        finally:
            conn.close()
    lost = n - distinct
    return {"stored": count, "distinct": distinct, "lost": lost, "duplicates": count - distinct,
            "gaps": gaps, "batches": batches, "seconds": t_done - g["t_first"],
            "rate": n / (t_done - g["t_first"]), "publish_rate": g["publish_rate"]}  # fmt: skip


def run_latency(rate: float, seconds: float, devices: int, workdir: Path) -> dict[str, Any]:
    """The generator paced at ``rate``; latency from publish (each payload's ``ts``) to the end of
    the commit that stored it, taken in the ingest worker right after each commit."""
    from .gateway.service import Gateway

    n = max(1, int(rate * seconds))
    db = workdir / f"latency-{rate:.0f}-{time.time_ns()}.db"  # a fresh database every run
    lat: list[float] = []
    with (
        _broker() as broker,
        Gateway(
            broker.url, f"sqlite:///{db}", http=None, flood_rate=0, client_id="bench-latency"
        ) as gw,
    ):
        _wait(lambda: gw.connected, 15, "the gateway to connect")
        store = gw.store
        assert store is not None
        # Warm-up, not timed: every board appears once and the reasoner finishes a pass over
        # them. A board's first appearance costs a one-off pass (its Home Assistant config and
        # alert summary are published); the figure below is the steady state after it.
        warm = Generator(broker.port, devices, devices * 2, boot=1)
        _wait(lambda: gw.metrics.readings_stored >= devices * 2, 120, "the warm-up readings")
        warm.result(60)
        r = gw.reasoner
        if r is not None:
            seen = r.ticks
            _wait(lambda: r.ticks >= seen + 2, 120, "a reasoner pass after the warm-up")
        base = gw.metrics.readings_stored + gw.metrics.duplicates
        write_batch = store.write_batch

        def timed_write_batch(records: Any, now: float | None = None) -> Any:
            res = write_batch(records, now)
            done = time.time()
            lat.extend(done - placed for _, placed in res.stored_readings)
            return res

        store.write_batch = timed_write_batch  # type: ignore[method-assign]
        time.sleep(0.5)
        gen = Generator(broker.port, devices, n, rate=rate, boot=2)
        _wait(
            lambda: (
                gw.metrics.readings_stored + gw.metrics.duplicates - base >= n
                or gen.proc.poll() not in (None, 0)
            ),
            seconds * 4 + 60,
            f"{n} paced readings stored",
        )
        g = gen.result(60)
    if len(lat) < n:
        raise HumigraphError(f"latency run: {len(lat)} of {n} readings seen")
    lat.sort()
    return {"rate": rate, "achieved_publish_rate": g["publish_rate"], "readings": n,
            "p50_ms": _pct(lat, 50) * 1000, "p99_ms": _pct(lat, 99) * 1000,
            "max_ms": lat[-1] * 1000}  # fmt: skip


def _pct(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def run_naive(n: int, devices: int, timeout: float, workdir: Path) -> dict[str, Any]:
    """paho subscriber that parses, INSERTs and COMMITs each message, then acks it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    db = workdir / "naive.db"
    conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(
        "CREATE TABLE readings (dev TEXT, boot INTEGER, seq INTEGER, ts REAL, t REAL, rh REAL, "
        "UNIQUE (dev, boot, seq))"
    )
    stored = [0]

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        d = json.loads(m.payload)
        conn.execute("BEGIN")
        conn.execute(
            "INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?)",
            (d["dev"], d["boot"], d["seq"], d["ts"], d["t"], d["rh"]),
        )
        conn.execute("COMMIT")
        stored[0] += 1

    with _broker() as broker:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive")
        c.on_connect = lambda cl, *_: cl.subscribe(f"humigraph/{SITE}/+/state", qos=1)
        c.on_message = on_message
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        try:
            time.sleep(0.5)
            gen = Generator(broker.port, devices, n)
            _wait(lambda: stored[0] >= n, timeout, f"the naive subscriber's {n} readings")
            t_done = time.time()
            g = gen.result(timeout)
        finally:
            c.loop_stop()
            c.disconnect()
            conn.close()
    return {"stored": stored[0], "seconds": t_done - g["t_first"],
            "rate": n / (t_done - g["t_first"])}  # fmt: skip


# ------------------------------------------------------------------------------------------
# the benchmark


@dataclass
class Goals:
    rate: float = 20_000.0
    of_ceiling: float = 0.5
    over_naive: float = 10.0
    p99_ms: float = 250.0


def run_ingest_bench(
    n: int, devices: int, naive_n: int, latency_seconds: float, timeout: float = 600.0
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="humigraph-bench-ingest-") as tmp:
        work = Path(tmp)
        ceiling = run_mosquitto_sub(n, devices, timeout)
        gateway = run_gateway(n, devices, timeout, work)
        naive = run_naive(naive_n, devices, timeout, work)
        latency = run_latency(gateway["rate"] / 2, latency_seconds, devices, work)
    g = Goals()
    r = gateway["rate"]
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },  # fmt: skip
        "command": f"humigraph bench ingest --n {n} --devices {devices} --naive-n {naive_n} "
        f"--latency-seconds {latency_seconds:g}",
        "mosquitto_sub": ceiling,
        "gateway": gateway,
        "naive": naive,
        "latency_at_half_load": latency,
        "ratios": {"of_mosquitto_sub": r / ceiling["rate"], "over_naive": r / naive["rate"]},
        "goals": {
            "rate": {"goal": g.rate, "met": r >= g.rate},
            "of_mosquitto_sub": {"goal": g.of_ceiling, "met": r >= g.of_ceiling * ceiling["rate"]},
            "over_naive": {"goal": g.over_naive, "met": r > g.over_naive * naive["rate"]},
            "p99_ms": {"goal": g.p99_ms, "met": latency["p99_ms"] < g.p99_ms},
            "zero_loss": {"goal": 0, "met": gateway["lost"] == 0 and gateway["duplicates"] == 0},
        },
    }


def table(r: dict[str, Any]) -> str:
    c, g, nv, lat = r["mosquitto_sub"], r["gateway"], r["naive"], r["latency_at_half_load"]
    goals = r["goals"]

    def ok(key: str) -> str:
        return "met" if goals[key]["met"] else "NOT met"

    rows = [
        ("drain", "readings/s", "notes"),
        ("mosquitto_sub -q 1 > /dev/null", f"{c['rate']:,.0f}",
         f"broker ceiling; {c['received']} readings; generator {c['publish_rate']:,.0f}/s"),
        ("humigraph gateway (SQLite, FULL)", f"{g['rate']:,.0f}",
         f"{g['stored']} stored, lost {g['lost']}, duplicates {g['duplicates']}, "
         f"gaps {g['gaps']}, {g['batches']} commits"),
        ("naive: commit per message", f"{nv['rate']:,.0f}", f"{nv['stored']} readings"),
        ("gateway / mosquitto_sub", f"{r['ratios']['of_mosquitto_sub']:.2f}",
         f"goal >= 0.5: {ok('of_mosquitto_sub')}"),
        ("gateway / naive", f"{r['ratios']['over_naive']:.1f}x", f"goal > 10x: {ok('over_naive')}"),
        ("gateway rate", f"{g['rate']:,.0f}", f"goal >= 20,000/s: {ok('rate')}"),
        (f"latency at {lat['rate']:,.0f}/s (half load)",
         f"p99 {lat['p99_ms']:.0f} ms", f"p50 {lat['p50_ms']:.0f} ms, max {lat['max_ms']:.0f} ms; "
         f"goal p99 < 250 ms: {ok('p99_ms')}"),
    ]  # fmt: skip
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c_}" for a, b, c_ in rows)


def run_command(args: argparse.Namespace) -> int:
    if args.n < 100 or args.devices < 1 or args.naive_n < 10 or args.latency_seconds <= 0:
        raise UsageError(
            "bench ingest: --n must be >= 100, --devices >= 1, --naive-n >= 10 and "
            "--latency-seconds > 0"
        )
    r = run_ingest_bench(args.n, args.devices, args.naive_n, args.latency_seconds)
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ingest bench's options (on ``humigraph bench``)."""
    p.add_argument("--n", type=int, default=200_000, help="readings per drain (default 200000)")
    p.add_argument("--devices", type=int, default=500, help="simulated boards (default 500)")
    p.add_argument(
        "--naive-n", type=int, default=2000, help="readings for the naive subscriber (default 2000)"
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=10.0,
        help="duration of the half-load latency run (default 10)",
    )


def _generator_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="humigraph.bench_ingest generate")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--window", type=int, default=2000)
    p.add_argument("--boot", type=int, default=1)
    a = p.parse_args(argv)
    r = generate(
        "127.0.0.1", a.port, a.devices, a.n, a.rate, a.window, f"bench-gen-{os.getpid()}", a.boot
    )
    print(json.dumps(r))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        sys.exit(_generator_main(sys.argv[2:]))
    sys.exit("usage: python -m humigraph.bench_ingest generate --port P --devices D --n N")
