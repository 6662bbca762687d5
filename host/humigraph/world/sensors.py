"""DHT11 and DHT22/AM2302 sensor models: per-unit bias, noise, response lag, resolution.

Randomness that depends on time (noise, spikes, dropouts) comes from a counter-based hash of
``(key, time)``, so a reading at a given instant is the same whether a whole day is exported at
once or a virtual board asks for it live.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

__all__ = ["MODELS", "SensorModel", "SensorUnit", "hash_normal", "hash_uniform", "quantize"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def key64(*key: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big")


def hash_uniform(key: int, when: np.ndarray, stream: int = 0) -> np.ndarray:
    """Uniform [0, 1) numbers, one per time (resolution 1 ms), deterministic for ``key``."""
    ticks = np.round(np.asarray(when, dtype=float) * 1000.0).astype(np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = ticks * _GOLD + np.uint64((key + stream * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def hash_normal(key: int, when: np.ndarray, stream: int = 0) -> np.ndarray:
    """Standard normal numbers, one per time (Box-Muller on two hashed uniforms)."""
    u1 = hash_uniform(key, when, 2 * stream + 1)
    u2 = hash_uniform(key, when, 2 * stream + 2)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


@dataclass(frozen=True)
class SensorModel:
    name: str
    t_res: float  # °C per count
    rh_res: float  # % per count
    t_range: tuple[float, float]
    rh_range: tuple[float, float]
    bias_t: float  # sd of the per-unit temperature bias, °C
    bias_rh: tuple[float, float]  # per-unit |RH bias| range, %
    noise_t: float  # sd, °C
    noise_rh: float  # sd, %
    tau_t: float  # s, first-order response time of the temperature reading
    tau_rh: float  # s
    min_interval: float  # s between conversions; faster reads return the previous one
    rh_max_reading: float  # what a saturated (condensed) element reports


MODELS = {
    "dht22": SensorModel(
        name="dht22",
        t_res=0.1,
        rh_res=0.1,
        t_range=(-40.0, 80.0),
        rh_range=(0.0, 99.9),
        bias_t=0.25,
        bias_rh=(2.0, 5.0),
        noise_t=0.03,
        noise_rh=0.08,
        tau_t=12.0,
        tau_rh=6.0,
        min_interval=2.0,
        rh_max_reading=99.9,
    ),
    "dht11": SensorModel(
        name="dht11",
        t_res=1.0,
        rh_res=1.0,
        t_range=(0.0, 50.0),
        rh_range=(5.0, 95.0),
        bias_t=1.0,
        bias_rh=(1.0, 5.0),
        noise_t=0.08,
        noise_rh=0.5,
        tau_t=15.0,
        tau_rh=10.0,
        min_interval=1.0,
        rh_max_reading=95.0,
    ),
}


def quantize(x: np.ndarray, res: float, lo: float, hi: float) -> np.ndarray:
    """What the sensor reports: clipped to its range and rounded to its resolution (NaN kept)."""
    q = np.round(np.clip(x, lo, hi) / res) * res
    return np.round(q, 1)


class SensorUnit:
    """One physical sensor: a model plus this unit's bias, drawn from ``(seed, dev)``.

    ``decimal`` selects the DHT11 variant whose decimal byte carries tenths of a degree.
    """

    def __init__(self, seed: int, dev: str, model: str = "dht22", decimal: bool | None = None):
        m = MODELS.get(model)
        if m is None:
            raise UsageError(f"unknown sensor model {model!r}: use dht11 or dht22")
        self.model = m
        self.dev = dev
        self.key = key64("sensor", seed, dev)
        rng = np.random.default_rng(self.key)
        self.bias_t = float(np.clip(rng.normal(0.0, m.bias_t), -2 * m.bias_t, 2 * m.bias_t))
        lo, hi = m.bias_rh
        self.bias_rh = float(rng.uniform(lo, hi) * rng.choice([-1.0, 1.0]))
        if m.name == "dht22":
            # DHT22 units cluster closer to spec: spread of about ±2-5 %RH, ±0.5 °C
            self.bias_rh *= 0.7
        self.decimal = bool(rng.random() < 0.5) if decimal is None else decimal
        self.t_res = 0.1 if (m.name == "dht11" and self.decimal) else m.t_res

    def sense(
        self, when: np.ndarray, t: np.ndarray, rh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The element's unquantised reading: bias and noise on the (lagged) air values."""
        m = self.model
        st = t + self.bias_t + m.noise_t * hash_normal(self.key, when, 1)
        srh = rh + self.bias_rh + m.noise_rh * hash_normal(self.key, when, 2)
        return st, srh

    def lag(self, when: np.ndarray, t: np.ndarray, rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First-order response of the element to the air at the sensor."""
        m = self.model
        n = len(when)
        if n < 2:
            return t.copy(), rh.copy()
        dts = np.diff(when)
        a_t = 1.0 - np.exp(-dts / m.tau_t)
        a_rh = 1.0 - np.exp(-dts / m.tau_rh)
        out_t = np.empty(n)
        out_rh = np.empty(n)
        yt, yr = float(t[0]), float(rh[0])
        out_t[0], out_rh[0] = yt, yr
        for i in range(1, n):
            yt += a_t[i - 1] * (t[i] - yt)
            yr += a_rh[i - 1] * (rh[i] - yr)
            out_t[i], out_rh[i] = yt, yr
        return out_t, out_rh

    def report(self, t: np.ndarray, rh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        return (
            quantize(t, self.t_res, *m.t_range),
            quantize(rh, m.rh_res, *m.rh_range),
        )

    def read_series(
        self, when: np.ndarray, t: np.ndarray, rh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reported values for reads at ``when`` of air at ``(t, rh)``: lag, bias, noise,
        resolution; a read sooner than the minimum interval returns the previous conversion."""
        lt, lrh = self.lag(when, t, rh)
        st, srh = self.sense(when, lt, lrh)
        qt, qrh = self.report(st, srh)
        if len(when) > 1 and float(np.min(np.diff(when))) < self.model.min_interval:
            last = -math.inf
            keep = 0
            for i, w in enumerate(when):
                if w - last >= self.model.min_interval:
                    last, keep = float(w), i
                else:
                    qt[i], qrh[i] = qt[keep], qrh[keep]
        return qt, qrh
