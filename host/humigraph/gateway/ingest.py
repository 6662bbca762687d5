"""MQTT ingest with nothing lost: persistent session, QoS 1, acknowledged only after commit.

paho's network thread only enqueues what it receives (every complete PUBLISH in its read
buffer at once, see :class:`_Client`). One worker thread takes the queue in batches, validates
each message, writes the batch in one transaction and only then sends the PUBACKs
(``manual_ack``). A crash before the commit leaves the messages unacknowledged in the broker's
persistent session for this client id, which redelivers them on the next connect; duplicates are
absorbed by the ``(dev, boot, seq)`` key. (A second thread committing while the next batch is
validated was measured: no faster on two cores, the threads contend for the interpreter.)

Per-board flood limit: a token bucket per device (:class:`FloodLimit`). A board publishing far
above its own interval has the excess quarantined with reason ``flood`` (counted per device,
acknowledged so the broker does not redeliver it forever); the other boards are unaffected.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.client import PUBACK
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import UsageError
from .events import EventBus
from .metrics import Metrics
from .ratelog import RateLimitedLog
from .store import BatchResult, Store, topic_site_dev
from .validate import KINDS, Meta, Quarantined, Reading, Record, Status, classify

log = logging.getLogger(__name__)

SESSION_EXPIRY = 7 * 24 * 3600  # the broker keeps our queue this long while we are away
RECEIVE_MAXIMUM = 20000  # unacknowledged messages the broker may have in flight to us (> batch_max)
FLOOD_REASON = "flood"


# A received message: (topic, payload, mid, qos). Plain tuples: this is the per-message hot path.
_Msg = tuple[str, bytes, int, int]
# What the network thread queues: the connection generation the messages arrived on (an ack only
# makes sense on that connection) and the messages, in order.
_Chunk = tuple[int, list[_Msg]]


@dataclass(frozen=True)
class TlsFiles:
    """TLS to the broker: ``ca`` (None: the system's trust store), client ``cert`` and ``key``."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    @staticmethod
    def of(ca: str | Path | None, cert: str | Path | None, key: str | Path | None) -> TlsFiles:
        return TlsFiles(*(Path(p) if p is not None else None for p in (ca, cert, key)))

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker's certificate and host name."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            if path is not None and not path.is_file():
                raise UsageError(f"broker.tls.{name}: no such file {path}")
        if (self.cert is None) != (self.key is None):
            raise UsageError("broker.tls.cert and broker.tls.key go together: set both or neither")
        try:
            if self.ca is not None:
                ctx.load_verify_locations(cafile=str(self.ca))
            if self.cert is not None:
                ctx.load_cert_chain(str(self.cert), str(self.key))
        except (ssl.SSLError, OSError) as e:
            which = "ca" if self.cert is None else "cert/key"
            raise UsageError(f"broker.tls.{which}: cannot load ({e})") from e
        return ctx


@dataclass(frozen=True)
class FloodLimit:
    """A token bucket per device.

    A board whose ``meta`` gives its ``interval`` may send ``factor`` times faster than that; a
    board not yet heard from gets ``rate`` messages/s; either may send ``burst`` at once.
    ``rate`` 0 turns the limit off. Readings taken more than ``replay_age`` seconds ago are a
    board draining its buffer after an outage (which it does as fast as the broker acknowledges,
    by design): they are never limited.
    """

    factor: float = 10.0
    rate: float = 5.0
    burst: int = 100
    replay_age: float = 60.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class _Bucket:
    __slots__ = ("tokens", "last", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.tokens = burst
        self.last = now


class FloodGuard:
    """Applies a :class:`FloodLimit` to classified records (the ingest worker's thread only)."""

    def __init__(self, limit: FloodLimit) -> None:
        self.limit = limit
        self.buckets: dict[str, _Bucket] = {}

    def _rate_for(self, meta: dict[str, Any]) -> float | None:
        interval = meta.get("interval")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            return None
        return self.limit.factor / float(interval) if self.limit.factor > 0 else None

    def check(self, r: Record, topic: str, payload: bytes, now: float, wall: float) -> Record:
        """The record, or a ``flood`` quarantine entry when its board is over its limit."""
        lim = self.limit
        if not lim.enabled or isinstance(r, Quarantined):
            return r
        if isinstance(r, Reading) and r.ts is not None and r.ts < wall - lim.replay_age:
            return r
        b = self.buckets.get(r.dev)
        if b is None:
            b = self.buckets[r.dev] = _Bucket(lim.rate, float(lim.burst), now)
        if isinstance(r, Meta):
            b.rate = self._rate_for(r.meta) or lim.rate
        b.tokens = min(float(lim.burst), b.tokens + (now - b.last) * b.rate)
        b.last = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return r
        return Quarantined(
            topic,
            payload,
            FLOOD_REASON,
            f"{r.dev} is over its flood limit of {b.rate:g} messages/s (burst {lim.burst})",
        )


class _BufferedSocket:
    """The broker connection, read 64 KiB at a time.

    paho reads each packet with three ``recv`` calls (type, length, body) and one ``select`` per
    packet; at thousands of readings a second those system calls are most of the gateway's CPU.
    Reads here come from a buffer refilled by one large ``recv``; ``pending()`` tells paho's loop
    that buffered bytes are ready without waiting in ``select`` (the hook paho has for TLS).
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, bufsize: int) -> bytes:
        if self._pos >= len(self._buf):
            self._buf = self._sock.recv(65536)  # BlockingIOError / SSLWantRead pass through
            self._pos = 0
            if not self._buf:
                return b""
        end = self._pos + bufsize
        out = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return out

    def pending(self) -> int:
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + inner

    def __getattr__(self, name: str) -> Any:  # send, fileno, close, setblocking, ...
        return getattr(self._sock, name)


def _varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``pos`` -> (value, position after it); position -1 when
    the buffer ends first or it is longer than 4 bytes."""
    value, mult = 0, 1
    for i in range(pos, min(end, pos + 4)):
        b = buf[i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i + 1
        mult *= 128
    return 0, -1


class _Client(mqtt.Client):
    """paho's client with buffered reads, many packets per loop pass, and PUBACKs sent in bulk.

    QoS 0 and 1 PUBLISH packets go straight to ``on_raw_message([(topic, payload, mid, qos), ...])``
    (every complete one in the buffer at once)
    without paho's message object, property parsing and topic-filter matching (the gateway uses
    neither properties nor per-topic callbacks; it advertises no topic aliases, so every PUBLISH
    names its topic).

    Only private hooks of paho 2.x are used (``_create_socket``, ``_packet_read``,
    ``_handle_publish``, ``_in_packet``, ``_packet_queue``); pyproject pins paho-mqtt below 3.
    """

    on_raw_message: Any = None

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        command = self._in_packet["command"]
        if self.on_raw_message is None or command & 0x06 == 0x04:  # QoS 2: paho's own way
            return super()._handle_publish()
        self.on_raw_message([self._parse_publish(command, self._in_packet["packet"])])
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _parse_publish(self, command: int, packet: bytes | bytearray) -> _Msg:
        """A PUBLISH body (variable header + payload) -> (topic, payload, mid, qos)."""
        qos = (command & 0x06) >> 1
        pos = 2 + int.from_bytes(packet[0:2], "big")
        topic = packet[2:pos].decode("utf-8", "replace")  # the broker checks UTF-8 already
        mid = 0
        if qos:
            mid = int.from_bytes(packet[pos : pos + 2], "big")
            pos += 2
        if self._protocol == mqtt.MQTTv5:
            plen, pos = _varint(packet, pos, len(packet))
            pos = pos + plen if pos >= 0 else len(packet)  # the properties, skipped
        return topic, bytes(packet[pos:]), mid, qos

    def _create_socket(self) -> Any:
        return _BufferedSocket(super()._create_socket())

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        # paho reads one packet per select(): here every complete QoS 0/1 PUBLISH already in the
        # buffer is handled in one pass, and anything else (or a packet cut by the buffer's end)
        # goes through paho's reader, a bounded number of times so writes get their turn.
        for _ in range(max(max_packets, 1000)):
            sock = self._sock
            if sock is None:
                return mqtt.MQTTErrorCode.MQTT_ERR_NO_CONN
            if isinstance(sock, _BufferedSocket) and self._in_packet["command"] == 0:
                self._drain_publishes(sock)
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTTErrorCode.MQTT_ERR_AGAIN:
                break
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _drain_publishes(self, sock: _BufferedSocket) -> None:
        if self.on_raw_message is None:
            return
        buf, pos, end = sock._buf, sock._pos, len(sock._buf)
        msgs: list[_Msg] = []
        while pos + 2 <= end:
            command = buf[pos]
            if command & 0xF0 != 0x30 or command & 0x06 == 0x04:
                break  # not a QoS 0/1 PUBLISH: paho's reader takes it
            length, body = _varint(buf, pos + 1, end)
            if body < 0 or body + length > end:
                break  # cut by the buffer's end (or malformed): paho's reader takes it
            msgs.append(self._parse_publish(command, buf[body : body + length]))
            pos = body + length
        sock._pos = pos
        if msgs:
            with self._msgtime_mutex:  # what keepalive looks at (paho's reader does the same)
                self._last_bytes_received = mqtt.time_func()
            self.on_raw_message(msgs)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACKs for QoS 1 messages, written as one buffer (MQTT 5: remaining length 2 means
        reason code Success, no properties)."""
        if not mids:
            return
        data = b"".join(b"\x40\x02" + mid.to_bytes(2, "big") for mid in mids)
        self._packet_queue(PUBACK, data, 0, 0)


class Ingest:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        host: str,
        port: int,
        *,
        prefix: str = "humigraph",
        client_id: str = "humigraph-gateway",
        sites: Collection[str] | None = None,
        batch_max: int = 5000,
        batch_wait: float = 0.02,
        keepalive: int = 30,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        flood: FloodLimit | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.host, self.port = host, port
        self.prefix = prefix
        self.sites = frozenset(sites) if sites is not None else None
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.keepalive = keepalive
        self.events = events
        self.flood = FloodGuard(flood or FloodLimit())
        self.q: queue.SimpleQueue[_Chunk] = queue.SimpleQueue()
        self._queued_in = 0  # messages put (network thread) ...
        self._queued_out = 0  # ... and taken (worker): depth() is the difference
        self._carry: list[tuple[int, _Msg]] = []  # taken beyond batch_max, for the next batch
        self.connected = False
        self.refused: str | None = None  # why the broker refused us, until it accepts
        self._gen = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._taken = 0  # messages the worker took off the queue
        self._qlog = RateLimitedLog(log)
        self.error: BaseException | None = None
        c = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username is not None:
            c.username_pw_set(username, password)
        if tls is not None:
            c.tls_set_context(tls.context())
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        c.on_raw_message = self._on_raw_message
        self.client = c

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self._worker = threading.Thread(target=self._run, name="gateway-ingest", daemon=True)
        self._worker.start()
        self.client.connect_async(
            self.host, self.port, self.keepalive, clean_start=False, properties=props
        )
        self.client.loop_start()

    def stop(self, drain: float = 5.0) -> None:
        """Commits and acknowledges what is queued (up to ``drain`` s), then disconnects."""
        deadline = time.monotonic() + drain
        while self.depth() and time.monotonic() < deadline and self._worker_alive():
            time.sleep(0.02)
        self._stop.set()
        if self._worker:
            self._worker.join(drain + 5)
        self.client.disconnect()
        self.client.loop_stop()

    def healthy(self) -> bool:
        """The worker runs and its last commit succeeded."""
        return self._worker_alive() and self.error is None

    def _worker_alive(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.warning("the broker refused the connection: %s", reason)
            return
        self.refused = None
        self._gen += 1
        self.connected = True
        log.info(
            "connected to %s:%d (session present: %s)",
            self.host,
            self.port,
            getattr(flags, "session_present", "?"),
        )
        opts = SubscribeOptions(qos=1)
        client.subscribe([(f"{self.prefix}/+/+/{k}", opts) for k in KINDS])
        if self.events is not None:
            self.events.publish("broker", {"state": "connected"})

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho says no more than this: the TCP connection or the TLS handshake failed
        self.refused = "cannot connect (broker unreachable, or TLS refused: check broker.tls.*)"
        log.warning("cannot connect to %s:%d; retrying", self.host, self.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        was = self.connected
        self.connected = False
        self._gen += 1  # nothing received before this disconnect is acknowledged after it
        if not was and not self._stop.is_set() and self.refused is None:
            # Closed before any CONNACK: with TLS 1.3 this is how a refused client certificate
            # shows on the client's side.
            self.refused = (
                f"the broker closed the connection before accepting it ({reason}): "
                "TLS refused? check broker.tls.cert and broker.tls.key"
            )
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)
        if was and self.events is not None:
            self.events.publish("broker", {"state": "disconnected"})

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # QoS 2 only (the subscription grants at most 1): everything else takes the raw path
        self._on_raw_message([(msg.topic, bytes(msg.payload), msg.mid, msg.qos)])

    def _on_raw_message(self, msgs: list[_Msg]) -> None:
        self.metrics.received(len(msgs))
        self._queued_in += len(msgs)  # written by this thread only
        self.q.put((self._gen, msgs))

    def depth(self) -> int:
        """Messages received and not yet committed."""
        return self._queued_in - self._queued_out

    # -- worker --------------------------------------------------------------------------------

    def _take_batch(self) -> list[tuple[int, _Msg]]:
        """Up to batch_max (generation, message) pairs, waiting at most batch_wait for more."""
        batch, self._carry = self._carry, []
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            try:
                if not batch:
                    gen, msgs = self.q.get(timeout=0.1)
                else:
                    left = deadline - time.monotonic()
                    gen, msgs = self.q.get_nowait() if left <= 0 else self.q.get(timeout=left)
            except queue.Empty:
                break
            batch += [(gen, m) for m in msgs]
        if len(batch) > self.batch_max:
            batch, self._carry = batch[: self.batch_max], batch[self.batch_max :]
        return batch

    def _classify(self, batch: list[tuple[int, _Msg]]) -> list[Record]:
        now, wall = time.monotonic(), time.time()
        guard, prefix, sites = self.flood, self.prefix, self.sites
        records: list[Record] = []
        for _, (topic, payload, _mid, _qos) in batch:
            r = classify(topic, payload, prefix, sites)
            records.append(guard.check(r, topic, payload, now, wall))
        return records

    def _run(self) -> None:
        while not (self._stop.is_set() and self._taken == self._queued_in):
            batch = self._take_batch()
            if not batch:
                continue
            self._taken += len(batch)
            records = self._classify(batch)
            res = self._commit(records)
            if res is None:  # stopping with the database unwritable: no ack, the broker keeps them
                return
            self._ack(batch)
            self._queued_out += len(batch)
            self._report(records, res)

    def _ack(self, batch: list[tuple[int, _Msg]]) -> None:
        # Only on the connection the messages came in on: after a reconnect the broker
        # redelivers them (and the store absorbs the copies).
        gen = self._gen
        self.client.ack_many([m[2] for g, m in batch if m[3] == 1 and g == gen])

    def _report(self, records: list[Record], res: BatchResult) -> None:
        """Metrics, rate-limited warnings and live events for a committed batch."""
        self.metrics.batch(res.stored, res.duplicates, res.quarantined)
        flooded: dict[str, int] = {}
        for r in records:
            if isinstance(r, Quarantined):
                if r.reason == FLOOD_REASON:
                    dev = topic_site_dev(r.topic)[1]
                    flooded[dev] = flooded.get(dev, 0) + 1
                self._qlog.warn(
                    "quarantined a message on %s: %s (%s)", r.topic[:120], r.reason, r.detail
                )
        if flooded:
            self.metrics.flood(flooded)
        ev = self.events
        if ev is None or not ev.subscribers:
            return
        for r, placed in res.stored_readings:
            ev.publish(
                "reading",
                {"dev": r.dev, "site": r.site, "boot": r.boot, "seq": r.seq, "ts": placed,
                 "t": r.t, "rh": r.rh, "ok": r.ok, "err": r.err},
            )  # fmt: skip
        for u in res.updates:
            if isinstance(u, Status):
                status = "online" if u.online else "offline"
                ev.publish("status", {"dev": u.dev, "site": u.site, "status": status})
            else:
                ev.publish("meta", {"dev": u.dev, "site": u.site, "meta": u.meta})

    def _commit(self, records: list[Any]) -> BatchResult | None:
        delay = 0.1
        while True:
            try:
                res = self.store.write_batch(records)
                self.error = None
                return res
            except Exception as e:  # a full disk, a locked file, or a bug: never ack, retry
                self.error = e
                log.error("cannot write a batch of %d (%s); retrying", len(records), e)
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)
