""":class:`WorldSource`: the world simulator behind the virtual boards' DHT shim.

The world is simulated one calendar day (UTC) at a time, each day from a fixed state one day
before it, and cached; any board process with the same seed sees the same world. A device id
that names a sensor of the site (``kitchen-1``) reads that sensor's spot; any other id is placed
in a room chosen by a hash of the id, so the mapping is stable across runs.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np

from ..errors import UsageError
from .export import sensor_truth
from .faults import Fault, apply_fault
from .physics import Trace, simulate
from .sensors import SensorUnit, key64
from .site import Sensor, Site, make_site
from .source import DAY, Truth

__all__ = ["WorldSource"]

# Simulated days shared by every WorldSource of this process: (seed, rooms, site, step, day).
_CACHE: OrderedDict[tuple[int, int, str, float, int], Trace] = OrderedDict()
_CACHE_MAX = 8


class WorldSource:
    """A :class:`~humigraph.world.source.ValueSource` backed by the room physics.

    With ``measured`` (the default) :meth:`sample` returns what the sensor element measures: the
    air at its spot with the unit's bias, noise and any value fault (stuck, spike, drift, noise,
    condensation); the DHT shim only encodes it. :meth:`fault` tells the shim when a read should
    fail (``"timeout"`` or ``"checksum"``). ``start`` (default: now) is the origin of fault onsets.
    With ``speed`` X the world runs X times faster than the clock from ``start`` on: a time
    ``when`` asked for is world time ``start + (when - start) * X``. A device id ``SITE-DEV``
    (``site2-kitchen-1``) reads the site's sensor ``DEV``.
    """

    def __init__(
        self,
        seed: int = 0,
        rooms: int = 10,
        site: str = "home",
        faults: Iterable[Fault] = (),
        start: float | None = None,
        measured: bool = True,
        step: float = 10.0,
        sensor: str = "dht22",
        speed: float = 1.0,
    ) -> None:
        if not speed > 0:
            raise UsageError(f"speed must be positive, got {speed!r}")
        self.site: Site = make_site(seed, rooms, name=site)
        self.seed = seed
        self.faults = list(faults)
        self.start = time.time() if start is None else float(start)
        self.measured = measured
        self.step = step
        self.sensor_model = sensor
        self.speed = float(speed)
        self._sensors: dict[str, Sensor] = {}
        self._units: dict[str, SensorUnit] = {}

    # -- mapping ---------------------------------------------------------------------------
    def sensor_for(self, dev: str) -> Sensor:
        s = self._sensors.get(dev)
        if s is None:
            s = self.site.sensor(dev)
            prefix = f"{self.site.name}-"
            if s is None and dev.startswith(prefix):
                s = self.site.sensor(dev[len(prefix) :])
            if s is None:
                h = key64("place", self.seed, dev)
                room = h % self.site.n_rooms
                offset = ((h >> 20) % 1000 / 1000.0 - 0.5) * 0.8
                s = Sensor(dev=dev, room=room, offset_t=offset, model=self.sensor_model)
            self._sensors[dev] = s
        return s

    def room_of(self, dev: str) -> str:
        return self.site.rooms[self.sensor_for(dev).room].name

    def _unit(self, dev: str) -> SensorUnit:
        u = self._units.get(dev)
        if u is None:
            u = self._units[dev] = SensorUnit(self.seed, dev, self.sensor_for(dev).model)
        return u

    # -- physics ---------------------------------------------------------------------------
    def _day(self, day: int) -> Trace:
        key = (self.seed, self.site.n_rooms, self.site.name, self.step, day)
        tr = _CACHE.get(key)
        if tr is None:
            tr = simulate(self.site, day * DAY, DAY + self.step, step=self.step)
            _CACHE[key] = tr
            while len(_CACHE) > _CACHE_MAX:
                _CACHE.popitem(last=False)
        return tr

    def world_time(self, when: float) -> float:
        return self.start + (when - self.start) * self.speed

    def truth(self, dev: str, when: float) -> Truth:
        """The true air temperature and RH at the device's spot."""
        when = self.world_time(when)
        return self._truth(dev, when)

    def _truth(self, dev: str, when: float) -> Truth:
        s = self.sensor_for(dev)
        tr = self._day(int(math.floor(when / DAY)))
        t_room = float(np.interp(when, tr.times, tr.t[:, s.room]))
        ah_room = float(np.interp(when, tr.times, tr.ah[:, s.room]))
        t, rh = sensor_truth(
            self.site, s, np.array([when]), np.array([t_room]), np.array([ah_room])
        )
        return Truth(t=float(t[0]), rh=float(rh[0]))

    def _measured(self, dev: str, when: float) -> tuple[float, float]:
        tr = self._truth(dev, when)
        st, srh = self._unit(dev).sense(np.array([when]), np.array([tr.t]), np.array([tr.rh]))
        return float(st[0]), float(srh[0])

    def _apply(self, dev: str, when: float) -> tuple[float, float, str | None]:
        t, rh = self._measured(dev, when)
        ta, rha = np.array([t]), np.array([rh])
        err = np.full(1, None, dtype=object)
        rel = np.array([when - self.start])
        model = self._unit(dev).model
        for f in self.faults:
            if f.dev != dev:
                continue
            stuck = None
            if f.kind == "stuck":
                stuck = self._measured(dev, self.start + f.onset)
            apply_fault(f, model, rel, np.array([when]), ta, rha, err, stuck=stuck)
        return float(ta[0]), float(rha[0]), err[0]

    # -- the ValueSource protocol ----------------------------------------------------------
    def sample(self, dev: str, when: float) -> Truth:
        when = self.world_time(when)
        if not self.measured:
            return self._truth(dev, when)
        t, rh, _ = self._apply(dev, when)
        if math.isnan(t):  # a failed read: the shim asks fault(); give the measured value
            t, rh = self._measured(dev, when)
        return Truth(t=t, rh=min(100.0, max(0.0, rh)))

    def fault(self, dev: str, when: float) -> str | None:
        """``"timeout"`` or ``"checksum"`` when the read at ``when`` should fail, else None."""
        if not any(f.dev == dev and f.kind in ("dropout", "checksum") for f in self.faults):
            return None
        return self._apply(dev, self.world_time(when))[2]

    def label(self, dev: str, when: float) -> str:
        """The fault kind active on ``dev`` at ``when`` (``"ok"`` when none)."""
        rel = np.array([self.world_time(when) - self.start])
        for f in self.faults:
            if f.dev == dev and bool(f.active(rel)[0]):
                return f.kind
        return "ok"
