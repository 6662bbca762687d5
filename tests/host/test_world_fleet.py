"""``humigraph simulate``: a fleet of virtual boards on one world."""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from humigraph.errors import UsageError
from humigraph.world.faults import parse_faults
from humigraph.world.fleet import plan_fleet, run_fleet

pytestmark = pytest.mark.timeout(90)


def test_plan_spreads_nodes_over_sites() -> None:
    plan, sources = plan_fleet(5, 2, seed=3, faults=parse_faults("site2-hall-1:stuck@0"))
    assert [n.site for n in plan] == ["site1"] * 3 + ["site2"] * 2
    assert len({n.dev for n in plan}) == 5
    assert all(n.dev.startswith(n.site + "-") for n in plan)
    assert sources["site2"].faults and not sources["site1"].faults
    # a prefixed board id reads its site's sensor
    assert sources["site2"].room_of("site2-living-1") == "living"
    single, _ = plan_fleet(3, 1, seed=3)
    assert [n.dev for n in single] == ["hall-1", "living-1", "kitchen-1"]
    for args, msg in (
        ((0, 1), "--nodes"),
        ((2, 0), "--sites"),
        ((200, 1), "at most 64"),
    ):
        with pytest.raises(UsageError, match=msg):
            plan_fleet(*args, seed=1)
    with pytest.raises(UsageError, match="no device 'kitchen-9'"):
        plan_fleet(2, 1, seed=1, faults=parse_faults("kitchen-9:spike@0"))


def test_run_fleet_starts_and_stops_every_board() -> None:
    made: list[Any] = []

    class FakeBoard:
        def __init__(self, dev: str, site: str, broker: str, **kw: Any) -> None:
            self.dev, self.kw, self.running, self.stopped = dev, kw, False, False
            made.append(self)

        def start(self) -> None:
            self.running = True

        def stop(self) -> None:
            self.stopped, self.running = True, False

    plan, sources = plan_fleet(3, 1, seed=2, speed=60)
    out = io.StringIO()
    for _ in range(2):
        rc = run_fleet(plan, sources, "mqtt://x:1", duration=0.6, out=out, board_factory=FakeBoard)
        assert rc == 0
    assert len(made) == 6 and all(b.stopped for b in made)
    assert made[0].kw["source"] is sources["home"] and made[0].kw["sensor"] in ("dht11", "dht22")
    assert "stopped 3 boards" in out.getvalue()


def test_fleet_publishes_world_readings(broker: Any) -> None:
    if not (Path(sys.executable).parent / "micropython").exists() or not shutil.which("mosquitto"):
        pytest.skip("needs the MicroPython unix port and mosquitto")
    from support.collector import Collector

    plan, sources = plan_fleet(1, 1, seed=4)
    col = Collector(broker.port, ["humigraph/#"])
    try:
        run_fleet(plan, sources, broker.url, interval=2, duration=6, out=io.StringIO())
        readings = [r for r in col.readings(plan[0].dev) if r.get("ok")]
        assert readings, [m.topic for m in col.messages]
        truth = sources["home"].truth(plan[0].dev, readings[-1]["ts"])
        assert abs(readings[-1]["t"] - truth.t) < 3.0
        assert abs(readings[-1]["rh"] - truth.rh) < 8.0
    finally:
        col.close()
