"""The committed model on `make demo`'s world, replayed offline: the boards its script leaves
healthy get no sensor-fault verdict, bath-1 through its shower included. The demo's boards read
once per model step (a board with `interval: 60` does too); the model before the one-minute
boards in training called bed-1, living-1 and kitchen-1 faulty in five of these 121 windows
(docs/BENCHMARKS.md, "Five training seeds, with one-minute boards"), and the model before the
`reads` input called bath-1 `stuck` in 13 in a row ("Showers taken for faults")."""

from __future__ import annotations

import numpy as np
import pytest
from humigraph import demo
from humigraph.demo import DEMO_BOARDS, REPO_MODEL, WORLD_SEED, WORLD_SPEED, DemoWorld
from humigraph.model.data import make_windows
from humigraph.model.data_types import Recording
from humigraph.model.evaluate import _run
from humigraph.runtime import Runtime
from humigraph.world.live import WorldSource

T0 = 1_000_000.0
LEAD_S = 64.0  # a full window of history (32 steps of 2 s) before the script starts
READ_S = 2.0  # demo.run_demo's interval
# office-1 is stuck and then spikes on purpose
HEALTHY = ("hall-1", "living-1", "kitchen-1", "bath-1", "bed-1")


class _Board:
    def set_wifi(self, state: str) -> None:  # bed-1 buffers and replays: no reading is lost
        pass


def _replay(monkeypatch: pytest.MonkeyPatch) -> Recording:
    world = DemoWorld(WorldSource(seed=WORLD_SEED, rooms=6, speed=WORLD_SPEED, start=T0), T0)
    clock = {"now": T0}
    monkeypatch.setattr(demo.time, "time", lambda: clock["now"])
    for step in demo.script(world, {d: _Board() for d in DEMO_BOARDS}):
        clock["now"] = T0 + LEAD_S + step.at
        step.action()
    wall = np.arange(0.0, LEAD_S + 240.0, READ_S)
    when = T0 + wall * WORLD_SPEED  # the gateway's time_scale: the model sees world time
    ts, t, rh = [], [], []
    for dev in DEMO_BOARDS:
        reads = [world.sample(dev, T0 + s) for s in wall]
        ts.append(when.copy())
        t.append(np.round([r.t for r in reads], 1))  # a DHT22's resolution
        rh.append(np.round([r.rh for r in reads], 1))
    return Recording(
        name="demo", site="home", nodes=list(DEMO_BOARDS), ts=ts, t=t, rh=rh,
        ok=[np.ones(len(wall), bool) for _ in DEMO_BOARDS],
    )  # fmt: skip


def test_the_demo_boards_left_healthy_get_no_fault_verdict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert REPO_MODEL.is_file(), "models/humigraph-int8.tflite is missing: make train quantize"
    rt = Runtime(REPO_MODEL)
    card = rt.card
    rec = _replay(monkeypatch)
    w = make_windows([rec], card)
    assert len(w) > 100  # the script's four minutes, one window per step
    calls = card.fault_decision(_run(rt, w, ("fault",))["fault"])  # [windows, slots]
    faulty = {dev: int((calls[:, DEMO_BOARDS.index(dev)] != 0).sum()) for dev in HEALTHY}
    assert faulty == dict.fromkeys(HEALTHY, 0)
    # the script's faults are seen: office-1 stuck, then spiking
    assert (calls[:, DEMO_BOARDS.index("office-1")] != 0).any()
