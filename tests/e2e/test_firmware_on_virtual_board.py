"""The real firmware on virtual boards (MicroPython unix port, 64 KiB heap) against a real Mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from humigraph.board.virtual import VirtualBoard
from support.collector import Collector

pytestmark = pytest.mark.e2e

SITE = "lab"


@pytest.fixture
def make_board(broker: Any, tmp_path: Path) -> Iterator[Any]:
    boards: list[VirtualBoard] = []

    def make(dev: str = "kitchen-1", **kw: Any) -> VirtualBoard:
        kw.setdefault("interval", 2.0)
        kw.setdefault("flash_dir", tmp_path / f"flash-{dev}")
        b = VirtualBoard(dev, SITE, broker.url, **kw)
        boards.append(b)
        b.start()
        return b

    yield make
    for b in boards:
        b.stop()


@pytest.fixture
def collector(broker: Any) -> Iterator[Collector]:
    c = Collector(broker.port, ["humigraph/#", "homeassistant/#"])
    yield c
    c.close()


def seqs(c: Collector, dev: str, boot: int | None = None) -> list[int]:
    return [r["seq"] for r in c.readings(dev) if boot is None or r["boot"] == boot]


def identities(c: Collector, dev: str) -> set[tuple[int, int]]:
    return {(r["boot"], r["seq"]) for r in c.readings(dev)}


def test_readings_topics_payload_and_retained(
    make_board: Any, collector: Collector, broker: Any
) -> None:
    b = make_board("kitchen-1")
    collector.wait_for(lambda m: len(collector.readings("kitchen-1")) >= 3, 40, "3 readings")
    r = collector.readings("kitchen-1")[0]
    assert set(r) == {"v", "dev", "boot", "seq", "ts", "up", "t", "rh", "ok", "err", "sensor"}
    assert r["v"] == 1 and r["dev"] == "kitchen-1" and r["sensor"] == "dht22"
    assert isinstance(r["boot"], int) and r["boot"] >= 1
    assert r["ok"] is True and r["err"] is None
    assert 0 <= r["rh"] <= 100 and -40 <= r["t"] <= 80
    assert isinstance(r["up"], int)
    later = collector.readings("kitchen-1")[-1]
    assert later["ts"] is None or abs(later["ts"] - time.time()) < 60
    assert [x["seq"] for x in collector.readings("kitchen-1")][:3] == [0, 1, 2]
    state = collector.on("humigraph/lab/kitchen-1/state")
    assert all(not m.retain and m.qos == 1 for m in state)

    # A subscriber arriving now gets the retained status, meta and discovery.
    late = Collector(broker.port, ["humigraph/lab/kitchen-1/+", "homeassistant/device/+/config"])
    try:
        late.wait_for(lambda m: len({x.topic for x in m if x.retain}) >= 3, 10, "retained messages")
        retained = {m.topic: m for m in late.messages if m.retain}
        assert retained["humigraph/lab/kitchen-1/status"].payload == b"online"
        meta = retained["humigraph/lab/kitchen-1/meta"].json()
        for k in ("fw", "sensor", "pin", "interval", "reset", "free", "buffered", "rssi"):
            assert k in meta, k
        assert meta["reset"] == "power_on" and meta["pin"] == 4
        disc = retained["homeassistant/device/kitchen-1/config"].json()
        comps = disc["cmps"]
        classes = sorted(c["device_class"] for c in comps.values())
        assert classes == ["humidity", "temperature"]
        assert all(c["expire_after"] >= 6 for c in comps.values())
        assert disc["state_topic"] == "humigraph/lab/kitchen-1/state"
        assert disc["availability_topic"] == "humigraph/lab/kitchen-1/status"
    finally:
        late.close()

    # Killing the board (no clean DISCONNECT) makes the broker publish its will.
    b.kill()
    collector.wait_for(
        lambda m: any(x.topic.endswith("kitchen-1/status") and x.payload == b"offline" for x in m),
        40,
        "offline (last will)",
    )


def test_broker_outage_every_reading_arrives_once(
    make_board: Any, collector: Collector, broker: Any
) -> None:
    b = make_board("bath-1")
    collector.wait_for(lambda m: len(collector.readings("bath-1")) >= 2, 40, "first readings")
    broker.stop()
    time.sleep(30)
    broker.start()
    first_boot = collector.readings("bath-1")[0]["boot"]
    # After the outage the board replays its buffer; wait until it has caught up with new readings.
    b.wait_for_line(r"connected to .*readings to send", 60, start=0)
    collector.wait_for(
        lambda m: (
            len(set(seqs(collector, "bath-1"))) >= 22
            and sorted(set(seqs(collector, "bath-1")))
            == list(range(max(seqs(collector, "bath-1")) + 1))
        ),
        90,
        "a contiguous run of seqs after the outage",
    )
    got = seqs(collector, "bath-1", first_boot)
    assert sorted(set(got)) == list(range(max(got) + 1)), "a reading is missing"
    assert max(got) >= 20  # 30 s outage at 2 s: about 15 readings buffered and replayed
    dups = len(got) - len(set(got))
    assert dups <= 8, f"{dups} duplicates: more than the in-flight window"


def test_power_cycle_with_readings_buffered(
    make_board: Any, collector: Collector, broker: Any
) -> None:
    b = make_board("hall-1")
    collector.wait_for(lambda m: len(collector.readings("hall-1")) >= 2, 40, "first readings")
    boot1 = collector.readings("hall-1")[0]["boot"]
    broker.stop()
    time.sleep(12)  # about 6 readings buffered
    b.power_cycle()
    time.sleep(4)
    broker.start()
    collector.wait_for(
        lambda m: any(r["boot"] == boot1 + 1 for r in collector.readings("hall-1")),
        60,
        "the new boot",
    )
    time.sleep(6)  # the replay of the old boot's buffer comes first, oldest first
    got = seqs(collector, "hall-1", boot1)
    assert sorted(set(got)) == list(range(max(got) + 1)), f"old boot has gaps: {sorted(set(got))}"
    assert max(got) >= 6
    new = collector.readings("hall-1")
    assert any(r["boot"] == boot1 + 1 and r["seq"] == 0 for r in new)


def test_dht_fault_storm(make_board: Any, collector: Collector) -> None:
    b = make_board("attic-1")
    collector.wait_for(lambda m: len(collector.readings("attic-1")) >= 2, 40, "first readings")
    b.inject("timeout")
    n0 = len(collector.readings("attic-1"))
    start = len(b.console)
    time.sleep(20)
    storm = collector.readings("attic-1")[n0:]
    assert len(storm) >= 4, "the board stopped publishing during the fault storm"
    failed = [r for r in storm if not r["ok"]]
    assert failed and all(
        r["err"] == "timeout" and r["t"] is None and r["rh"] is None for r in failed
    )
    b.wait_for_line(r"W sensor: DHT22 on GPIO4: timeout; .*pull-up", 5, start=start)
    b.inject("checksum")
    n1 = len(collector.readings("attic-1"))
    collector.wait_for(
        lambda m: any(r["err"] == "checksum" for r in collector.readings("attic-1")[n1:]),
        20,
        "checksum",
    )
    b.inject(None)
    collector.wait_for(lambda m: collector.readings("attic-1")[-1]["ok"] is True, 20, "recovery")
    b.wait_for_line(r"reading again after \d+ failed reads", 10, start=start)
    assert b.running


@pytest.mark.parametrize(
    "override, key, words",
    [
        ({"sensor": {"pin": 34}}, "sensor.pin", "input-only"),
        ({"sensor": {"interval": 1}}, "sensor.interval", "at least 2 s"),
        ({"sensor": {"pin": "4"}}, "sensor.pin", "whole number"),
        ({"sensor": {"colour": "blue"}}, "sensor.colour", "unknown key"),
    ],
)
def test_invalid_config_safe_mode(
    make_board: Any, override: dict[str, Any], key: str, words: str
) -> None:
    b = make_board("bad-1", config=override)
    m = b.wait_for_line(r"E config: (.*)", 20)
    line = m.group(0)
    assert key in line and words in line and "safe mode" in line
    time.sleep(3)
    assert b.restarts == 0, "the board boot-looped"
    assert sum("E config:" in x for x in b.console) == 1


def test_commands_and_acks(make_board: Any, collector: Collector) -> None:
    b = make_board("desk-1")
    collector.wait_for(lambda m: collector.on("desk-1/status"), 40, "online")
    time.sleep(1)

    def cmd(payload: dict[str, Any], timeout: float = 15) -> dict[str, Any]:
        collector.publish("humigraph/lab/desk-1/cmd", json.dumps(payload))
        acks = collector.wait_for(
            lambda m: [
                x.json()
                for x in collector.on("desk-1/ack")
                if x.json().get("id") == payload.get("id")
            ],
            timeout,
            f"ack for {payload}",
        )
        return acks[-1]

    a = cmd({"id": "p1", "cmd": "ping"})
    assert a["ok"] and a["result"]["pong"] is True
    a = cmd({"id": "r1", "cmd": "read"})
    assert a["ok"] and a["result"]["ok"] is True and isinstance(a["result"]["seq"], int)
    a = cmd({"id": "i1", "cmd": "interval", "value": 0.5})
    assert not a["ok"] and "sensor.interval" in a["error"]
    a = cmd({"id": "i2", "cmd": "interval", "value": 3})
    assert a["ok"] and a["result"]["reboot"] is False
    a = cmd({"id": "s1", "cmd": "set", "key": "log.level", "value": "debug"})
    assert a["ok"]
    a = cmd({"id": "s2", "cmd": "set", "key": "sensor.pin", "value": 35})
    assert not a["ok"] and "input-only" in a["error"]
    a = cmd({"id": "u1", "cmd": "dance"})
    assert not a["ok"] and "unknown cmd" in a["error"]
    n = len(collector.on("homeassistant/device/desk-1/config"))
    a = cmd({"id": "a1", "cmd": "announce"})
    assert a["ok"]
    collector.wait_for(
        lambda m: len(collector.on("homeassistant/device/desk-1/config")) > n, 10, "discovery"
    )
    collector.publish("humigraph/lab/desk-1/cmd", b"{not json")
    collector.wait_for(
        lambda m: any(x.json().get("id") is None for x in collector.on("desk-1/ack")),
        10,
        "bad json ack",
    )
    saved = json.loads((b.flash_dir / "config.json").read_text())
    assert saved["sensor"]["interval"] == 3 and saved["log"]["level"] == "debug"
    boot = collector.readings("desk-1")[-1]["boot"]
    a = cmd({"id": "b1", "cmd": "reboot"})
    assert a["ok"]
    collector.wait_for(
        lambda m: any(r["boot"] == boot + 1 for r in collector.readings("desk-1")), 40, "reboot"
    )
    assert b.restarts >= 1


def test_deep_sleep_cycle(make_board: Any, collector: Collector) -> None:
    b = make_board(
        "porch-1", interval=4.0, config={"sleep": {"deep": True, "window": 0, "awake": 8}}
    )
    collector.wait_for(lambda m: len(collector.readings("porch-1")) >= 3, 60, "3 deep-sleep cycles")
    b.wait_for_line(r"deep sleep for \d+ ms", 5)
    rs = collector.readings("porch-1")
    assert len({r["boot"] for r in rs}) == 1, "a deep-sleep wake must continue the same boot"
    assert [r["seq"] for r in rs[:3]] == [0, 1, 2]
    assert any("reset: deep" in line.lower() or "deep_sleep" in line for line in b.console)
    # A retained stay_awake keeps it up for maintenance.
    collector.publish(
        "humigraph/lab/porch-1/cmd",
        json.dumps({"id": "w1", "cmd": "stay_awake", "value": True}),
        retain=True,
    )
    b.wait_for_line(r"stay_awake set", 30)
    n = len(collector.readings("porch-1"))
    collector.wait_for(
        lambda m: len(collector.readings("porch-1")) >= n + 2, 20, "readings while awake"
    )
    collector.publish("humigraph/lab/porch-1/cmd", b"", retain=True)


def test_runs_in_a_64k_heap_for_two_minutes(make_board: Any, collector: Collector) -> None:
    b = make_board("heap-1", heap="64K", interval=2.0)
    time.sleep(120)
    assert b.running
    assert not any("MemoryError" in line for line in b.console), "\n".join(b.console[-20:])
    rs = collector.readings("heap-1")
    assert len(rs) >= 50
    assert sorted({r["seq"] for r in rs}) == list(range(max(r["seq"] for r in rs) + 1))
    metas = [m.json() for m in collector.on("heap-1/meta")]
    assert metas and min(m["free"] for m in metas) > 4096


def test_replays_a_buffer_found_on_flash(broker: Any, collector: Collector, tmp_path: Path) -> None:
    """A board that boots with readings on flash (written in the firmware's own record format by
    the benchmark's prefill) sends them all, oldest first, before its new boot's readings."""
    from humigraph.bench import prefill_flash

    flash = tmp_path / "flash"
    prefill_flash(flash, 150, boot=1)
    with VirtualBoard("store-1", SITE, broker.url, interval=5.0, flash_dir=flash) as b:
        collector.wait_for(
            lambda m: (
                len({r["seq"] for r in collector.readings("store-1") if r["boot"] == 1}) >= 150
            ),
            60,
            "150 replayed",
        )
        old = [r for r in collector.readings("store-1") if r["boot"] == 1]
        assert [r["seq"] for r in old][:150] == list(range(150))
        assert all(r["t"] == 21.5 and r["rh"] == 45.2 for r in old)
        collector.wait_for(
            lambda m: any(r["boot"] == 2 for r in collector.readings("store-1")), 30, "new boot"
        )
        assert b.running


def test_wifi_loss_buffers_and_replays(make_board: Any, collector: Collector) -> None:
    b = make_board("garage-1")
    collector.wait_for(lambda m: len(collector.readings("garage-1")) >= 2, 40, "first readings")
    start = len(b.console)
    b.set_wifi("down")
    b.wait_for_line(r"W wifi: link to .* lost", 15, start=start)
    b.wait_for_line(r"W mqtt: connection to .* lost", 15, start=start)
    time.sleep(12)
    assert b.running
    b.set_wifi("up")
    b.wait_for_line(r"I wifi: connected", 40, start=start)
    got = collector.wait_for(
        lambda m: (
            (s := sorted(set(seqs(collector, "garage-1"))))
            and len(s) >= 10
            and s == list(range(s[-1] + 1))
            and s
        ),
        60,
        "every reading after the Wi-Fi outage",
    )
    assert got[-1] >= 9


def test_repeated_failed_boots_safe_mode(broker: Any, tmp_path: Path) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / ".bootfail").write_text("3")  # three boots that never ran a minute
    with VirtualBoard("loop-1", SITE, broker.url, interval=2.0, flash_dir=flash) as b:
        line = b.wait_for_line(r"E app: 3 failed boots in a row -- safe mode.*", 20).group(0)
        assert "start()" in line
        time.sleep(2)
        assert b.restarts == 0


def test_home_assistant_online_resends_discovery(make_board: Any, collector: Collector) -> None:
    make_board("den-1")
    collector.wait_for(lambda m: collector.on("homeassistant/device/den-1/config"), 40, "discovery")
    n = len(collector.on("homeassistant/device/den-1/config"))
    collector.publish("homeassistant/status", "online")
    collector.wait_for(
        lambda m: len(collector.on("homeassistant/device/den-1/config")) > n,
        15,
        "re-sent discovery",
    )


def test_repl_helpers_over_the_serial_console(
    make_board: Any, collector: Collector, tmp_path: Path
) -> None:
    """Ctrl-C on the console stops the app; status() and read() answer on the REPL (mpremote over the
    board's pty, as over a USB port)."""
    import subprocess
    import sys

    link = tmp_path / "tty-repl"
    b = make_board("repl-1", serial=link)
    collector.wait_for(lambda m: len(collector.readings("repl-1")) >= 1, 40, "a reading")
    mpremote = Path(sys.executable).parent / "mpremote"
    r = subprocess.run(
        [str(mpremote), "connect", str(link), "resume", "exec", "status(); read()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "device lab/repl-1" in out and "buffered" in out, out
    assert " C " in out and "%" in out, out  # read(): one reading printed
    b.wait_for_line(r"stopped by Ctrl-C", 10)
