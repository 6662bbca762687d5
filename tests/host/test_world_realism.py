"""Realism, measured: the world simulator against real recordings in ../shared/data.

Skips when the data folder is absent. The numbers printed here are the ones in docs/world.md
(run with ``-s`` to see them).
"""

from __future__ import annotations

import numpy as np
import pytest
from humigraph.world.export import generate
from humigraph.world.physics import abs_humidity, simulate
from humigraph.world.site import make_site
from support.real_data import esp32_dht22, need

pytestmark = pytest.mark.timeout(60)

START = 1764374400.0


def step_stats(t: np.ndarray, rh: np.ndarray) -> dict[str, float]:
    dt_ = np.abs(np.diff(t))
    drh = np.abs(np.diff(rh))
    return {
        "t_zero": float((dt_ < 0.05).mean()),
        "rh_zero": float((drh < 0.05).mean()),
        "t_p90": float(np.percentile(dt_, 90)),
        "rh_p90": float(np.percentile(drh, 90)),
        "rh_median": float(np.median(drh)),
    }


def test_dht22_step_sizes_and_resolution_match_a_real_log() -> None:
    ts, t_real, rh_real = esp32_dht22()
    interval = float(np.median(np.diff(ts)))
    real = step_stats(t_real, rh_real)
    days = len(ts) * interval / 86400.0
    site, _, cols = generate(11, days, rooms=3, step=interval, condensation_faults=False)
    sims = []
    for s in site.sensors:
        if s.model != "dht22":
            continue
        m = cols["dev"] == s.dev
        t, rh = cols["t"][m].astype(float), cols["rh"][m].astype(float)
        # resolution: every value a multiple of 0.1, and tenths are used
        for x in (t, rh):
            assert np.allclose(np.round(x * 10), x * 10, atol=1e-6)
            assert len(np.unique(np.round(x * 10) % 10)) > 3
        sims.append(step_stats(t, rh))
    sim = {k: float(np.mean([s[k] for s in sims])) for k in real}
    print(f"\nreal DHT22 (interval {interval:.0f}s): {real}\nsimulated DHT22: {sim}")
    assert abs(sim["t_zero"] - real["t_zero"]) < 0.3
    assert abs(sim["rh_zero"] - real["rh_zero"]) < 0.3
    assert sim["rh_p90"] <= 3 * real["rh_p90"] + 0.1
    assert sim["t_p90"] <= 3 * real["t_p90"] + 0.1
    for x in (t_real, rh_real):
        assert np.allclose(np.round(x * 10), x * 10, atol=1e-6)


def room_climate_a() -> tuple[list[float], list[float], float, float]:
    """Occupancy onsets in Room-Climate A: rise of the room's mean RH (%) and absolute humidity
    (g/m³) over the first 10 minutes, and the median spread (std) between its 4 nodes."""
    rises_rh: list[float] = []
    rises_ah: list[float] = []
    spreads_t: list[np.ndarray] = []
    spreads_rh: list[np.ndarray] = []
    files = sorted(need("room-climate-A").glob("*.csv"))
    if not files:
        pytest.skip("no Room-Climate A measurement files")
    for f in files:
        a = np.loadtxt(f, delimiter=",")
        b = (a[:, 2] // 60).astype(int)
        nb = int(b.max()) + 1
        per_t = np.full((nb, 4), np.nan)
        per_rh = np.full((nb, 4), np.nan)
        for k in range(4):
            s = a[:, 3] == k + 1
            cnt = np.bincount(b[s], minlength=nb).astype(float)
            cnt[cnt == 0] = np.nan
            per_t[:, k] = np.bincount(b[s], a[s, 4], nb) / cnt
            per_rh[:, k] = np.bincount(b[s], a[s, 5], nb) / cnt
        occ = np.bincount(b, a[:, 8], nb) / np.maximum(np.bincount(b, minlength=nb), 1)
        spreads_t.append(np.nanstd(per_t, axis=1))
        spreads_rh.append(np.nanstd(per_rh, axis=1))
        rh = np.nanmean(per_rh, axis=1)
        ah = abs_humidity(np.nanmean(per_t, axis=1), rh)
        o = occ > 0.5
        people = np.maximum(np.round(occ), 1)
        for i in range(5, nb - 10):
            if o[i] and not o[i - 5 : i].any() and o[i : i + 10].all():
                rises_rh.append(float(rh[i + 10] - rh[i - 1]) / people[i])
                rises_ah.append(float(ah[i + 10] - ah[i - 1]) / people[i])
    return (
        rises_rh,
        rises_ah,
        float(np.nanmedian(np.concatenate(spreads_t))),
        float(np.nanmedian(np.concatenate(spreads_rh))),
    )


def simulated_onsets(seeds: tuple[int, ...] = (1, 2), days: float = 2.0) -> tuple[list, list]:
    rises_rh: list[float] = []
    rises_ah: list[float] = []
    for seed in seeds:
        site = make_site(seed, 8)
        tr = simulate(site, START, days * 86400.0, step=60)
        for r, room in enumerate(site.rooms):
            if room.kind in ("kitchen", "bath"):  # cooking and showers are not "entering"
                continue
            o = tr.occupants[:, r]
            for i in range(5, len(o) - 10):
                if o[i] > 0 and not o[i - 5 : i].any() and (o[i : i + 10] > 0).all():
                    rises_rh.append(float(tr.rh[i + 10, r] - tr.rh[i - 1, r]) / o[i])
                    rises_ah.append(float(tr.ah[i + 10, r] - tr.ah[i - 1, r]) / o[i])
    return rises_rh, rises_ah


def test_humidity_rise_when_occupants_enter_matches_room_climate_a() -> None:
    real_rh, real_ah, _, _ = room_climate_a()
    sim_rh, sim_ah = simulated_onsets()
    r_ah, s_ah = float(np.median(real_ah)), float(np.median(sim_ah))
    r_rh, s_rh = float(np.median(real_rh)), float(np.median(sim_rh))
    print(
        f"\nper occupant, 10 min after entering: real {len(real_ah)} onsets AH +{r_ah:.3f} g/m³ "
        f"RH +{r_rh:.2f}%; simulated {len(sim_ah)} onsets AH +{s_ah:.3f} g/m³ RH +{s_rh:.2f}%"
    )
    assert len(real_ah) >= 20 and len(sim_ah) >= 10
    assert r_ah > 0 and s_ah > 0 and s_rh > 0
    assert 1 / 3 < s_ah / r_ah < 3
    assert 1 / 4 < s_rh / r_rh < 4
    # most entries raise the moisture content, in both
    assert np.mean(np.array(sim_ah) > 0) > 0.7 and np.mean(np.array(real_ah) > 0) > 0.7


def test_spread_between_nodes_of_one_room_matches_room_climate_a() -> None:
    _, _, real_t, real_rh = room_climate_a()
    site, _, cols = generate(
        5, 0.25, rooms=4, step=60, sensors_per_room=4, condensation_faults=False
    )
    k = len(site.sensors)
    n = len(cols["ts"]) // k
    t = cols["t"].astype(float).reshape(n, k)
    rh = cols["rh"].astype(float).reshape(n, k)
    room = np.array([s.room for s in site.sensors])
    sim_t = float(np.median([np.median(np.std(t[:, room == r], axis=1)) for r in range(4)]))
    sim_rh = float(np.median([np.median(np.std(rh[:, room == r], axis=1)) for r in range(4)]))
    print(
        f"\nspread (std) between 4 nodes of one room: real T {real_t:.2f} °C RH {real_rh:.2f}%; "
        f"simulated T {sim_t:.2f} °C RH {sim_rh:.2f}%"
    )
    assert 1 / 3 < sim_t / real_t < 3
    assert 1 / 3 < sim_rh / real_rh < 3
