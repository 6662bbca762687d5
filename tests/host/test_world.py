"""The world simulator: physics, DHT sensor models, faults, the live source and the export."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from humigraph.errors import UsageError
from humigraph.world.export import COLUMNS, export_csv, generate
from humigraph.world.faults import FAULT_CLASS, Fault, apply_fault, parse_faults
from humigraph.world.live import WorldSource
from humigraph.world.physics import (
    abs_humidity,
    dew_point,
    events_for,
    rel_humidity,
    simulate,
)
from humigraph.world.sensors import MODELS, SensorUnit
from humigraph.world.site import DOOR_OPEN_SHARE, RHO_C, make_site
from humigraph.world.source import DAY, ValueSource

pytestmark = pytest.mark.timeout(60)

START = 1764374400.0  # 2025-11-29 00:00 UTC


@pytest.fixture(scope="module")
def day10() -> tuple:
    """One simulated day of the default 10-room site at a 60 s step (timed)."""
    site = make_site(1, 10)
    t0 = time.perf_counter()
    trace = simulate(site, START, DAY - 60, step=60)
    return site, trace, time.perf_counter() - t0


# -- psychrometrics --------------------------------------------------------------------------


def test_magnus_reference_values() -> None:
    assert abs_humidity(20.0, 50.0) == pytest.approx(8.65, abs=0.05)
    assert dew_point(20.0, 50.0) == pytest.approx(9.26, abs=0.05)
    assert dew_point(25.0, 100.0) == pytest.approx(25.0, abs=1e-6)
    t = np.array([-5.0, 10.0, 30.0])
    rh = np.array([80.0, 55.0, 30.0])
    assert rel_humidity(t, abs_humidity(t, rh)) == pytest.approx(rh)


# -- physics -------------------------------------------------------------------------------


def test_a_day_of_ten_rooms_is_fast(day10: tuple) -> None:
    site, trace, seconds = day10
    print(f"simulated 1 day of {site.n_rooms} rooms in {seconds:.2f}s")
    assert seconds < 30.0
    assert trace.t.shape == (1440, 10)
    assert np.isfinite(trace.t).all() and np.isfinite(trace.ah).all()
    assert (trace.rh >= 0).all() and (trace.rh <= 100).all()
    assert trace.t.min() > -20 and trace.t.max() < 45


def test_deterministic_for_a_seed() -> None:
    site = make_site(7, 4)
    a = simulate(site, START, 3 * 3600, step=60, warmup=3600)
    b = simulate(make_site(7, 4), START, 3 * 3600, step=60, warmup=3600)
    c = simulate(make_site(8, 4), START, 3 * 3600, step=60, warmup=3600)
    assert np.array_equal(a.t, b.t) and np.array_equal(a.ah, b.ah)
    assert not np.array_equal(a.t, c.t)


def test_site_graph_is_consistent() -> None:
    site = make_site(3, 10)
    g = json.loads(json.dumps(site.graph()))
    names = {r["name"] for r in g["rooms"]}
    assert len(names) == 10 and {"kitchen", "bath", "living"} <= names
    for e in g["edges"]:
        assert e["a"] in names and (e["b"] in names or e["b"] == "outside")
    kinds = {e["kind"] for e in g["edges"]}
    assert kinds == {"wall", "door", "exterior"}
    adj = np.array(g["sensor_adjacency"])
    assert adj.shape == (len(site.sensors),) * 2
    assert np.allclose(adj, adj.T) and (np.diag(adj) == 1).all()
    # rooms weigh by their walls and by how long their doors stand open
    rooms = np.zeros((10, 10))
    for w in site.walls:
        rooms[w.a, w.b] += w.ua + RHO_C * w.leak
    for d in site.doors:
        rooms[d.a, d.b] += DOOR_OPEN_SHARE[d.habit] * RHO_C * d.airflow
    rooms = (rooms + rooms.T) / (rooms + rooms.T).max()
    at = {s.dev: (k, s.room) for k, s in enumerate(site.sensors)}
    for a, ka in at.values():
        for b, kb in at.values():
            want = 1.0 if ka == kb else rooms[ka, kb]
            assert adj[a, b] == pytest.approx(want, abs=1e-4)
    assert {d.habit for d in site.doors} == {"open", "closed"}
    # every room is reachable through doors
    seen, todo = {0}, [0]
    while todo:
        i = todo.pop()
        for d in site.doors:
            for a, b in ((d.a, d.b), (d.b, d.a)):
                if a == i and b not in seen:
                    seen.add(b)
                    todo.append(b)
    assert seen == set(range(10))
    with pytest.raises(UsageError, match="rooms"):
        make_site(1, 0)


def test_occupants_heating_and_showers_leave_their_mark(day10: tuple) -> None:
    site, trace, _ = day10
    times = trace.times
    # occupancy follows the schedule
    assert trace.occupants.sum() > 0
    assert trace.occupants[:, [i for i, r in enumerate(site.rooms) if r.kind == "bed"]].max() >= 1
    # a shower raises the bathroom's moisture content
    rises = []
    for a, b, room, _q, moist, _p, what in events_for(site, int(START // DAY)).loads:
        if what == "shower" and moist > 1000 and a > START + 600 and b < START + DAY - 600:
            i, j = np.searchsorted(times, [a - 60, b])
            rises.append(trace.ah[j, room] - trace.ah[i, room])
    assert rises and min(rises) > 0.5, rises
    if site.hvac == "heat":
        assert trace.heating.any()
    # doors and windows open and close
    assert trace.door.any() and (~trace.door).any()
    assert trace.window.any()
    # the dew point never exceeds the air temperature
    assert (trace.dew_point <= trace.t + 1e-6).all()


def test_condensation_on_a_cold_wall() -> None:
    # find a winter site whose bathroom condenses after showers
    site = make_site(1, 10)
    assert site.hvac == "heat" and site.t_out_mean < 5
    trace = simulate(site, START, DAY - 60, step=60, warmup=6 * 3600)
    bath = [i for i, r in enumerate(site.rooms) if r.kind == "bath"]
    assert trace.condensing[:, bath].any()
    cond = trace.condensing
    assert (abs_humidity(trace.surface_t[cond], 100.0) <= trace.ah[cond] + 0.05).all()


# -- sensors -------------------------------------------------------------------------------


def _is_multiple(x: np.ndarray, res: float) -> bool:
    return bool(np.allclose(np.round(x / res) * res, x, atol=1e-9))


def test_dht22_and_dht11_resolution_and_bias() -> None:
    when = START + 2.0 * np.arange(2000)
    t = 21.0 + 0.5 * np.sin(when / 600.0)
    rh = 45.0 + 3.0 * np.sin(when / 900.0)
    u22 = SensorUnit(1, "a-1", "dht22")
    qt, qrh = u22.read_series(when, t, rh)
    assert _is_multiple(qt, 0.1) and _is_multiple(qrh, 0.1)
    assert abs(u22.bias_t) <= 0.5 and 1.0 <= abs(u22.bias_rh) <= 5.0
    assert abs(float(np.mean(qt - t)) - u22.bias_t) < 0.1
    d11 = SensorUnit(1, "b-1", "dht11", decimal=False)
    qt, qrh = d11.read_series(when, t, rh)
    assert _is_multiple(qt, 1.0) and _is_multiple(qrh, 1.0)
    d11d = SensorUnit(1, "b-1", "dht11", decimal=True)
    qt, _ = d11d.read_series(when, t, rh)
    assert _is_multiple(qt, 0.1) and not _is_multiple(qt, 1.0)
    biases = [SensorUnit(s, "x", "dht11").bias_rh for s in range(200)]
    assert max(abs(b) for b in biases) <= 5.0
    with pytest.raises(UsageError, match="dht11 or dht22"):
        SensorUnit(1, "x", "sht31")


def test_response_lag_and_minimum_interval() -> None:
    u = SensorUnit(2, "lag-1", "dht22")
    when = START + np.arange(0.0, 120.0, 1.0)
    t = np.where(when >= START + 10, 30.0, 20.0)
    lt, _ = u.lag(when, t, np.full(len(when), 50.0))
    tau = MODELS["dht22"].tau_t
    i = int(10 + tau)
    assert lt[i] == pytest.approx(20 + 10 * (1 - math.exp(-1)), abs=0.3)
    assert lt[-1] > 29.9
    # reads 0.5 s apart return the previous conversion until 2 s have passed
    fast = START + 0.5 * np.arange(8)
    qt, _ = u.read_series(fast, np.linspace(20, 24, 8), np.full(8, 50.0))
    assert qt[1] == qt[0] and qt[3] == qt[0] and qt[4] != qt[0]


# -- faults --------------------------------------------------------------------------------


def test_fault_spec_parser() -> None:
    f = parse_faults("kitchen-2:stuck@600,bath-1:drift@0, hall-1:dropout@2h+30m")
    assert f == [
        Fault("kitchen-2", "stuck", 600.0),
        Fault("bath-1", "drift", 0.0),
        Fault("hall-1", "dropout", 7200.0, 1800.0),
    ]
    assert parse_faults("") == [] and parse_faults(None) == []
    assert set(FAULT_CLASS.values()) == {"stuck", "spike", "drift", "noise", "dropout"}
    bad = {
        "kitchen-2": "expected DEV:KIND@SECONDS",
        "kitchen-2:melt@5": "unknown fault 'melt'",
        "kitchen-2:stuck": "missing '@ONSET'",
        "kitchen-2:stuck@soon": "'soon' is not a time",
        ":stuck@5": "device name",
        "a-1:stuck@5,,b-1:spike@1": "empty item",
        "a-1:stuck@5+0": "duration must be positive",
    }
    for spec, msg in bad.items():
        with pytest.raises(UsageError, match=msg.replace("(", r"\(")):
            parse_faults(spec)
    with pytest.raises(UsageError, match="kitchen-2:melt@5"):
        parse_faults("a-1:stuck@5,kitchen-2:melt@5")


def test_faults_change_readings_from_their_onset() -> None:
    n = 600
    when = START + 10.0 * np.arange(n)
    rel = when - START
    base_t = np.round(20 + 0.3 * np.sin(rel / 500), 1)
    base_rh = np.round(50 + 2 * np.sin(rel / 700), 1)
    model = MODELS["dht22"]

    def run(kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t, rh = base_t.copy(), base_rh.copy()
        err = np.full(n, None, dtype=object)
        apply_fault(Fault("x-1", kind, 1000.0), model, rel, when, t, rh, err)
        return t, rh, err

    before = rel < 1000
    for kind in ("stuck", "spike", "drift", "noise", "dropout", "checksum", "condensation"):
        t, rh, err = run(kind)
        assert np.array_equal(t[before], base_t[before]), kind
        assert not np.array_equal(np.nan_to_num(rh[~before]), base_rh[~before]), kind
    t, rh, _ = run("stuck")
    assert len(set(t[~before])) == 1 and len(set(rh[~before])) == 1
    _, rh, _ = run("condensation")
    assert (rh[~before] == 99.9).all()
    t, _, _ = run("spike")
    assert np.abs(t - base_t).max() > 4
    _, rh, _ = run("drift")
    assert abs(rh[-1] - base_rh[-1]) > 0.1
    t, _, err = run("dropout")
    assert set(err[~before]) == {None, "timeout"} and np.isnan(t[~before]).mean() > 0.3
    t, _, err = run("checksum")
    assert "checksum" in set(err[~before]) and np.isnan(t).sum() == (err == "checksum").sum()


# -- the live source -------------------------------------------------------------------------


def test_world_source_is_a_deterministic_value_source() -> None:
    src: ValueSource = WorldSource(5, rooms=6, start=START)
    other = WorldSource(5, rooms=6, start=START)
    when = START + 12 * 3600 + 0.5 * np.arange(10)
    a = [src.sample("kitchen-1", float(w)) for w in when]
    b = [other.sample("kitchen-1", float(w)) for w in when]
    assert a == b
    assert all(10 < x.t < 35 and 0 <= x.rh <= 100 for x in a)
    # an unknown board id lands in a room, the same one every time
    assert other.room_of("board-7") == WorldSource(5, rooms=6).room_of("board-7")
    assert other.room_of("kitchen-1") == "kitchen"
    truth = other.truth("kitchen-1", float(when[0]))
    assert abs(truth.t - a[0].t) < 1.5
    # failing reads and labels
    f = WorldSource(5, rooms=6, start=START, faults=parse_faults("kitchen-1:checksum@60"))
    errs = {f.fault("kitchen-1", START + 60 + i) for i in range(40)}
    assert errs == {None, "checksum"} and f.fault("kitchen-1", START + 10) is None
    assert f.label("kitchen-1", START + 61) == "checksum" and f.label("kitchen-1", START) == "ok"
    stuck = WorldSource(5, rooms=6, start=START, faults=parse_faults("living-1:stuck@0"))
    vals = {stuck.sample("living-1", START + 3600 * h) for h in (1, 5, 9)}
    assert len(vals) == 1


# -- export --------------------------------------------------------------------------------


def test_generate_columns_labels_and_nulls() -> None:
    faults = parse_faults("kitchen-1:dropout@1h,bath-1:stuck@0")
    site, trace, cols = generate(4, 0.25, rooms=5, step=60, faults=faults, fault_rate=0.0)
    k = len(site.sensors)
    assert set(cols) == set(COLUMNS) and len(cols["ts"]) == 360 * k
    assert np.all(np.diff(cols["ts"].reshape(360, k)[:, 0]) == 60)
    kit = cols["dev"] == "kitchen-1"
    early = kit & (cols["ts"] < START + 3600)
    assert (cols["fault"][early] == "ok").all() and cols["ok"][early].all()
    late = kit & (cols["ts"] >= START + 3600)
    assert (cols["fault"][late] == "dropout").all()
    failed = late & ~cols["ok"].astype(bool)
    assert failed.any() and np.isnan(cols["t"][failed].astype(float)).all()
    assert set(cols["err"][failed]) == {"timeout"}
    bath = cols["dev"] == "bath-1"
    assert len(set(cols["t"][bath])) == 1 and set(cols["fault_class"][bath]) == {"stuck"}
    with pytest.raises(UsageError, match="no device 'nope-1'"):
        generate(4, 0.1, rooms=5, faults=parse_faults("nope-1:stuck@0"))


def test_export_cli_writes_csv_and_graph(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import argparse

    from humigraph.world import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers())
    out = tmp_path / "w.csv"
    args = parser.parse_args(
        ["world", "export", "--seed", "2", "--days", "0.1", "--out", str(out), "--rooms", "4"]
        + ["--step", "30", "--faults", "hall-1:checksum@0", "--fault-rate", "0.5"]
    )
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert "readings" in captured.out and "simulated" in captured.err
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(COLUMNS)
    hall = [r for r in rows if r["dev"] == "hall-1"]
    bad = [r for r in hall if r["ok"] == "0"]
    assert bad and all(r["t"] == "" and r["rh"] == "" and r["err"] == "checksum" for r in bad)
    good = [r for r in rows if r["ok"] == "1"]
    assert all(float(r["t"]) * 10 == pytest.approx(round(float(r["t"]) * 10)) for r in good)
    graph = json.loads((tmp_path / "w.graph.json").read_text())
    assert graph["step"] == 30 and len(graph["rooms"]) == 4
    assert {"dev": "hall-1", "kind": "checksum"} in graph["faults"]
    with pytest.raises(UsageError, match="does not exist"):
        export_csv(tmp_path / "missing" / "x.csv", 1, 0.1)


def test_tiny_and_large_sites_simulate() -> None:
    one = simulate(make_site(2, 1), START, 3600, step=60, warmup=3600)
    assert one.t.shape == (61, 1) and np.isfinite(one.t).all()
    big = make_site(2, 64)
    trace = simulate(big, START, 1800, step=60, warmup=1800)
    assert trace.t.shape == (31, 64) and np.isfinite(trace.ah).all()
    assert len({s.dev for s in big.sensors}) == len(big.sensors)


def test_world_source_speed() -> None:
    fast = WorldSource(6, rooms=2, start=START, speed=60)
    slow = WorldSource(6, rooms=2, start=START)
    assert fast.world_time(START + 60) == START + 3600
    assert fast.truth("hall-1", START + 60) == slow.truth("hall-1", START + 3600)
    with pytest.raises(UsageError, match="speed"):
        WorldSource(6, speed=0)


def test_condensation_saturates_sensors_in_wet_rooms() -> None:
    site, trace, cols = generate(1, 0.4, rooms=10, step=60)
    wet = cols["fault"] == "condensation"
    assert wet.any()
    assert (cols["rh"][wet] == 99.9).all() and set(cols["fault_class"][wet]) == {"stuck"}
    rooms = {site.sensor(d).room for d in set(cols["dev"][wet])}  # type: ignore[union-attr]
    assert all(trace.condensing[:, r].any() for r in rooms)
    _, _, dry = generate(1, 0.4, rooms=10, step=60, condensation_faults=False)
    assert not (dry["fault"] == "condensation").any()
