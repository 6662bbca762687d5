"""The model's data pipeline: loaders, split, windows and targets, fault injection (numpy only)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import numpy as np
import pytest
from humigraph.errors import UsageError
from humigraph.model.card import FAULT_CLASSES, ModelCard
from humigraph.model.data import (
    Recording,
    count_windows,
    inject_faults,
    load,
    make_windows,
    split,
)
from humigraph.model.features import window
from humigraph.model.inject import SPIKE_MEMORY_S

ROOM_CLIMATE = Path(__file__).resolve().parents[3] / "shared" / "data" / "room-climate-A"
T0 = 1_764_374_400.0  # a multiple of 60


def ramp(n_steps: int = 80, nodes: int = 2, **kw: object) -> Recording:
    """Node i reads t = 20 + i + 0.01 k and rh = 40 + 0.05 k at T0 + 60 k (exactly on the grid)."""
    k = np.arange(n_steps, dtype=float)
    ts = T0 + 60.0 * k
    return Recording(
        name=str(kw.pop("name", "ramp")),
        site="s",
        nodes=[f"n{i}" for i in range(nodes)],
        ts=[ts.copy() for _ in range(nodes)],
        t=[20.0 + i + 0.01 * k for i in range(nodes)],
        rh=[40.0 + 0.05 * k for _ in range(nodes)],
        ok=[np.ones(n_steps, bool) for _ in range(nodes)],
        **kw,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------- windows


def test_windows_shapes_masks_and_targets_by_hand() -> None:
    card = ModelCard()
    w = make_windows([ramp()], card)
    # ends at grid indices 31..79: 49 windows, the first ending at T0 + 31 min
    assert len(w) == 49 == count_windows([ramp()], card)
    assert w.x.shape == (49, 64, 32, len(card.features)) and w.x.dtype == np.float32
    assert w.y_forecast.shape == (49, 64, 3, 2) and w.y_forecast_mask.shape == (49, 64, 3)
    assert (
        w.y_fault.shape == (49, 64) and w.y_insight.shape == (49, 2) and w.last.shape == (49, 64, 2)
    )
    assert w.end_ts[0] == T0 + 31 * 60
    assert w.node_mask[0].tolist() == [1.0, 1.0] + [0.0] * 62
    # first window: last value t = 20.31 (node 0), 21.31 (node 1), rh = 41.55
    assert w.last[0, :2, 0] == pytest.approx([20.31, 21.31])
    assert w.last[0, 0, 1] == pytest.approx(41.55)
    # +300 s = 5 steps: dt = 0.05 °C / scale 1, drh = 0.25 % / scale 5 = 0.05
    assert w.y_forecast[0, 0, 0] == pytest.approx([0.05, 0.05], abs=1e-6)
    assert w.y_forecast[0, 1, 2] == pytest.approx([0.30, 1.5 / 5], abs=1e-6)  # +1800 s
    assert w.y_forecast_mask[0, :2].tolist() == [[1, 1, 1]] * 2
    assert not w.y_forecast_mask[0, 2:].any() and not w.y_forecast[0, 2:].any()
    # the last window ends at index 79: no future at all; index 74 is the last with +5 min
    assert not w.y_forecast_mask[-1].any()
    k74 = int(np.flatnonzero(w.end_ts == T0 + 74 * 60)[0])
    assert w.y_forecast_mask[k74, 0].tolist() == [1, 0, 0]
    assert w.y_forecast_mask[k74 + 1, 0].tolist() == [0, 0, 0]
    # no fault labels, no insight labels: masked out
    assert not w.y_fault_mask.any() and not w.y_insight_mask.any()
    # features: the last step's normalized t is (20.31 - 21) / 5; dt there is 0
    assert w.x[0, 0, -1, 0] == pytest.approx((20.31 - 21.0) / 5.0)
    assert w.x[0, 0, -1, 2] == 0.0 and w.x[0, 0, 0, 2] == pytest.approx(-0.31, abs=1e-5)


def test_targets_use_each_horizons_own_scale() -> None:
    card = ModelCard(target_scale={"t": [0.25, 0.5, 1.0], "rh": [1.25, 2.5, 5.0]})
    w = make_windows([ramp()], card)
    # changes of ramp(): t 0.01 °C and rh 0.05 %RH per minute, so +5/+15/+30 min
    want_t = [0.05 / 0.25, 0.15 / 0.5, 0.30 / 1.0]
    want_rh = [0.25 / 1.25, 0.75 / 2.5, 1.5 / 5.0]
    assert w.y_forecast[0, 0, :, 0] == pytest.approx(want_t, abs=1e-5)
    assert w.y_forecast[0, 0, :, 1] == pytest.approx(want_rh, abs=1e-5)


def test_windows_match_the_gateway_encoding() -> None:
    card = ModelCard()
    rec = ramp(nodes=3)
    rng = np.random.default_rng(0)
    for i in range(3):  # jittered times, failed reads
        rec.ts[i] = rec.ts[i] + rng.uniform(-20, 20, len(rec.ts[i]))
        rec.ok[i][rng.random(len(rec.ts[i])) < 0.2] = False
        rec.t[i][~rec.ok[i]] = np.nan
    w = make_windows([rec], card, stride_steps=7)
    for k in range(len(w)):
        series = [(rec.ts[i], rec.t[i], rec.rh[i], rec.ok[i]) for i in range(3)]
        enc = window(series, float(w.end_ts[k]), card)
        np.testing.assert_array_equal(enc.x, w.x[k])
        np.testing.assert_array_equal(enc.mask, w.node_mask[k])


def test_targets_use_truth_shifted_by_the_sensor_bias() -> None:
    rec = ramp(nodes=1)
    # the sensor reads 0.3 °C and 2 %RH above the truth; the truth rises faster than the reading
    k = np.arange(80, dtype=float)
    rec.truth_t = [20.0 - 0.3 + 0.02 * k]
    rec.truth_rh = [38.0 + 0.05 * k]
    w = make_windows([rec], ModelCard())
    # median(reading - truth) is over the whole recording: 0.3 - 0.01 * median(k) = -0.095
    bias = float(np.median(rec.t[0] - rec.truth_t[0]))
    want = (20.0 - 0.3 + 0.02 * 36 + bias) - 20.31
    assert w.y_forecast[0, 0, 0, 0] == pytest.approx(want, abs=1e-5)
    assert w.y_forecast[0, 0, 0, 1] == pytest.approx(0.25 / 5, abs=1e-5)


def test_fault_and_insight_labels_at_the_window_end() -> None:
    rec = ramp(nodes=2)
    lab = np.zeros(80, np.int64)
    lab[40:] = FAULT_CLASSES.index("stuck")
    rec.faults = [(rec.ts[0], lab), (rec.ts[1], np.zeros(80, np.int64))]
    occ = (np.arange(80) >= 50).astype(np.int64)
    rec.occupancy = (rec.ts[0], occ)
    w = make_windows([rec], ModelCard())
    end_idx = ((w.end_ts - T0) / 60).astype(int)
    assert (w.y_fault[:, 0] == np.where(end_idx >= 40, 1, 0)).all()
    assert (w.y_fault[:, 1] == 0).all() and w.y_fault_mask[:, :2].all()
    assert not w.y_fault_mask[:, 2:].any()
    assert (w.y_insight[:, 0] == (end_idx >= 50)).all()
    assert w.y_insight_mask[:, 0].all() and not w.y_insight_mask[:, 1].any()


def test_max_windows_is_a_seeded_subset_in_time_order() -> None:
    card = ModelCard()
    full = make_windows([ramp()], card)
    a = make_windows([ramp()], card, max_windows=10, seed=3)
    b = make_windows([ramp()], card, max_windows=10, seed=3)
    assert len(a) == 10 and np.array_equal(a.end_ts, b.end_ts)
    assert (np.diff(a.end_ts) > 0).all() and set(a.end_ts) <= set(full.end_ts)
    with pytest.raises(UsageError, match="stride_steps"):
        make_windows([ramp()], card, stride_steps=0)


def test_no_empty_windows_across_a_gap() -> None:
    rec = ramp(n_steps=240)
    keep = (np.arange(240) < 40) | (np.arange(240) >= 200)  # 160 minutes without a reading
    for i in range(2):
        rec.ts[i], rec.t[i], rec.rh[i], rec.ok[i] = (
            a[keep] for a in (rec.ts[i], rec.t[i], rec.rh[i], rec.ok[i])
        )
    card = ModelCard()
    w = make_windows([rec], card)
    # ends 31..70 still hold reads of the first stretch, ends 200..239 of the second
    assert len(w) == 80 == count_windows([rec], card)
    assert (w.node_mask.sum(axis=1) == 2).all()
    assert count_windows([rec], card, stride_steps=10) == 8


def test_too_many_nodes_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="3 nodes, the model has 2 slots"):
        make_windows([ramp(nodes=3)], ModelCard(nodes=2))


# ---------------------------------------------------------------- world


def test_world_spec_gives_truth_labels_and_graph() -> None:
    recs = load("world:5?days=1&rooms=3")
    assert [r.name for r in recs] == ["world:5/day0"]
    r = recs[0]
    n = len(r.nodes)
    assert r.adjacency is not None and r.adjacency.shape == (n, n)
    assert r.truth_t is not None and r.faults is not None and r.occupancy is not None
    assert len(r.ts[0]) == 1440 and (np.diff(r.ts[0]) == 60).all()
    w = make_windows(recs, ModelCard(), stride_steps=60)
    assert w.node_mask[:, :n].all() and not w.node_mask[:, n:].any()
    assert w.y_fault_mask[:, :n].all() and w.y_insight_mask.all()
    # one target by hand: truth at end + 15 min, shifted by the node's bias, minus the last reading
    k, i = 3, 0
    j = int(np.flatnonzero(r.ts[i] == w.end_ts[k])[0])
    good = r.ok[i] & (r.faults[i][1] == 0)
    bias = np.median(r.t[i][good] - r.truth_t[i][good])
    want = r.truth_t[i][j + 15] + bias - r.t[i][j]
    assert w.y_forecast[k, i, 1, 0] == pytest.approx(want, abs=1e-4)


def test_world_spike_labels_say_what_a_window_shows(tmp_path: Path) -> None:
    # world:5 with every sensor faulted gives kitchen-2 a spiking stretch of 80 minutes at 07:25;
    # the simulator labels the stretch, the model's labels follow the spikes themselves
    spike = FAULT_CLASSES.index("spike")
    (r,) = load("world:5?days=1&rooms=3&faults=1&step=10&condensation=0")
    i = r.nodes.index("kitchen-2")
    ts, lab = r.faults[i]
    onset, end = r.ts[i][0] + 26711.0, r.ts[i][0] + 26711.0 + 4817.0
    bias = np.nanmedian(r.t[i] - r.truth_t[i])
    jumped = ts[np.abs(r.t[i] - r.truth_t[i] - bias) > 3.0]
    assert len(jumped) > 10 and onset <= jumped.min() and jumped.max() < end
    want = (ts >= jumped.min()) & (ts < jumped.max() + SPIKE_MEMORY_S)
    assert np.array_equal(lab == spike, want)
    assert (lab[(ts >= end) & want] == spike).sum() > 150  # the last spikes, still in view
    # a world export read back as CSV labels alike
    from humigraph.world.export import export_csv

    out = tmp_path / "w.csv"
    export_csv(
        out,
        seed=5,
        days=1,
        rooms=3,
        step=10,
        fault_rate=1,
        site_name="world5",
        condensation_faults=False,
    )
    (c,) = load(f"csv:{out}")
    cts, clab = c.faults[c.nodes.index("kitchen-2")]
    assert np.array_equal(cts, ts) and np.array_equal(clab, lab)


def test_thin_node_keeps_one_read_per_period_with_its_truth_and_labels() -> None:
    from humigraph.model.data import thin_node

    (r,) = load("world:5?days=1&rooms=3&step=10&faults=1")
    every = r.copy()
    thin_node(every, 1, 300.0)
    ts = every.ts[1]
    assert len(ts) == 288 and np.allclose(np.diff(ts), 300.0)  # a read every 5 minutes
    kept = np.isin(r.ts[1], ts)
    for name in ("t", "rh", "ok", "truth_t", "truth_rh"):
        np.testing.assert_array_equal(getattr(every, name)[1], getattr(r, name)[1][kept])
    np.testing.assert_array_equal(every.faults[1][1], r.faults[1][1][kept])
    # the other nodes and the input are untouched
    assert all(np.array_equal(every.ts[i], r.ts[i]) for i in (0, 2))
    assert len(r.ts[1]) == 8640


def test_thin_some_reads_about_one_board_in_ten_like_a_deep_sleep_board_seeded() -> None:
    """Training's deep-sleep boards (commands.thin_some): seeded per recording, about the asked
    share of nodes thinned to one of the periods, the input untouched; fraction 0 is a no-op."""
    from humigraph.model.commands import SLEEP_PERIODS_S, thin_some

    recs = [ramp(n_steps=120, nodes=8, name=f"r{k}") for k in range(40)]
    # a read every 10 s for 20 minutes: every period thins, and leaves two reads or more
    for rec in recs:
        rec.ts = [T0 + 10.0 * np.arange(len(ts)) for ts in rec.ts]
    a = thin_some(recs, seed=3, fault_share=0.0)
    b = thin_some(list(reversed(recs)), seed=3)[::-1]  # by name, not by order
    thinned, periods = 0, set()
    for src, x, y in zip(recs, a, b, strict=True):
        assert len(src.ts[0]) == 120  # the input keeps every read
        for i in range(8):
            np.testing.assert_array_equal(x.ts[i], y.ts[i])
            if len(x.ts[i]) < 120:
                thinned += 1
                gap = float(np.diff(x.ts[i])[0])
                assert gap in SLEEP_PERIODS_S
                periods.add(gap)
                np.testing.assert_array_equal(x.t[i], src.t[i][np.isin(src.ts[i], x.ts[i])])
    assert 0.05 < thinned / (40 * 8) < 0.15 and periods == set(SLEEP_PERIODS_S)
    # with fault_share 0 the thinned boards get no injected fault (inject_faults reads the list)
    for src, x in zip(recs, a, strict=True):
        short = [i for i in range(8) if len(x.ts[i]) < len(src.ts[i])]
        assert x.meta.get("no_faults", []) == short

    def pattern(out: list[Recording]) -> list[int]:
        return [len(ts) for r in out for ts in r.ts]

    # another epoch thins other boards
    assert pattern(thin_some(recs, seed=4, fault_share=0.0)) != pattern(a)
    assert all(x is src for x, src in zip(thin_some(recs, seed=3, fraction=0.0), recs, strict=True))
    # with fault_share, the same boards are thinned, and about that share of them may get faults
    half = thin_some(recs, seed=3, fault_share=0.5, fault_periods=())
    assert pattern(half) == pattern(a)
    spared = sum(len(x.meta.get("no_faults", [])) for x in half)
    assert 0.3 < spared / thinned < 0.7
    every = thin_some(recs, seed=3, fault_share=1.0, fault_periods=())
    assert all(not x.meta.get("no_faults") for x in every)
    # by default (what train does) only the boards thinned to 20 s to one minute get faults
    minute = thin_some(recs, seed=3)
    assert pattern(minute) == pattern(a)
    for src, x in zip(recs, minute, strict=True):
        short = [i for i in range(8) if len(x.ts[i]) < len(src.ts[i])]
        slow = [i for i in short if float(np.diff(x.ts[i])[0]) > 60.0]
        assert x.meta.get("no_faults", []) == slow


def test_thin_some_reads_whole_sites_at_one_period_with_their_faults() -> None:
    """--site-sleep-fraction: about that share of the recordings has every board read once per
    one of the site periods, faults kept; the boards' own picks stay as they were elsewhere."""
    from humigraph.model.commands import thin_some

    recs = [ramp(n_steps=60, nodes=4, name=f"r{k}") for k in range(60)]
    for rec in recs:  # a read every 10 s, the firmware's default
        rec.ts = [T0 + 10.0 * np.arange(len(ts)) for ts in rec.ts]
    out = thin_some(recs, seed=5, site_fraction=0.3, site_periods_s=(20.0, 30.0))
    alone = thin_some(recs, seed=5)
    whole, gaps = 0, set()
    for src, x, y in zip(recs, out, alone, strict=True):
        assert len(src.ts[0]) == 60  # the input keeps every read
        lengths = {len(ts) for ts in x.ts}
        if lengths in ({30}, {20}):  # every board read every 20 or every 30 s
            whole += 1
            gaps |= {float(np.diff(ts)[0]) for ts in x.ts}
            assert not x.meta.get("no_faults")  # a whole site keeps its faults
        else:
            assert [len(ts) for ts in x.ts] == [len(ts) for ts in y.ts]
    assert 0.15 < whole / 60 < 0.45 and gaps == {20.0, 30.0}


def test_world_days_split_and_options() -> None:
    recs = load("world:1-2?days=2&rooms=2&condensation=0", limit_days=1)
    assert [r.name for r in recs] == ["world:1/day0", "world:2/day0"]
    with pytest.raises(UsageError, match="unknown option"):
        load("world:1?dayz=2")
    with pytest.raises(UsageError, match="days=-1"):
        load("world:1?days=-1")
    with pytest.raises(UsageError, match="seed must be an integer"):
        load("world:abc")


# ---------------------------------------------------------------- split


def test_split_by_name_deterministic_and_disjoint() -> None:
    recs = [ramp(name=f"r{i}") for i in range(10)]
    train, test = split(recs, holdout=0.3, seed=1)
    assert len(test) == 3 and len(train) == 7
    assert not {r.name for r in train} & {r.name for r in test}
    train2, test2 = split(list(reversed(recs)), holdout=0.3, seed=1)
    assert {r.name for r in test2} == {r.name for r in test}
    _, test3 = split(recs, holdout=0.3, seed=2)
    assert {r.name for r in test3} != {r.name for r in test}
    assert split(recs[:1], holdout=0.5)[1] == []
    with pytest.raises(UsageError, match="holdout"):
        split(recs, holdout=1.0)


# ---------------------------------------------------------------- fault injection


def noisy(n_steps: int = 2000, nodes: int = 4) -> Recording:
    """4 s readings that change all the time (as Room-Climate's do)."""
    rng = np.random.default_rng(0)
    ts = T0 + 4.0 * np.arange(n_steps)
    return Recording(
        name="noisy",
        site="s",
        nodes=[f"n{i}" for i in range(nodes)],
        ts=[ts.copy() for _ in range(nodes)],
        t=[np.round(21 + np.cumsum(rng.normal(0, 0.02, n_steps)), 2) for _ in range(nodes)],
        rh=[np.round(45 + np.cumsum(rng.normal(0, 0.05, n_steps)), 3) for _ in range(nodes)],
        ok=[np.ones(n_steps, bool) for _ in range(nodes)],
    )


def test_injection_labels_exactly_where_values_changed() -> None:
    rec = noisy()
    before = rec.copy()
    (out,) = inject_faults([rec], rate=1.0, seed=7)
    kinds = {d["kind"] for d in out.meta["injected"]}
    assert len(out.meta["injected"]) == 4 and kinds  # every node of a short recording
    for i in range(4):
        changed = (out.t[i] != rec.t[i]) | (out.rh[i] != rec.rh[i]) | (out.ok[i] != rec.ok[i])
        changed &= ~(np.isnan(out.t[i]) & np.isnan(rec.t[i]))
        changed |= out.ok[i] != rec.ok[i]
        labelled = out.faults[i][1] > 0
        assert changed.any() and labelled.any()
        assert not (changed & ~labelled).any(), "a value changed outside its label"
        inj = next(d for d in out.meta["injected"] if d["node"] == out.nodes[i])
        assert FAULT_CLASSES[int(out.faults[i][1][labelled][0])] == inj["kind"]
        stretch = (rec.ts[i] >= inj["onset"]) & (rec.ts[i] < inj["end"])
        if inj["kind"] == "spike":  # labelled from its first spike to a window after its last
            spikes = rec.ts[i][np.abs(out.t[i] - rec.t[i]) + np.abs(out.rh[i] - rec.rh[i]) > 1]
            shown = (rec.ts[i] >= spikes.min()) & (rec.ts[i] < spikes.max() + SPIKE_MEMORY_S)
            assert np.array_equal(shown, labelled) and not np.array_equal(stretch, labelled)
        else:
            assert np.array_equal(stretch, labelled)
        assert changed[stretch].mean() > (0.004 if inj["kind"] == "spike" else 0.2)
        # the reference keeps the healthy readings
        np.testing.assert_array_equal(out.truth_t[i], rec.t[i])
    # the input is untouched, the result is seeded
    np.testing.assert_array_equal(rec.t[0], before.t[0])
    (again,) = inject_faults([noisy()], rate=1.0, seed=7)
    assert again.meta["injected"] == out.meta["injected"]
    (other,) = inject_faults([noisy()], rate=1.0, seed=8)
    assert other.meta["injected"] != out.meta["injected"]


def test_each_kind_has_its_signature() -> None:
    for kind in ("stuck", "spike", "drift", "noise", "dropout"):
        (out,) = inject_faults([noisy(nodes=1)], rate=1.0, seed=1, kinds=[kind])
        rec = noisy(nodes=1)
        on = out.faults[0][1] > 0
        d_t = out.t[0][on] - rec.t[0][on]
        if kind == "stuck":
            assert np.unique(out.t[0][on]).size == 1
        elif kind == "spike":
            big = np.abs(d_t) >= 5.0
            assert big.any() and big.mean() < 0.2
        elif kind == "drift":
            assert 0.3 < np.abs(d_t[-20:]).mean() < 2.1 and np.abs(d_t[:5]).max() < 0.1
        elif kind == "noise":
            assert 0.2 < d_t.std() < 2.0
        else:
            assert (~out.ok[0][on]).mean() > 0.3 and np.isnan(out.t[0][~out.ok[0]]).all()


def test_injection_spares_the_nodes_listed_in_no_faults_and_keeps_the_others_stretches() -> None:
    """Training's deep-sleep boards stay healthy; the other nodes' fault stretches stay put (the
    kinds, taken in turn, move up)."""
    (every,) = inject_faults([noisy()], rate=1.0, seed=7)
    rec = noisy()
    rec.meta["no_faults"] = [1, 3]
    (out,) = inject_faults([rec], rate=1.0, seed=7)
    assert [d["node"] for d in out.meta["injected"]] == [rec.nodes[0], rec.nodes[2]]
    stretches = [(d["node"], d["onset"], d["end"]) for d in every.meta["injected"]]
    assert [(d["node"], d["onset"], d["end"]) for d in out.meta["injected"]] == stretches[::2]
    for i in (1, 3):
        np.testing.assert_array_equal(out.t[i], rec.t[i])
        assert (out.faults[i][1] == 0).all()
    np.testing.assert_array_equal(out.t[0], every.t[0])  # the first node's kind is the same


def test_injection_rate_zero_keeps_values_and_labels_ok() -> None:
    (out,) = inject_faults([noisy()], rate=0.0, seed=1)
    assert all((f[1] == 0).all() for f in out.faults) and out.meta["injected"] == []
    with pytest.raises(UsageError, match="between 0 and 1"):
        inject_faults([noisy()], rate=1.5, seed=1)


# ---------------------------------------------------------------- file and database sources


@pytest.mark.skipif(not ROOM_CLIMATE.is_dir(), reason="needs ../shared/data/room-climate-A")
def test_room_climate_loader() -> None:
    recs = load(f"room-climate:{ROOM_CLIMATE}")
    assert len(recs) == 60
    r = recs[0]
    assert r.name == "room-climate-A/room_climate-location_A-measurement01.csv"
    assert r.nodes == ["node1", "node2", "node3", "node4"]
    assert 2000 < len(r.ts[0]) < 2100 and 3.5 < np.median(np.diff(r.ts[0])) < 4.5
    assert r.ts[0][0] == pytest.approx(1458031648.545)
    assert r.t[0][0] == pytest.approx(20.48) and r.rh[0][0] == pytest.approx(42.332)
    occ = [x.occupancy[1].mean() for x in recs if x.occupancy is not None]
    vent = [x.ventilation[1].mean() for x in recs if x.ventilation is not None]
    assert len(occ) == 60 and 0.2 < np.mean(occ) < 0.9 and 0 < np.mean(vent) < 0.6
    few = load(f"room-climate:{ROOM_CLIMATE}", limit_days=0.1)
    assert sum(x.duration_s for x in few) <= 0.1 * 86400 + 1 and len(few) < 60


def test_csv_loader_plain_and_world_export(tmp_path: Path) -> None:
    f = tmp_path / "r.csv"
    f.write_text(
        "ts,dev,site,t,rh\n"
        "120,a,home,20.0,40.0\n60,a,home,19.5,41.0\n60,b,home,,\n60,c,lab,18.0,50.0\n"
    )
    recs = load(f"csv:{f}")
    assert [r.name for r in recs] == ["csv:r.csv/home", "csv:r.csv/lab"]
    home = recs[0]
    assert home.nodes == ["a", "b"] and home.ts[0].tolist() == [60.0, 120.0]
    assert home.t[0].tolist() == [19.5, 20.0] and home.ok[1].tolist() == [False]
    assert home.truth_t is None and home.occupancy is None

    from humigraph.world.export import export_csv

    out = tmp_path / "w.csv"
    export_csv(out, seed=2, days=0.05, rooms=2, faults=None)
    (w,) = load(f"csv:{out}")
    assert w.truth_t is not None and w.faults is not None and w.occupancy is not None
    assert w.adjacency is not None and w.adjacency.shape == (len(w.nodes),) * 2

    bad = tmp_path / "bad.csv"
    bad.write_text("time,dev,site,t,rh\n1,a,b,2,3\n")
    with pytest.raises(UsageError, match=r"lacks column\(s\) \['ts'\]"):
        load(f"csv:{bad}")
    with pytest.raises(UsageError, match="no such file"):
        load(f"csv:{tmp_path / 'missing.csv'}")


def _insert_readings(execute, placeholder: str) -> None:
    rows = [
        ("kitchen-1", 1, 1, "home", 1000.0, 1000.0, 1, 21.0, 45.0, 1, None, "dht22", 1.0),
        ("kitchen-1", 1, 2, "home", 1060.0, 1060.0, 2, None, None, 0, "timeout", "dht22", 1.0),
        ("hall-1", 1, 1, "home", 1005.0, 1005.0, 1, 20.0, 40.0, 1, None, "dht22", 1.0),
        ("x-1", 1, 1, "lab", 1005.0, 1005.0, 1, 25.0, 30.0, 1, None, "dht11", 1.0),
    ]
    cols = "dev, boot, seq, site, ts, placed_ts, up, t, rh, ok, err, sensor, received"
    marks = ", ".join([placeholder] * 13)
    for r in rows:
        execute(f"INSERT INTO readings ({cols}) VALUES ({marks})", r)


def _check_store_recordings(recs: list[Recording]) -> None:
    assert [r.site for r in recs] == ["home", "lab"]
    home = recs[0]
    assert home.nodes == ["hall-1", "kitchen-1"]
    assert home.ts[1].tolist() == [1000.0, 1060.0] and home.ok[1].tolist() == [True, False]
    assert home.t[1][0] == 21.0 and np.isnan(home.t[1][1])


def test_sqlite_loader(tmp_path: Path) -> None:
    from humigraph.gateway.store import Store

    db = tmp_path / "gw.db"
    store = Store(db)
    _insert_readings(store.conn.execute, "?")
    store.close()
    recs = load(f"sqlite:///{db}")
    _check_store_recordings(recs)
    assert recs[0].name == "sqlite:gw.db/home"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(UsageError, match="no gateway readings table"):
        load(f"sqlite:///{empty}")
    with pytest.raises(UsageError, match="no such database file"):
        load(f"sqlite:///{tmp_path / 'nope.db'}")


def test_postgres_loader_and_missing_tables() -> None:
    psycopg = pytest.importorskip("psycopg")
    from support.pg import ADMIN_DSN as base

    try:
        admin = psycopg.connect(base, connect_timeout=3, autocommit=True)
    except psycopg.Error:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    schema = f"hg_test_{uuid.uuid4().hex[:8]}"
    admin.execute(f"CREATE SCHEMA {schema}")
    spec = f"{base}?options=-csearch_path%3D{schema}"
    try:
        with pytest.raises(UsageError, match="no `readings` table"):
            load(spec)
        admin.execute(
            f"CREATE TABLE {schema}.readings (dev TEXT, boot INT, seq INT, site TEXT, ts DOUBLE "
            "PRECISION, placed_ts DOUBLE PRECISION, up BIGINT, t DOUBLE PRECISION, rh DOUBLE "
            "PRECISION, ok INT, err TEXT, sensor TEXT, received DOUBLE PRECISION)"
        )
        _insert_readings(
            lambda q, r: admin.execute(q.replace("readings", f"{schema}.readings"), r), "%s"
        )
        _check_store_recordings(load(spec))
    finally:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()


def test_bad_specs_name_the_spec() -> None:
    for spec, msg in [
        ("", "empty SPEC"),
        ("parquet:x", "unknown data SPEC"),
        ("room-climate:/no/such/dir", "not a directory"),
        ("sqlite://relative.db", "three slashes"),
    ]:
        with pytest.raises(UsageError, match=msg):
            load(spec)
