"""The gateway's live events (what the dashboard streams): broker state, and after each commit
the stored readings (not the duplicates), status and meta."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from humigraph.gateway.service import Gateway
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def test_committed_batches_become_live_events(broker: Any, tmp_path: Path) -> None:
    gw = Gateway(broker.url, f"sqlite:///{tmp_path / 'gw.db'}", http=None)
    sub = gw.events.subscribe()
    with gw:
        first = sub.get(10)
        assert first is not None and first[1:] == ("broker", {"state": "connected"})
        time.sleep(0.3)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ev-board")
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        try:
            base = "humigraph/home/kitchen-1"
            c.publish(base + "/status", "online", 1, retain=True).wait_for_publish(10)
            c.publish(base + "/meta", json.dumps({"fw": "0.1.0", "interval": 10}), 1)
            for seq in (1, 2, 2):  # the second 2 is a duplicate: no event
                body = {"v": 1, "dev": "kitchen-1", "boot": 3, "seq": seq, "ts": 1764400000.0 + seq,
                        "up": seq, "t": 21.5, "rh": 44.0, "ok": True, "err": None,
                        "sensor": "dht22"}  # fmt: skip
                c.publish(base + "/state", json.dumps(body), 1).wait_for_publish(10)
        finally:
            c.loop_stop()
            c.disconnect()
        got: list[tuple[str, Any]] = []
        deadline = time.monotonic() + 10
        while len([k for k, _ in got if k == "reading"]) < 2 and time.monotonic() < deadline:
            ev = sub.get(0.5)
            if ev:
                got.append(ev[1:])
        time.sleep(0.5)
        while (ev := sub.get(0.1)) is not None:
            got.append(ev[1:])
        assert ("status", {"dev": "kitchen-1", "site": "home", "status": "online"}) in got
        assert ("meta", {"dev": "kitchen-1", "site": "home",
                         "meta": {"fw": "0.1.0", "interval": 10}}) in got  # fmt: skip
        readings = [d for k, d in got if k == "reading"]
        assert readings == [
            {"dev": "kitchen-1", "site": "home", "boot": 3, "seq": s, "ts": 1764400000.0 + s,
             "t": 21.5, "rh": 44.0, "ok": True, "err": None}
            for s in (1, 2)
        ]  # fmt: skip
        broker.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ev = sub.get(0.5)
            if ev and ev[1] == "broker":
                assert ev[2] == {"state": "disconnected"}
                break
        else:
            raise AssertionError("no broker disconnected event")
    sub.close()
