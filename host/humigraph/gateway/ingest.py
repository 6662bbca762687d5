"""MQTT ingest with nothing lost: persistent session, QoS 1, acknowledged only after commit.

``on_message`` (paho's network thread) only enqueues. One worker thread takes the queue in
batches, validates each message, writes the batch in one SQLite transaction and only then sends
the PUBACKs (``manual_ack``). A crash before the commit leaves the messages unacknowledged in the
broker's persistent session for this client id, which redelivers them on the next connect;
duplicates are absorbed by the ``(dev, boot, seq)`` key.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .metrics import Metrics
from .store import BatchResult, Store
from .validate import KINDS, Quarantined, classify

log = logging.getLogger(__name__)

SESSION_EXPIRY = 7 * 24 * 3600  # the broker keeps our queue this long while we are away
RECEIVE_MAXIMUM = 2000  # unacknowledged messages the broker may have in flight to us


@dataclass(frozen=True)
class _Msg:
    topic: str
    payload: bytes
    mid: int
    qos: int
    gen: int  # the connection it arrived on: an ack only makes sense on that one


class _RateLimitedLog:
    """At most one warning per ``period`` seconds; says how many were suppressed."""

    def __init__(self, period: float = 10.0) -> None:
        self.period = period
        self._last = -1e9
        self._suppressed = 0

    def warn(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.period:
            self._suppressed += 1
            return
        extra = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._suppressed = 0
        self._last = now
        log.warning(msg + extra, *args)


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
        batch_max: int = 1000,
        batch_wait: float = 0.02,
        keepalive: int = 30,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.host, self.port = host, port
        self.prefix = prefix
        self.sites = frozenset(sites) if sites is not None else None
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        self.keepalive = keepalive
        self.q: queue.Queue[_Msg] = queue.Queue()
        self.connected = False
        self.refused: str | None = None  # why the broker refused us, until it accepts
        self._gen = 0
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._qlog = _RateLimitedLog()
        self.error: BaseException | None = None
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if username is not None:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
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
        while self.q.qsize() and time.monotonic() < deadline and self._worker_alive():
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

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        if not self._stop.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.metrics.received()
        self.q.put(_Msg(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._gen))

    # -- worker --------------------------------------------------------------------------------

    def _take_batch(self) -> list[_Msg]:
        try:
            first = self.q.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_max:
            try:
                batch.append(self.q.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not (self._stop.is_set() and self.q.empty()):
            batch = self._take_batch()
            if not batch:
                continue
            records = [classify(m.topic, m.payload, self.prefix, self.sites) for m in batch]
            res = self._commit(records)
            if res is None:  # stopping with the database unwritable: no ack, the broker keeps them
                return
            self.metrics.batch(res.stored, res.duplicates, res.quarantined)
            for r in records:
                if isinstance(r, Quarantined):
                    self._qlog.warn(
                        "quarantined a message on %s: %s (%s)", r.topic[:120], r.reason, r.detail
                    )
            gen = self._gen
            for m in batch:
                if m.qos > 0 and m.gen == gen:
                    self.client.ack(m.mid, m.qos)

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
