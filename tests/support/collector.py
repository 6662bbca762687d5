"""An MQTT subscriber that records everything it sees, for assertions in end-to-end tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    at: float

    def json(self) -> Any:
        return json.loads(self.payload)


class Collector:
    """Subscribes to ``topics`` on a broker and keeps every message, in arrival order."""

    def __init__(
        self, port: int, topics: list[str], host: str = "127.0.0.1", persistent: bool = True
    ) -> None:
        """``persistent``: a persistent QoS 1 session, so that messages published while the broker
        restarts are queued for us instead of lost (like the gateway)."""
        self.messages: list[Message] = []
        self._cv = threading.Condition()
        self._topics = topics
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"collector-{uuid.uuid4().hex[:8]}",
            clean_session=not persistent,
        )
        self._client.reconnect_delay_set(0.2, 2)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()
        self.wait_subscribed()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any
    ) -> None:
        for t in self._topics:
            client.subscribe(t, qos=1)
        with self._cv:
            self._connected = True
            self._cv.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        m = Message(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, time.monotonic())
        with self._cv:
            self.messages.append(m)
            self._cv.notify_all()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        with self._cv:
            if not self._cv.wait_for(lambda: getattr(self, "_connected", False), timeout):
                raise TimeoutError("collector could not connect to the broker")
        time.sleep(0.2)  # SUBACKs

    def publish(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(10)

    def on(self, suffix: str) -> list[Message]:
        with self._cv:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(
        self, pred: Callable[[list[Message]], Any], timeout: float, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                got = pred(self.messages)
                if got:
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = [f"{m.topic} {m.payload[:120]!r}" for m in self.messages[-8:]]
                    raise AssertionError(
                        f"timed out after {timeout} s waiting for {what}; last: {tail}"
                    )
                self._cv.wait(min(left, 0.5))

    def readings(self, dev: str | None = None) -> list[dict[str, Any]]:
        out = []
        for m in self.on("/state"):
            d = m.json()
            if dev is None or d.get("dev") == dev:
                out.append(d)
        return out

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
