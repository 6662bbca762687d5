"""The gateway's live event bus: what the dashboard's server-sent events stream carries.

Producers (ingest after a commit, the reasoner, the alert engine) call :meth:`EventBus.publish`;
each HTTP stream subscribes and gets its own bounded queue. A slow client loses its oldest events
(and is told how many), never slows the producers.

Event kinds and their data (JSON objects):
  ``reading``   a stored reading: ``{"dev", "site", "boot", "seq", "ts", "t", "rh", "ok", "err"}``
  ``status``    ``{"dev", "site", "status": "online" | "offline"}``
  ``meta``      ``{"dev", "site", "meta": {...}}``
  ``forecast``  the forecast payload as published on MQTT
  ``health``    the health payload as published on MQTT
  ``insight``   the site insight payload as published on MQTT
  ``alert``     an alert event (raised or cleared) as published on MQTT
  ``broker``    ``{"state": "connected" | "disconnected"}``
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Any

__all__ = ["EventBus", "Subscription"]


class Subscription:
    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self.bus = bus
        self.q: queue.Queue[tuple[int, str, Any]] = queue.Queue(maxsize)
        self.dropped = 0

    def put(self, item: tuple[int, str, Any]) -> None:
        while True:
            try:
                self.q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float) -> tuple[int, str, Any] | None:
        """The next ``(id, kind, data)``, or None after ``timeout`` seconds."""
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, maxsize: int = 1000) -> None:
        self.maxsize = maxsize
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self.maxsize)
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def publish(self, kind: str, data: Any) -> None:
        with self._lock:
            subs = list(self._subs)
            ident = next(self._ids)
        for sub in subs:
            sub.put((ident, kind, data))
