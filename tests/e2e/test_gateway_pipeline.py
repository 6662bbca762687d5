"""The ingest pipeline (validate, then commit and acknowledge) when the store fails: nothing is
acknowledged before it is committed, the failing batch is retried, health says why meanwhile,
and a stop with the database still failing leaves the messages to the broker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def publish(port: int, n: int, first: int = 0) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pipe-{first}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for seq in range(first, first + n):
            body = {"v": 1, "dev": "kitchen-1", "boot": 1, "seq": seq, "ts": 1764400000.0 + seq,
                    "up": seq, "t": 21.0, "rh": 40.0, "ok": True, "err": None, "sensor": "dht22"}  # fmt: skip
            c.publish("humigraph/home/kitchen-1/state", json.dumps(body), 1).wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def test_a_failing_store_is_retried_and_nothing_is_acked_before_the_commit(
    broker: Any, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'gw.db'}"
    failing = {"on": True}
    with Gateway(broker.url, db, http=None) as gw:
        wait(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        store = gw.store
        assert store is not None
        real = store.write_batch

        def flaky(records: Any, now: float | None = None) -> Any:
            if failing["on"]:
                raise OSError("disk full (simulated)")
            return real(records, now)

        store.write_batch = flaky  # type: ignore[method-assign]
        publish(broker.port, 50)
        wait(lambda: gw.status()["store_error"], 10, "the store error in the status")
        assert gw.status()["ok"] is False and gw.metrics.readings_stored == 0
        assert gw.queue_depth() == 50  # received, not committed, not acknowledged
        failing["on"] = False
        wait(lambda: gw.metrics.readings_stored == 50, 20, "the retried batch")
        wait(lambda: gw.queue_depth() == 0, 10, "the acks")
        assert gw.status()["ok"] is True and gw.status()["store_error"] is None

    # stopped while the store fails: the messages stay with the broker and come back
    with Gateway(broker.url, db, http=None) as gw:
        wait(lambda: gw.connected, 10, "the gateway to connect")
        time.sleep(0.3)
        assert gw.store is not None
        gw.store.write_batch = lambda records, now=None: (_ for _ in ()).throw(  # type: ignore[method-assign]
            OSError("still failing")
        )
        publish(broker.port, 20, first=50)
        wait(lambda: gw.queue_depth() == 20, 10, "the messages to arrive")
    with Gateway(broker.url, db, http=None) as gw:
        wait(lambda: gw.metrics.readings_stored == 20, 20, "the redelivered messages")
        assert gw.metrics.duplicates == 0
