"""Where a virtual board's sensor readings come from.

A :class:`ValueSource` answers "what are the true air temperature and humidity at device ``dev``
at time ``when``?". The virtual board's DHT shim turns that truth into the raw bytes a DHT11 or
DHT22 would send. :class:`DailyCycleSource` is a small deterministic source; the full world
simulator implements the same protocol.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Protocol

__all__ = ["DailyCycleSource", "Truth", "ValueSource"]

DAY = 86400.0


@dataclass(frozen=True)
class Truth:
    """True air temperature (°C) and relative humidity (%) at a sensor."""

    t: float
    rh: float


class ValueSource(Protocol):
    def sample(self, dev: str, when: float) -> Truth:
        """The truth at device ``dev`` at unix time ``when`` (world time, seconds)."""
        ...


def _unit_floats(key: str, n: int) -> list[float]:
    """``n`` deterministic floats in [0, 1) derived from ``key``."""
    out: list[float] = []
    counter = 0
    while len(out) < n:
        digest = hashlib.sha256(f"{key}#{counter}".encode()).digest()
        for (word,) in struct.iter_unpack(">Q", digest):
            out.append(word / 2.0**64)
        counter += 1
    return out[:n]


def daily_shape(when: float) -> float:
    """-1 at 05:00 UTC, +1 at 15:00 UTC, smooth (zero slope at both extremes)."""
    hour = (when % DAY) / 3600.0
    if 5.0 <= hour <= 15.0:
        return -math.cos(math.pi * (hour - 5.0) / 10.0)
    since_max = (hour - 15.0) % 24.0  # 0..14 hours after the afternoon maximum
    return math.cos(math.pi * since_max / 14.0)


class DailyCycleSource:
    """Deterministic room climate: a daily cycle plus smooth per-device variation.

    Temperature follows a daily cycle with its minimum around 05:00 and its maximum around 15:00
    (UTC is taken as local time); each device gets a fixed offset and a smooth "noise" made of a
    few slow sines with device-specific phases, so the same ``(seed, dev, when)`` always gives the
    same value. Relative humidity moves against temperature and stays within 0..100 %.
    """

    _PERIODS = (17 * 60.0, 47 * 60.0, 2.3 * 3600.0)
    _T_AMPS = (0.05, 0.12, 0.2)
    _RH_AMPS = (0.2, 0.5, 0.8)

    def __init__(
        self,
        seed: int = 0,
        base_t: float = 21.0,
        amp_t: float = 2.0,
        base_rh: float = 45.0,
        amp_rh: float = 8.0,
    ) -> None:
        self.seed = seed
        self.base_t = base_t
        self.amp_t = amp_t
        self.base_rh = base_rh
        self.amp_rh = amp_rh
        self._devs: dict[str, list[float]] = {}

    def _params(self, dev: str) -> list[float]:
        p = self._devs.get(dev)
        if p is None:
            p = self._devs[dev] = _unit_floats(f"humigraph-daily:{self.seed}:{dev}", 8)
        return p

    def sample(self, dev: str, when: float) -> Truth:
        u = self._params(dev)
        off_t = (u[0] - 0.5) * 3.0  # ±1.5 °C between rooms
        off_rh = (u[1] - 0.5) * 10.0  # ±5 %RH
        shape = daily_shape(when + (u[2] - 0.5) * 3600.0)  # rooms lag by up to ±30 min
        noise_t = 0.0
        noise_rh = 0.0
        for i, period in enumerate(self._PERIODS):
            phase = 2.0 * math.pi * u[3 + i]
            s = math.sin(2.0 * math.pi * when / period + phase)
            noise_t += self._T_AMPS[i] * s
            noise_rh += self._RH_AMPS[i] * math.sin(2.0 * math.pi * when / period + phase + u[6])
        t = self.base_t + off_t + self.amp_t * shape + noise_t
        rh = self.base_rh + off_rh - self.amp_rh * shape + noise_rh
        return Truth(t=t, rh=min(100.0, max(0.0, rh)))
