"""Sensor faults with labels and onset times, and the ``--faults`` SPEC parser.

SPEC: comma-separated ``DEV:KIND@ONSET[+DURATION]``; times are seconds from the start of the run,
with an optional unit ``s``, ``m``, ``h`` or ``d`` (``kitchen-2:stuck@600,bath-1:drift@0``,
``hall-1:dropout@2h+30m``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .sensors import SensorModel, hash_normal, hash_uniform, key64
from .site import Site, rng_for

__all__ = [
    "FAULT_CLASS",
    "FAULT_KINDS",
    "Fault",
    "apply_fault",
    "check_devices",
    "parse_duration",
    "parse_faults",
    "random_faults",
]

# kind -> the reasoning model's fault class (ok, stuck, spike, drift, noise, dropout)
FAULT_CLASS = {
    "stuck": "stuck",
    "spike": "spike",
    "drift": "drift",
    "noise": "noise",
    "dropout": "dropout",
    "checksum": "dropout",
    "condensation": "stuck",
}
FAULT_KINDS = tuple(FAULT_CLASS)
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


@dataclass(frozen=True)
class Fault:
    dev: str
    kind: str
    onset: float  # seconds from the start of the run
    duration: float = math.inf

    def active(self, rel: np.ndarray) -> np.ndarray:
        return (rel >= self.onset) & (rel < self.onset + self.duration)

    def __str__(self) -> str:
        dur = "" if math.isinf(self.duration) else f"+{self.duration:g}"
        return f"{self.dev}:{self.kind}@{self.onset:g}{dur}"


def parse_duration(text: str, what: str) -> float:
    m = _DUR.match(text)
    if not m:
        raise UsageError(
            f"{what}: {text!r} is not a time; use seconds (600) or a number with s, m, h or d (10m)"
        )
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_faults(spec: str | None) -> list[Fault]:
    """Parse a fault SPEC; every error names the bad item and the expected form."""
    if spec is None or not spec.strip():
        return []
    out: list[Fault] = []
    for raw in spec.split(","):
        item = raw.strip()
        where = f"--faults item {item!r}"
        if not item:
            raise UsageError("--faults: empty item (two commas in a row, or a trailing comma?)")
        if ":" not in item:
            raise UsageError(f"{where}: expected DEV:KIND@SECONDS, e.g. kitchen-2:stuck@600")
        dev, rest = item.rsplit(":", 1)
        dev = dev.strip()
        if not dev:
            raise UsageError(f"{where}: the device name before ':' is empty")
        if "@" not in rest:
            raise UsageError(f"{where}: missing '@ONSET' after the fault kind, e.g. {dev}:{rest}@0")
        kind, when = rest.split("@", 1)
        kind = kind.strip().lower()
        if kind not in FAULT_CLASS:
            raise UsageError(
                f"{where}: unknown fault {kind!r}; use one of {', '.join(FAULT_KINDS)}"
            )
        if "+" in when:
            onset_s, dur_s = when.split("+", 1)
            duration = parse_duration(dur_s, f"{where} duration")
            if duration <= 0:
                raise UsageError(f"{where}: the duration must be positive")
        else:
            onset_s, duration = when, math.inf
        onset = parse_duration(onset_s, f"{where} onset")
        out.append(Fault(dev=dev, kind=kind, onset=onset, duration=duration))
    return out


def check_devices(faults: Iterable[Fault], devices: Iterable[str]) -> None:
    known = sorted(set(devices))
    for f in faults:
        if f.dev not in known:
            shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise UsageError(f"--faults item {str(f)!r}: no device {f.dev!r}; devices are {shown}")


def random_faults(site: Site, seed: int, rate: float, duration: float) -> list[Fault]:
    """A deterministic mix of faults on about ``rate`` of the site's sensors."""
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"--fault-rate must be between 0 and 1, got {rate}")
    rng = rng_for("faults", seed, site.name)
    out: list[Fault] = []
    for s in site.sensors:
        if rng.random() >= rate:
            continue
        kind = FAULT_KINDS[int(rng.integers(0, len(FAULT_KINDS)))]
        onset = float(np.round(rng.uniform(0.1, 0.8) * duration))
        dur = math.inf if rng.random() < 0.5 else float(np.round(rng.uniform(0.05, 0.3) * duration))
        out.append(Fault(dev=s.dev, kind=kind, onset=onset, duration=dur))
    return out


def apply_fault(
    fault: Fault,
    model: SensorModel,
    rel: np.ndarray,
    when: np.ndarray,
    t: np.ndarray,
    rh: np.ndarray,
    err: np.ndarray,
    stuck: tuple[float, float] | None = None,
) -> None:
    """Apply ``fault`` in place to reported values ``t``/``rh`` (NaN for a failed read) and the
    error codes ``err`` (object array, None when ok). ``rel`` is seconds since the run's start.

    Drift and noise act on the unquantised reading in the real sensor; here they are added to the
    reported value and re-rounded to the resolution, which is the same within a count.
    ``stuck`` gives the frozen value when the onset lies before ``rel[0]`` (live reads).
    """
    on = fault.active(rel)
    if not on.any():
        return
    key = key64("fault", fault.dev, fault.kind, fault.onset)
    since = np.where(on, rel - fault.onset, 0.0)
    res = model.t_res
    kind = fault.kind
    if kind == "stuck":
        if stuck is None:
            i = int(np.argmax(on))
            stuck = (float(t[i]), float(rh[i]))
        t[on], rh[on] = stuck
    elif kind == "spike":
        u = hash_uniform(key, when, 1)
        hit = on & (u < 0.04)
        sign = np.where(hash_uniform(key, when, 2) < 0.5, -1.0, 1.0)
        size = 0.5 + hash_uniform(key, when, 3)
        t[hit] = np.round(t[hit] + (sign * 10.0 * size)[hit], 1)
        rh[hit] = np.round(np.clip(rh[hit] + (sign * 30.0 * size)[hit], 0.0, 99.9), 1)
    elif kind == "drift":
        r = np.random.default_rng(key)
        rate_t = r.uniform(0.5, 1.5) * r.choice([-1.0, 1.0]) / 86400.0
        rate_rh = r.uniform(3.0, 8.0) * r.choice([-1.0, 1.0]) / 86400.0
        t[on] = np.round((t + rate_t * since)[on] / res) * res
        rh[on] = np.clip(
            np.round((rh + rate_rh * since)[on] / model.rh_res) * model.rh_res, 0, 99.9
        )
    elif kind == "noise":
        grow = np.minimum(since / (12 * 3600.0), 1.0)
        nt = grow * 1.5 * hash_normal(key, when, 1)
        nrh = grow * 5.0 * hash_normal(key, when, 2)
        t[on] = np.round((t + nt)[on] / res) * res
        rh[on] = np.clip(np.round((rh + nrh)[on] / model.rh_res) * model.rh_res, 0, 99.9)
    elif kind == "condensation":
        rh[on] = model.rh_max_reading
    elif kind in ("dropout", "checksum"):
        u = hash_uniform(key, when, 1)
        # dropouts come in bursts: fail when a slow hashed wave is high or at random
        wave = hash_uniform(key, np.floor(when / 300.0) * 300.0, 2)
        p = 0.9 if kind == "dropout" else 0.3
        fail = on & ((wave < 0.5) | (u < 0.15)) & (u < p)
        if kind == "checksum":
            fail = on & (u < p)
        t[fail] = np.nan
        rh[fail] = np.nan
        err[fail] = "timeout" if kind == "dropout" else "checksum"
    t[on] = np.round(t[on], 1)
