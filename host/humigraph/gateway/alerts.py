"""Graded alerts (info / warning / critical) from plain rules and, when a model runs, its verdicts.

Every rule looks at one device and returns a :class:`Verdict`: whether the raise condition holds
(and at which level), whether the clear condition holds, a plain sentence and the numbers behind
it. The raise and clear thresholds differ (hysteresis), and an active alert clears only after
``min_hold_s``, so an alert fires once and clears once. :class:`AlertEngine` keeps the active
alerts (restored from the store after a restart, so nothing is raised twice) and turns verdicts
into ``raised`` / ``cleared`` events.

Rule-based alerts need no model: condensation, mould, stuck, out_of_range, failed_reads, spike and
offline work on readings, status and meta alone. ``fault`` (the model's verdict held for
``fault_steps`` inferences) and ``forecast_limit`` need the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from ..errors import UsageError

LEVELS = ("info", "warning", "critical")
KINDS = (
    "condensation",
    "mould",
    "stuck",
    "out_of_range",
    "failed_reads",
    "spike",
    "offline",
    "fault",
    "forecast_limit",
)

# Magnus formula coefficients over water (Sonntag 1990), good to 0.35 °C from -45 to 60 °C.
MAGNUS_A = 17.62
MAGNUS_B = 243.12


def dew_point(t: float, rh: float) -> float:
    """Dew point in °C of air at ``t`` °C and ``rh`` %RH (Magnus formula)."""
    if not rh > 0:
        raise ValueError(f"dew point needs a relative humidity above 0 %, got {rh!r}")
    gamma = math.log(min(rh, 100.0) / 100.0) + MAGNUS_A * t / (MAGNUS_B + t)
    return MAGNUS_B * gamma / (MAGNUS_A - gamma)


@dataclass
class AlertConfig:
    """Thresholds; ``[alerts]`` in the gateway's TOML overrides any of them (same names)."""

    min_hold_s: float = 60.0  # an active alert stays at least this long before it can clear
    # condensation: surface temperature minus the air's dew point
    condensation_margin_c: float = 1.0  # raise (warning) at or below; critical at or below 0
    condensation_clear_margin_c: float = 2.0  # clear at or above
    surface_t: float | None = None  # °C of the coldest surface; None: the coldest other device
    # mould: RH at or above rh_high for rh_duration_s
    rh_high: float = 70.0
    rh_clear: float = 65.0
    rh_duration_s: float = 3600.0
    # stuck: this many successful readings in a row with identical t and rh
    stuck_readings: int = 60
    # out of range: plausible values for an indoor sensor
    t_min: float = -30.0
    t_max: float = 60.0
    rh_min: float = 1.0
    rh_max: float = 99.9
    # failed reads: fraction of the last failed_window readings that failed
    failed_window: int = 20
    failed_fraction: float = 0.3
    failed_clear_fraction: float = 0.1
    # spike: a jump between consecutive readings (at most spike_max_gap_s apart)
    spike_t: float = 5.0
    spike_rh: float = 20.0
    spike_window: int = 6
    spike_max_gap_s: float = 120.0
    # offline: LWT 'offline', or silence past 3 x the interval from meta + 5 s (as the board's HA
    # discovery expire_after); default_interval_s when meta has none
    default_interval_s: float = 60.0
    # the model's fault verdict: non-ok with probability >= fault_min_p for fault_steps inferences
    # in a row (and ok for as many to clear); 0 turns the model's fault alerts off
    fault_min_p: float = 0.6
    fault_steps: int = 3
    # forecast crossing a limit within forecast_horizon_s; None turns a limit off
    forecast_horizon_s: float = 1800.0
    forecast_t_max: float | None = 30.0
    forecast_t_min: float | None = None
    forecast_rh_max: float | None = 75.0
    forecast_rh_min: float | None = None
    forecast_clear_t: float = 0.5  # the forecast must come back this far inside the limit
    forecast_clear_rh: float = 2.0
    # kinds to leave out entirely, e.g. ["spike"]
    disabled: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None, where: str = "alerts") -> AlertConfig:
        """Validates ``d`` (e.g. the TOML ``[alerts]`` table); errors name the key and the fix."""
        d = dict(d or {})
        known = {f.name: f for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in d.items():
            f = known.get(key)
            if f is None:
                raise UsageError(
                    f"{where}.{key}: unknown key; known keys: {', '.join(sorted(known))}"
                )
            optional = "None" in str(f.type)
            if key == "disabled":
                if not isinstance(value, (list, tuple)) or any(k not in KINDS for k in value):
                    raise UsageError(
                        f"{where}.disabled: expected a list of alert kinds from {list(KINDS)}, "
                        f"got {value!r}"
                    )
                kw[key] = tuple(value)
                continue
            if value is None and optional:
                kw[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(
                    f"{where}.{key}: expected a number{' or none' if optional else ''}, "
                    f"got {value!r}"
                )
            if not math.isfinite(value):
                raise UsageError(f"{where}.{key}: expected a finite number, got {value!r}")
            if str(f.type) == "int":
                if int(value) != value or value < 0:
                    raise UsageError(f"{where}.{key}: expected a whole number >= 0, got {value!r}")
                value = int(value)
            kw[key] = value
        cfg = cls(**kw)
        cfg._check(where)
        return cfg

    def _check(self, where: str) -> None:
        def need(ok: bool, keys: str, what: str) -> None:
            if not ok:
                raise UsageError(f"{where}.{keys}: {what}")

        need(self.min_hold_s >= 0, "min_hold_s", "must be >= 0 seconds")
        need(
            self.condensation_clear_margin_c > self.condensation_margin_c,
            "condensation_clear_margin_c",
            "must be above condensation_margin_c (hysteresis)",
        )
        need(self.rh_clear < self.rh_high, "rh_clear", "must be below rh_high (hysteresis)")
        need(self.rh_duration_s >= 0, "rh_duration_s", "must be >= 0 seconds")
        need(self.stuck_readings >= 2, "stuck_readings", "must be at least 2")
        need(self.t_min < self.t_max, "t_min", "must be below t_max")
        need(self.rh_min < self.rh_max, "rh_min", "must be below rh_max")
        need(self.failed_window >= 2, "failed_window", "must be at least 2")
        need(0 < self.failed_fraction <= 1, "failed_fraction", "must be a fraction in (0, 1]")
        need(
            0 <= self.failed_clear_fraction < self.failed_fraction,
            "failed_clear_fraction",
            "must be >= 0 and below failed_fraction (hysteresis)",
        )
        need(self.spike_t > 0 and self.spike_rh > 0, "spike_t", "spike_t, spike_rh must be > 0")
        need(self.spike_window >= 2, "spike_window", "must be at least 2")
        need(self.default_interval_s > 0, "default_interval_s", "must be > 0 seconds")
        need(0 < self.fault_min_p <= 1, "fault_min_p", "must be a probability in (0, 1]")
        need(self.forecast_horizon_s > 0, "forecast_horizon_s", "must be > 0 seconds")

    @property
    def readings_needed(self) -> int:
        """How many of each device's latest readings the rules look at."""
        return max(self.stuck_readings, self.failed_window, self.spike_window) + 1


@dataclass(frozen=True)
class Sample:
    """One stored reading, as the rules see it."""

    ts: float  # placed time (UTC seconds)
    t: float | None
    rh: float | None
    ok: bool
    err: str | None = None
    received: float | None = None


@dataclass
class DeviceView:
    """What the rules know about one device at one evaluation."""

    dev: str
    site: str
    readings: Sequence[Sample] = ()  # the latest ones, oldest first
    status: str | None = None  # 'online' | 'offline' | None (never heard)
    interval_s: float | None = None  # from the board's meta
    last_received: float | None = None  # when the gateway last received one of its readings
    fault: tuple[str, float] | None = None  # the model's verdict, only on an inference step
    forecast: Sequence[tuple[float, float, float]] | None = None  # (horizon_s, t, rh)

    @cached_property
    def good(self) -> list[Sample]:
        # cached: the condensation rule asks every other device of the site for its latest
        return [s for s in self.readings if s.ok and s.t is not None and s.rh is not None]


@dataclass
class Verdict:
    raise_level: str | None  # the raise condition holds, at this level
    clear: bool  # the clear condition holds
    message: str
    values: dict[str, Any]


@dataclass
class Alert:
    id: str
    site: str
    dev: str
    kind: str
    level: str
    message: str
    since: float
    values: dict[str, Any]
    cleared: float | None = None

    @property
    def active(self) -> bool:
        return self.cleared is None

    def event(self, state: str, ts: float, message: str, values: dict[str, Any]) -> dict[str, Any]:
        """The payload published on ``<prefix>/<site>/alerts``."""
        return {
            "v": 1,
            "id": self.id,
            "state": state,
            "level": self.level,
            "kind": self.kind,
            "dev": self.dev,
            "site": self.site,
            "message": message,
            "ts": round(ts, 3),
            "values": values,
        }


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


# -- rules (each: device view, its site, config, per-device state -> Verdict | None) ------------


def _latest(view: DeviceView) -> Sample | None:
    good = view.good
    return good[-1] if good else None


def coldest_two(site: Sequence[DeviceView]) -> list[tuple[float, str]]:
    """The two coldest latest good temperatures of the site, ``[(t, dev)]``, coldest first: the
    coldest *other* device of any device is among them (one pass, not one per device)."""
    temps = []
    for o in site:
        x = _latest(o)
        if x is not None and x.t is not None:
            temps.append((x.t, o.dev))
    return sorted(temps)[:2]


def rule_condensation(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    s = _latest(view)
    if s is None or s.t is None or s.rh is None or s.rh <= 0:
        return None
    if cfg.surface_t is not None:
        surface, source = float(cfg.surface_t), "configured surface temperature"
    else:
        two = state.get("coldest")  # set once per site by AlertEngine.evaluate
        if two is None:
            two = coldest_two(site)
        temps = [(t, d) for t, d in two if d != view.dev]
        if not temps:
            return None
        surface, coldest = temps[0]
        source = f"coldest neighbour {coldest}"
    dp = dew_point(s.t, s.rh)
    margin = surface - dp
    values = {
        "t": _r(s.t),
        "rh": _r(s.rh),
        "dew_point": _r(dp),
        "surface_t": _r(surface),
        "surface": source,
        "margin": _r(margin),
    }
    level = None
    if margin <= 0:
        level = "critical"
    elif margin <= cfg.condensation_margin_c:
        level = "warning"
    if margin <= 0:
        msg = (
            f"Condensation: the dew point at {view.dev} ({dp:.1f} °C, from {s.t:.1f} °C and "
            f"{s.rh:.0f} %RH) is at or above the {source} ({surface:.1f} °C)"
        )
    else:
        msg = (
            f"Condensation risk: the dew point at {view.dev} ({dp:.1f} °C, from {s.t:.1f} °C and "
            f"{s.rh:.0f} %RH) is {margin:.1f} °C below the {source} ({surface:.1f} °C)"
        )
    return Verdict(level, margin >= cfg.condensation_clear_margin_c, msg, values)


def rule_mould(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    good = view.good
    if not good:
        return None
    # RH above the threshold since when: carried across evaluations over each new reading
    seen = state.get("mould_seen", -math.inf)
    for s in good:
        if s.ts <= seen:
            continue
        assert s.rh is not None
        if s.rh >= cfg.rh_high:
            state.setdefault("rh_above_since", s.ts)
        else:
            state.pop("rh_above_since", None)
    state["mould_seen"] = good[-1].ts
    s = good[-1]
    assert s.rh is not None
    since = state.get("rh_above_since")
    held = s.ts - since if since is not None else 0.0
    values = {
        "rh": _r(s.rh),
        "rh_high": cfg.rh_high,
        "above_for_s": round(held),
        "duration_s": cfg.rh_duration_s,
    }
    raised = since is not None and held >= cfg.rh_duration_s
    if s.rh >= cfg.rh_high:
        msg = (
            f"Mould risk: humidity at {view.dev} has been at or above {cfg.rh_high:.0f} % for "
            f"{held / 60:.0f} min (now {s.rh:.0f} %)"
        )
    else:
        msg = f"Humidity at {view.dev} is {s.rh:.0f} % (threshold {cfg.rh_high:.0f} %)"
    return Verdict("warning" if raised else None, s.rh <= cfg.rh_clear, msg, values)


def rule_stuck(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    good = view.good
    if not good:
        return None
    last = good[-1]
    run = 0
    for s in reversed(good):
        if (s.t, s.rh) != (last.t, last.rh):
            break
        run += 1
    values = {"t": last.t, "rh": last.rh, "identical": run, "limit": cfg.stuck_readings}
    if run >= cfg.stuck_readings:
        msg = (
            f"Sensor stuck: {view.dev} reported exactly {last.t} °C and {last.rh} %RH "
            f"{run} times in a row (limit {cfg.stuck_readings})"
        )
        return Verdict("warning", False, msg, values)
    if run == len(good):
        return None  # fewer identical readings than the limit, and nothing else: undecided
    msg = f"{view.dev} readings change again ({last.t} °C, {last.rh} %RH)"
    return Verdict(None, True, msg, values)


def rule_out_of_range(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    good = view.good
    if not good:
        return None

    def inside(s: Sample) -> bool:
        assert s.t is not None and s.rh is not None
        return cfg.t_min <= s.t <= cfg.t_max and cfg.rh_min <= s.rh <= cfg.rh_max

    last = good[-1]
    values = {
        "t": last.t,
        "rh": last.rh,
        "t_range": [cfg.t_min, cfg.t_max],
        "rh_range": [cfg.rh_min, cfg.rh_max],
    }
    if not inside(last):
        msg = (
            f"Implausible reading: {view.dev} reported {last.t} °C and {last.rh} %RH (plausible: "
            f"{cfg.t_min:g}..{cfg.t_max:g} °C, {cfg.rh_min:g}..{cfg.rh_max:g} %RH)"
        )
        return Verdict("warning", False, msg, values)
    recent = good[-3:]
    msg = f"{view.dev} readings are plausible again ({last.t} °C, {last.rh} %RH)"
    return Verdict(None, all(inside(s) for s in recent), msg, values)


def rule_failed_reads(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    window = list(view.readings)[-cfg.failed_window :]
    if len(window) < max(2, cfg.failed_window // 2):
        return None
    failed = [s for s in window if not s.ok]
    frac = len(failed) / len(window)
    errors: dict[str, int] = {}
    for s in failed:
        errors[s.err or "unknown"] = errors.get(s.err or "unknown", 0) + 1
    values = {
        "failed": len(failed),
        "readings": len(window),
        "fraction": _r(frac, 3),
        "errors": errors,
    }
    level = None
    if frac >= cfg.failed_fraction:
        level = "critical" if frac >= 1.0 else "warning"
    detail = ", ".join(f"{n} {e}" for e, n in sorted(errors.items()))
    msg = f"Failed reads: {len(failed)} of the last {len(window)} reads of {view.dev} failed" + (
        f" ({detail})" if detail else ""
    )
    return Verdict(level, frac <= cfg.failed_clear_fraction, msg, values)


def rule_spike(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    good = view.good[-cfg.spike_window :]
    if len(good) < 2:
        return None
    worst: tuple[float, str, Sample, Sample] | None = None
    for a, b in zip(good, good[1:], strict=False):
        if b.ts - a.ts > cfg.spike_max_gap_s:
            continue  # a jump across a silence is not a spike
        assert a.t is not None and b.t is not None and a.rh is not None and b.rh is not None
        for what, jump, limit in (("t", b.t - a.t, cfg.spike_t), ("rh", b.rh - a.rh, cfg.spike_rh)):
            excess = abs(jump) / limit
            if excess > 1 and (worst is None or excess > worst[0]):
                worst = (excess, what, a, b)
    if worst is None:
        msg = f"No jumps above {cfg.spike_t:g} °C or {cfg.spike_rh:g} %RH at {view.dev}"
        return Verdict(None, True, msg, {"spike_t": cfg.spike_t, "spike_rh": cfg.spike_rh})
    _, what, a, b = worst
    unit = "°C" if what == "t" else "%RH"
    va, vb = (a.t, b.t) if what == "t" else (a.rh, b.rh)
    assert va is not None and vb is not None
    limit = cfg.spike_t if what == "t" else cfg.spike_rh
    msg = (
        f"Spike: {view.dev} jumped from {va} to {vb} {unit} in {b.ts - a.ts:.0f} s "
        f"(limit {limit:g} {unit})"
    )
    values = {"what": what, "from": va, "to": vb, "jump": _r(vb - va), "limit": limit, "at": b.ts}
    return Verdict("info", False, msg, values)


def rule_offline(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    now = state["now"]
    interval = view.interval_s if view.interval_s else cfg.default_interval_s
    expire = 3 * interval + 5
    silence = None if view.last_received is None else now - view.last_received
    values: dict[str, Any] = {
        "status": view.status,
        "silence_s": None if silence is None else round(silence, 1),
        "expire_after_s": expire,
    }
    if view.status == "offline":
        msg = f"Offline: {view.dev} disconnected (its last will said offline)"
        return Verdict("warning", False, msg, values)
    if silence is None:
        return None
    if silence > expire:
        msg = (
            f"Offline: nothing from {view.dev} for {silence:.0f} s "
            f"(expected a reading every {interval:g} s)"
        )
        return Verdict("warning", False, msg, values)
    return Verdict(None, True, f"{view.dev} is reporting again", values)


def rule_fault(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    if view.fault is None or cfg.fault_steps <= 0:
        return None  # only inference steps count
    cls, p = view.fault
    faulty = cls != "ok" and p >= cfg.fault_min_p
    if faulty:
        state["fault_run"] = state.get("fault_run", 0) + 1
        state["ok_run"] = 0
    elif cls == "ok":
        state["ok_run"] = state.get("ok_run", 0) + 1
        state["fault_run"] = 0
    else:  # a fault class below the probability floor: neither raises nor clears
        state["fault_run"] = state["ok_run"] = 0
    values = {"fault": cls, "p": _r(p, 3), "steps": state.get("fault_run", 0)}
    if faulty:
        msg = (
            f"Sensor fault: the model classes {view.dev} as '{cls}' (p = {p:.2f}) for "
            f"{state['fault_run']} steps in a row"
        )
    else:
        msg = f"The model classes {view.dev} as '{cls}' (p = {p:.2f})"
    level = "warning" if state.get("fault_run", 0) >= cfg.fault_steps else None
    return Verdict(level, state.get("ok_run", 0) >= cfg.fault_steps, msg, values)


def rule_forecast_limit(
    view: DeviceView, site: Sequence[DeviceView], cfg: AlertConfig, state: dict[str, Any]
) -> Verdict | None:
    if view.forecast is None:
        return None
    fc = [f for f in view.forecast if f[0] <= cfg.forecast_horizon_s]
    if not fc:
        return None
    limits = (
        ("t", "above", cfg.forecast_t_max, cfg.forecast_clear_t, "°C"),
        ("t", "below", cfg.forecast_t_min, cfg.forecast_clear_t, "°C"),
        ("rh", "above", cfg.forecast_rh_max, cfg.forecast_clear_rh, "%RH"),
        ("rh", "below", cfg.forecast_rh_min, cfg.forecast_clear_rh, "%RH"),
    )
    crossing: list[str] = []
    values: dict[str, Any] = {
        "forecast": [{"h": h, "t": _r(t), "rh": _r(rh)} for h, t, rh in fc],
    }
    clear = True
    for what, side, limit, margin, unit in limits:
        if limit is None:
            continue
        values[f"{what}_{'max' if side == 'above' else 'min'}"] = limit
        for h, t, rh in fc:
            v = t if what == "t" else rh
            beyond = v > limit if side == "above" else v < limit
            if beyond:
                crossing.append(f"{what} {v:.1f} {unit} in {h / 60:g} min ({side} {limit:g})")
                break
        for _, t, rh in fc:
            v = t if what == "t" else rh
            if (v > limit - margin) if side == "above" else (v < limit + margin):
                clear = False
    if crossing:
        msg = f"Forecast for {view.dev}: " + "; ".join(crossing)
        return Verdict("info", False, msg, values)
    return Verdict(None, clear, f"Forecast for {view.dev} stays within the limits", values)


RULES = {
    "condensation": rule_condensation,
    "mould": rule_mould,
    "stuck": rule_stuck,
    "out_of_range": rule_out_of_range,
    "failed_reads": rule_failed_reads,
    "spike": rule_spike,
    "offline": rule_offline,
    "fault": rule_fault,
    "forecast_limit": rule_forecast_limit,
}


@dataclass
class AlertEngine:
    """Active alerts and the per-device rule state; :meth:`evaluate` returns the new events."""

    cfg: AlertConfig = field(default_factory=AlertConfig)
    active: dict[tuple[str, str], Alert] = field(default_factory=dict)  # (dev, kind) -> alert
    _state: dict[str, dict[str, Any]] = field(default_factory=dict)  # dev -> rule state

    def restore(self, alerts: Iterable[Alert]) -> None:
        """Active alerts from the store (after a restart): they are not raised a second time."""
        for a in alerts:
            if a.active:
                self.active[(a.dev, a.kind)] = a

    def evaluate(
        self, views: Sequence[DeviceView], now: float
    ) -> list[tuple[Alert, dict[str, Any]]]:
        """``views``: every device of one site. Returns ``[(alert, event payload)]``."""
        out: list[tuple[Alert, dict[str, Any]]] = []
        coldest = coldest_two(views)
        for view in views:
            state = self._state.setdefault(view.dev, {})
            state["now"] = now
            state["coldest"] = coldest
            for kind, rule in RULES.items():
                if kind in self.cfg.disabled:
                    continue
                verdict = rule(view, views, self.cfg, state)
                if verdict is None:
                    continue
                ev = self._apply(view, kind, verdict, now)
                if ev is not None:
                    out.append(ev)
        return out

    def _apply(
        self, view: DeviceView, kind: str, v: Verdict, now: float
    ) -> tuple[Alert, dict[str, Any]] | None:
        key = (view.dev, kind)
        current = self.active.get(key)
        if current is None:
            if v.raise_level is None:
                return None
            a = Alert(
                id=f"{view.dev}:{kind}:{int(now * 1000)}",
                site=view.site,
                dev=view.dev,
                kind=kind,
                level=v.raise_level,
                message=v.message,
                since=now,
                values=v.values,
            )
            self.active[key] = a
            return a, a.event("raised", now, v.message, v.values)
        if v.clear and v.raise_level is None and now - current.since >= self.cfg.min_hold_s:
            del self.active[key]
            current.cleared = now
            return current, current.event("cleared", now, "Cleared: " + v.message, v.values)
        return None

    def active_for(self, dev: str) -> list[Alert]:
        return [a for (d, _), a in self.active.items() if d == dev]
