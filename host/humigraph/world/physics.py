"""Room physics: heat and moisture balance of every room of a site, stepped with numpy.

Each room has an air node (air plus furnishings) and a thermal mass node (walls, floor). Heat
flows through walls to neighbours and the outside, with the air exchanged through gaps, open doors
and open windows, and comes from heaters (thermostat with hysteresis), occupants and cooking or
showers. Moisture is tracked as absolute humidity (g/m³) with a hygroscopic buffer; relative
humidity and dew point follow from it and the temperature (Magnus formula). A cold exterior wall
condenses the excess when the room's dew point rises above the wall surface temperature.

Everything is deterministic for ``(site, start, duration)``: schedules, weather and events are
drawn from generators seeded by the site seed and the calendar day, so two processes simulating
the same day agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .site import RHO_C, Site, rng_for
from .source import DAY

__all__ = [
    "Events",
    "Trace",
    "abs_humidity",
    "dew_point",
    "events_for",
    "outdoor",
    "rel_humidity",
    "saturation_vapour_pressure",
    "simulate",
]

MAGNUS_B = 17.62
MAGNUS_C = 243.12  # °C
FURNISHING = 5.0  # air-node heat capacity as a multiple of the air's own
# effective moisture capacity (hygroscopic buffering) as a multiple of the room volume
MOISTURE_BUFFER = 1.5


def saturation_vapour_pressure(t: Any) -> Any:
    """hPa over water at ``t`` °C (Magnus)."""
    return 6.112 * np.exp(MAGNUS_B * np.asarray(t) / (MAGNUS_C + np.asarray(t)))


def abs_humidity(t: Any, rh: Any) -> Any:
    """g/m³ of water vapour in air at ``t`` °C and ``rh`` %."""
    t = np.asarray(t, dtype=float)
    return 216.7 * saturation_vapour_pressure(t) * np.asarray(rh) / 100.0 / (t + 273.15)


def rel_humidity(t: Any, ah: Any) -> Any:
    """% relative humidity of air at ``t`` °C holding ``ah`` g/m³ (not clipped)."""
    t = np.asarray(t, dtype=float)
    return 100.0 * np.asarray(ah) * (t + 273.15) / (216.7 * saturation_vapour_pressure(t))


def dew_point(t: Any, rh: Any) -> Any:
    """°C, Magnus formula."""
    t = np.asarray(t, dtype=float)
    g = np.log(np.clip(np.asarray(rh, dtype=float), 1e-3, None) / 100.0) + MAGNUS_B * t / (
        MAGNUS_C + t
    )
    return MAGNUS_C * g / (MAGNUS_B - g)


def daily_shape_np(when: np.ndarray) -> np.ndarray:
    """Vectorised :func:`humigraph.world.source.daily_shape`: -1 at 05:00, +1 at 15:00."""
    hour = (when % DAY) / 3600.0
    day_part = -np.cos(np.pi * (hour - 5.0) / 10.0)
    since_max = (hour - 15.0) % 24.0
    night_part = np.cos(np.pi * since_max / 14.0)
    return np.where((hour >= 5.0) & (hour <= 15.0), day_part, night_part)


def outdoor(site: Site, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outdoor temperature (°C) and absolute humidity (g/m³): a daily cycle plus weather drift
    (a few slow sines of 1.5-7 days with seeded phases, so it is stateless and continuous)."""
    rng = rng_for("weather", site.seed, site.name)
    amp = float(rng.uniform(2.5, 5.5))
    periods = rng.uniform(1.5, 7.0, 4) * DAY
    phases = rng.uniform(0, 2 * np.pi, 4)
    amps = rng.uniform(0.5, 1.6, 4)
    drift = np.zeros_like(when, dtype=float)
    drift_w = np.zeros_like(when, dtype=float)
    for p, ph, a in zip(periods, phases, amps, strict=True):
        drift += a * np.sin(2 * np.pi * when / p + ph)
        drift_w += 0.5 * a * np.sin(2 * np.pi * when / (0.8 * p) + 1.3 * ph)
    t_out = site.t_out_mean + amp * daily_shape_np(when) + drift
    dew = site.t_out_mean - float(rng.uniform(2.0, 6.0)) + drift_w
    w_out = abs_humidity(dew, 100.0)
    w_out = np.minimum(w_out, abs_humidity(t_out, 97.0))
    return t_out, w_out


@dataclass
class Events:
    """Schedules in absolute unix seconds: ``[start, end)`` intervals."""

    # (start, end, room, heat W, moisture g/h, people, activity label)
    loads: list[tuple[float, float, int, float, float, int, str]]
    doors: list[tuple[float, float, int]]  # (start, end, door index) open
    windows: list[tuple[float, float, int, float]]  # (start, end, room, airflow m³/s) open


def _rooms_of(site: Site, kind: str) -> list[int]:
    return [i for i, r in enumerate(site.rooms) if r.kind == kind]


def events_for(site: Site, day: int) -> Events:
    """Occupant, door and window schedules of calendar day ``day`` (unix time // 86400).

    Sleep starting in the evening of ``day`` runs into the next morning; callers gather days
    ``first-1 .. last`` to cover a window.
    """
    rng = rng_for("events", site.seed, site.name, day)
    d0 = day * DAY
    h = 3600.0
    loads: list[tuple[float, float, int, float, float, int, str]] = []
    n = site.n_rooms
    beds = _rooms_of(site, "bed") or [0]
    baths = _rooms_of(site, "bath")
    kitchens = _rooms_of(site, "kitchen")
    living = _rooms_of(site, "living") or [0]
    offices = _rooms_of(site, "office")
    weekend = ((day + 4) % 7) in (5, 6)  # 1970-01-01 was a Thursday
    cook = int(rng.integers(0, site.occupants))
    for p in range(site.occupants):
        bed = beds[p % len(beds)]
        wake = d0 + (6.3 + rng.uniform(0, 1.5) + (1.5 if weekend else 0.0)) * h
        sleep = d0 + (22.3 + rng.uniform(0, 1.7)) * h
        next_wake = sleep + (7.5 + rng.uniform(-0.5, 1.0)) * h
        loads.append((sleep, next_wake, bed, 80.0, 40.0, 1, "sleep"))
        t = wake
        if baths:
            dur = rng.uniform(10, 25) * 60
            shower = rng.random() < 0.7
            # a shower: 1.5-2.5 kg/h of vapour for its duration (a few hundred grams)
            moist = 55.0 + (rng.uniform(1500, 2500) if shower else 0.0)
            loads.append((t, t + dur, baths[p % len(baths)], 150.0, moist, 1, "shower"))
            t += dur
        if kitchens:
            dur = rng.uniform(10, 25) * 60
            loads.append((t, t + dur, kitchens[0], 400.0, 300.0, 1, "breakfast"))
            t += dur
        works_away = (not weekend) and rng.random() < 0.7
        home_again = d0 + (16.5 + rng.uniform(0, 2.5)) * h
        if works_away:
            t = home_again
        else:
            spots = offices + living
            while t < home_again:
                dur = rng.uniform(0.5, 3.0) * h
                room = int(spots[int(rng.integers(0, len(spots)))])
                loads.append((t, min(t + dur, home_again), room, 110.0, 60.0, 1, "work"))
                t += dur
                if rng.random() < 0.3:
                    t += rng.uniform(0.3, 2.0) * h  # out for a while
        if kitchens and p == cook:
            dur = rng.uniform(30, 60) * 60
            # cooking: ~1.5 kW of hob heat and 0.4-1 kg/h of steam
            loads.append((t, t + dur, kitchens[0], 1500.0, rng.uniform(400, 1000), 1, "cooking"))
            t += dur
        while t < sleep:
            dur = min(rng.uniform(0.5, 2.5) * h, sleep - t)
            room = int(living[int(rng.integers(0, len(living)))])
            if rng.random() < 0.25:
                room = int(rng.integers(0, n))
            loads.append((t, t + dur, room, 100.0, 60.0, 1, "evening"))
            t += dur

    doors: list[tuple[float, float, int]] = []
    for k, door in enumerate(site.doors):
        if door.habit == "open":
            a = d0 + rng.uniform(6.5, 8.5) * h
            b = d0 + rng.uniform(21.5, 23.5) * h
            # closed for a while around midday now and then
            if rng.random() < 0.4:
                mid = d0 + rng.uniform(11, 16) * h
                doors.append((a, mid, k))
                doors.append((mid + rng.uniform(0.2, 1.5) * h, b, k))
            else:
                doors.append((a, b, k))
        else:
            for _ in range(int(rng.poisson(5))):
                a = d0 + rng.uniform(6.5, 23.0) * h
                doors.append((a, a + rng.exponential(12 * 60) + 30, k))

    windows: list[tuple[float, float, int, float]] = []
    for i, room in enumerate(site.rooms):
        if room.exterior_sides == 0:
            continue
        # morning airing, longer and wider when it is mild outside
        p_air = 0.5 if site.t_out_mean < 10 else 0.8
        if rng.random() < p_air:
            a = d0 + rng.uniform(6.8, 9.5) * h
            dur = rng.uniform(5, 20 if site.t_out_mean < 10 else 90) * 60
            windows.append((a, a + dur, i, float(rng.uniform(0.05, 0.15))))
        if room.kind in ("bath", "kitchen") and rng.random() < 0.5:
            # after a shower or cooking
            a = d0 + rng.uniform(7.0, 20.0) * h
            windows.append((a, a + rng.uniform(5, 20) * 60, i, float(rng.uniform(0.03, 0.1))))
    return Events(loads=loads, doors=doors, windows=windows)


@dataclass
class Trace:
    """The simulated state on a regular time grid (``n`` times, ``r`` rooms, ``d`` doors)."""

    site: Site
    times: np.ndarray  # (n,) unix seconds
    t: np.ndarray  # (n, r) °C air
    ah: np.ndarray  # (n, r) g/m³
    rh: np.ndarray  # (n, r) %
    surface_t: np.ndarray  # (n, r) °C coldest wall surface
    condensing: np.ndarray  # (n, r) bool
    occupants: np.ndarray  # (n, r) int
    heating: np.ndarray  # (n, r) bool heater (or cooler) on
    window: np.ndarray  # (n, r) bool
    door: np.ndarray  # (n, d) bool
    t_out: np.ndarray  # (n,)
    rh_out: np.ndarray  # (n,)

    @property
    def dew_point(self) -> np.ndarray:
        return dew_point(self.t, self.rh)

    def room_doors_open(self) -> np.ndarray:
        """(n, r) number of open doors of each room."""
        out = np.zeros(self.t.shape, dtype=int)
        for k, d in enumerate(self.site.doors):
            out[:, d.a] += self.door[:, k]
            out[:, d.b] += self.door[:, k]
        return out


def _raster(
    intervals: list[tuple[float, float, int, float]], t0: float, dt: float, n: int, width: int
) -> np.ndarray:
    """Sum ``value`` over ``[start, end)`` into an ``(n, width)`` grid of step ``dt`` from ``t0``."""
    out = np.zeros((n, width))
    for start, end, col, value in intervals:
        a = max(0, int(math.ceil((start - t0) / dt)))
        b = min(n, int(math.ceil((end - t0) / dt)))
        if a < b:
            out[a:b, col] += value
    return out


def simulate(
    site: Site,
    start: float,
    duration: float,
    step: float = 60.0,
    warmup: float = DAY,
    max_dt: float = 10.0,
    progress: Callable[[float], None] | None = None,
) -> Trace:
    """Simulate ``site`` from ``start`` for ``duration`` seconds and record every ``step`` s.

    The state starts from a fixed guess ``warmup`` seconds earlier, so the result for a given
    window does not depend on what was simulated before it. ``progress(days_done)`` is called
    after every simulated day of the recorded window.
    """
    if step <= 0 or duration <= 0:
        raise ValueError("step and duration must be positive")
    sub = max(1, math.ceil(step / max_dt))
    dt = step / sub
    n_warm = int(round(warmup / step))
    n_rec = int(math.floor(duration / step)) + 1
    n_steps = (n_warm + n_rec) * sub
    t0 = start - n_warm * step
    grid = t0 + dt * np.arange(n_steps)

    r = site.n_rooms
    rooms = site.rooms
    vol = np.array([x.volume for x in rooms])
    area = np.array([x.area for x in rooms])
    c_air = vol * RHO_C * FURNISHING
    c_mass = area * 80e3
    h_mass = area * 25.0  # W/K: about 3 m² of surfaces per m² of floor at 8 W/(m²K)
    ua_out = np.array([x.ua_out for x in rooms])
    q_inf = np.array([x.infiltration for x in rooms])
    v_moist = vol * MOISTURE_BUFFER
    heater = np.array([x.heater_w for x in rooms])
    sp_day = np.array([x.setpoint_day for x in rooms])
    sp_night = np.array([x.setpoint_night for x in rooms])
    exterior = np.array([x.exterior_sides > 0 for x in rooms])
    # wall surface temperature factor (how far the inner surface sits towards the outside)
    f_surf = np.where(exterior, rng_for("surf", site.seed).uniform(0.12, 0.3, r), 0.0)

    wa = np.array([w.a for w in site.walls], dtype=int)
    wb = np.array([w.b for w in site.walls], dtype=int)
    w_ua = np.array([w.ua for w in site.walls])
    w_leak = np.array([w.leak for w in site.walls])
    w_g = w_ua + RHO_C * w_leak
    nw = len(site.walls)
    da = np.array([d.a for d in site.doors], dtype=int)
    db = np.array([d.b for d in site.doors], dtype=int)
    d_flow = np.array([d.airflow for d in site.doors])

    # schedules, rasterised on the fine grid
    first_day = int(math.floor(t0 / DAY)) - 1
    last_day = int(math.floor((t0 + n_steps * dt) / DAY))
    loads: list[tuple[float, float, int, float, float, int, str]] = []
    door_iv: list[tuple[float, float, int]] = []
    win_iv: list[tuple[float, float, int, float]] = []
    for day in range(first_day, last_day + 1):
        ev = events_for(site, day)
        loads += ev.loads
        door_iv += ev.doors
        win_iv += ev.windows
    heat_src = _raster([(a, b, k, q) for a, b, k, q, _, _, _ in loads], t0, dt, n_steps, r)
    moist_src = _raster([(a, b, k, m) for a, b, k, _, m, _, _ in loads], t0, dt, n_steps, r)
    moist_src /= 3600.0  # g/s
    occ = _raster([(a, b, k, float(p)) for a, b, k, _, _, p, _ in loads], t0, dt, n_steps, r)
    nd = len(site.doors)
    door_open = _raster([(a, b, k, 1.0) for a, b, k in door_iv], t0, dt, n_steps, max(nd, 1))
    door_open = np.minimum(door_open, 1.0)[:, :nd]
    win_flow = _raster(win_iv, t0, dt, n_steps, r)

    t_out, w_out = outdoor(site, grid)
    hour = (grid % DAY) / 3600.0
    day_mode = (hour >= 6.5) & (hour < 22.5)

    # state
    t_air = np.where(day_mode[0], sp_day, sp_night).astype(float)
    if site.hvac == "off":
        t_air = np.full(r, site.t_out_mean + 3.0)
    t_mass = t_air.copy()
    ah = np.asarray(abs_humidity(t_air, 45.0), dtype=float)
    hvac_on = np.zeros(r, dtype=bool)
    sign = {"heat": 1.0, "cool": -1.0, "off": 0.0}[site.hvac]
    cool_sp = 25.0

    n_out = n_rec
    rec = n_warm * sub  # first recorded fine step
    out_t = np.empty((n_out, r))
    out_ah = np.empty((n_out, r))
    out_surf = np.empty((n_out, r))
    out_cond = np.zeros((n_out, r), dtype=bool)
    out_hvac = np.zeros((n_out, r), dtype=bool)
    cond_now = np.zeros(r, dtype=bool)

    steps_per_day = max(1, int(round(DAY / dt)))
    for s in range(n_steps):
        if progress is not None and s > rec and (s - rec) % steps_per_day == 0:
            progress((s - rec) / steps_per_day)
        to = t_out[s]
        wo = w_out[s]
        # thermostat with hysteresis
        if sign > 0:
            sp = sp_day if day_mode[s] else sp_night
            hvac_on = np.where(t_air < sp - 0.25, True, np.where(t_air > sp + 0.25, False, hvac_on))
        elif sign < 0:
            hvac_on = np.where(
                t_air > cool_sp + 0.4, True, np.where(t_air < cool_sp - 0.4, False, hvac_on)
            )
        q = heat_src[s] + sign * heater * hvac_on
        # exchange through walls and doors (edge flux a <- b)
        m = np.zeros(r)
        if nw:
            flux = w_g * (t_air[wb] - t_air[wa])
            q = q + np.bincount(wa, flux, r) - np.bincount(wb, flux, r)
            wm = w_leak * (ah[wb] - ah[wa])
            m += np.bincount(wa, wm, r) - np.bincount(wb, wm, r)
        if nd:
            fd = d_flow * door_open[s]
            dflux = RHO_C * fd * (t_air[db] - t_air[da])
            q += np.bincount(da, dflux, r) - np.bincount(db, dflux, r)
            dm = fd * (ah[db] - ah[da])
            m += np.bincount(da, dm, r) - np.bincount(db, dm, r)
        q_vent = q_inf + win_flow[s]
        q += (ua_out + RHO_C * q_vent) * (to - t_air) + h_mass * (t_mass - t_air)
        m += q_vent * (wo - ah) + moist_src[s]
        t_mass = t_mass + dt * h_mass * (t_air - t_mass) / c_mass
        t_air = t_air + dt * q / c_air
        ah = ah + dt * m / v_moist
        # condensation on the coldest surface, and never above saturation in the air
        surf = t_air - f_surf * (t_air - to)
        sat_surf = abs_humidity(surf, 100.0)
        cond_now = ah > sat_surf
        ah = np.where(cond_now, ah - 0.02 * dt * (ah - sat_surf), ah)
        ah = np.minimum(ah, abs_humidity(t_air, 100.0))
        if s >= rec and (s - rec) % sub == 0:
            k = (s - rec) // sub
            out_t[k] = t_air
            out_ah[k] = ah
            out_surf[k] = surf
            out_cond[k] = cond_now
            out_hvac[k] = hvac_on

    idx = rec + sub * np.arange(n_out)
    rh = np.clip(rel_humidity(out_t, out_ah), 0.0, 100.0)
    return Trace(
        site=site,
        times=grid[idx],
        t=out_t,
        ah=out_ah,
        rh=rh,
        surface_t=out_surf,
        condensing=out_cond,
        occupants=np.rint(occ[idx]).astype(int),
        heating=out_hvac,
        window=win_flow[idx] > 0,
        door=door_open[idx] > 0,
        t_out=t_out[idx],
        rh_out=np.clip(rel_humidity(t_out[idx], w_out[idx]), 0.0, 100.0),
    )
