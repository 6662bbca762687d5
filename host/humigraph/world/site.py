"""A site: rooms (zones) on a floor grid, walls between them and to the outside, doors, sensors.

The coupling between rooms (walls, doors, the outside) is the ground-truth graph the reasoning
model has to rediscover; :meth:`Site.graph` returns it in the JSON form written beside exports.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["Door", "Room", "Sensor", "Site", "Wall", "make_site", "rng_for"]

# Room kinds in the order rooms are added to a site; names get a number when a kind repeats.
_KINDS = (
    "hall",
    "living",
    "kitchen",
    "bath",
    "bed",
    "office",
    "bed",
    "dining",
    "bath",
    "bed",
    "storage",
    "office",
)
# (floor area range m², sensors in the room)
_AREA = {
    "hall": (8.0, 12.0),
    "living": (24.0, 34.0),
    "kitchen": (10.0, 15.0),
    "bath": (5.0, 8.0),
    "bed": (12.0, 17.0),
    "office": (10.0, 14.0),
    "dining": (12.0, 18.0),
    "storage": (4.0, 7.0),
}
HEIGHT = 2.5  # m
RHO_C = 1200.0  # J/(m³K), volumetric heat capacity of air
MAX_ROOMS = 64
# share of the day a door of each habit stands open (physics.events_for; measured over 29 sites
# and 20 days each: 0.61 and 0.043), so the true coupling weighs a door by its use
DOOR_OPEN_SHARE = {"open": 0.6, "closed": 0.04}


def rng_for(*key: Any) -> np.random.Generator:
    """A numpy generator seeded from ``key`` (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class Room:
    name: str
    kind: str
    area: float  # m²
    volume: float  # m³
    row: int
    col: int
    exterior_sides: int  # walls to the outside (0..4)
    ua_out: float  # W/K through exterior walls and windows
    infiltration: float  # m³/s of outdoor air with closed windows
    setpoint_day: float  # °C
    setpoint_night: float  # °C
    heater_w: float  # W at full power


@dataclass(frozen=True)
class Wall:
    a: int
    b: int
    ua: float  # W/K through the wall
    leak: float  # m³/s of air through gaps (door closed)


@dataclass(frozen=True)
class Door:
    a: int
    b: int
    airflow: float  # m³/s exchanged while open
    habit: str  # "open" (mostly open by day) or "closed" (opened now and then)


@dataclass(frozen=True)
class Sensor:
    dev: str
    room: int
    offset_t: float  # °C, static air temperature difference at the sensor's spot
    model: str  # "dht22" or "dht11"


@dataclass
class Site:
    name: str
    seed: int
    rooms: list[Room]
    walls: list[Wall]
    doors: list[Door]
    sensors: list[Sensor]
    t_out_mean: float  # °C, mean outdoor temperature (season)
    hvac: str  # "heat", "cool" or "off"
    occupants: int
    _by_dev: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_dev = {s.dev: i for i, s in enumerate(self.sensors)}

    @property
    def n_rooms(self) -> int:
        return len(self.rooms)

    def sensor(self, dev: str) -> Sensor | None:
        i = self._by_dev.get(dev)
        return None if i is None else self.sensors[i]

    def graph(self) -> dict[str, Any]:
        """The ground-truth coupling graph (rooms, sensors, walls, doors, outside) as JSON data."""
        return {
            "site": self.name,
            "seed": self.seed,
            "hvac": self.hvac,
            "t_out_mean": round(self.t_out_mean, 2),
            "occupants": self.occupants,
            "rooms": [
                {
                    "id": i,
                    "name": r.name,
                    "kind": r.kind,
                    "area_m2": round(r.area, 2),
                    "volume_m3": round(r.volume, 2),
                    "exterior_sides": r.exterior_sides,
                    "ua_out_w_per_k": round(r.ua_out, 2),
                    "infiltration_m3_s": round(r.infiltration, 5),
                }
                for i, r in enumerate(self.rooms)
            ],
            "sensors": [
                {"dev": s.dev, "room": self.rooms[s.room].name, "model": s.model}
                for s in self.sensors
            ],
            "edges": [
                {
                    "a": self.rooms[w.a].name,
                    "b": self.rooms[w.b].name,
                    "kind": "wall",
                    "ua_w_per_k": round(w.ua, 2),
                    "leak_m3_s": w.leak,
                }
                for w in self.walls
            ]
            + [
                {
                    "a": self.rooms[d.a].name,
                    "b": self.rooms[d.b].name,
                    "kind": "door",
                    "airflow_m3_s": d.airflow,
                    "habit": d.habit,
                }
                for d in self.doors
            ]
            + [
                {
                    "a": r.name,
                    "b": "outside",
                    "kind": "exterior",
                    "ua_w_per_k": round(r.ua_out, 2),
                    "infiltration_m3_s": round(r.infiltration, 5),
                }
                for r in self.rooms
                if r.exterior_sides > 0
            ],
            # Sensor-level adjacency (what the model sees): 1 for sensors in one room, the
            # normalised room coupling (W/K, each door open its habit's share of the day)
            # between rooms.
            "sensor_adjacency": self.sensor_adjacency().round(4).tolist(),
        }

    def sensor_adjacency(self) -> np.ndarray:
        n = self.n_rooms
        k = np.zeros((n, n))
        for w in self.walls:
            k[w.a, w.b] += w.ua + RHO_C * w.leak
        for d in self.doors:
            k[d.a, d.b] += DOOR_OPEN_SHARE[d.habit] * RHO_C * d.airflow
        k = k + k.T
        top = k.max() if k.size and k.max() > 0 else 1.0
        room_adj = k / top
        np.fill_diagonal(room_adj, 1.0)
        idx = np.array([s.room for s in self.sensors], dtype=int)
        return room_adj[np.ix_(idx, idx)]


def make_site(
    seed: int,
    n_rooms: int = 10,
    name: str = "home",
    dht11_share: float = 0.2,
    sensors_per_room: int | None = None,
) -> Site:
    """A deterministic site for ``seed``: ``n_rooms`` rooms on a grid, with sensors named
    ``<room>-<k>`` (``kitchen-1``, ``bath-1``, ...)."""
    if not 1 <= n_rooms <= MAX_ROOMS:
        raise UsageError(f"rooms must be between 1 and {MAX_ROOMS}, got {n_rooms}")
    if sensors_per_room is not None and not 1 <= sensors_per_room <= 8:
        raise UsageError(f"sensors per room must be between 1 and 8, got {sensors_per_room}")
    rng = rng_for("site", seed, name, n_rooms)
    cols = max(1, math.ceil(math.sqrt(n_rooms)))
    t_out_mean = float(rng.uniform(-3.0, 24.0))
    hvac = "heat" if t_out_mean < 15.0 else ("cool" if t_out_mean > 20.0 else "off")

    counts: dict[str, int] = {}
    kinds: list[str] = []
    names: list[str] = []
    for i in range(n_rooms):
        kind = _KINDS[i % len(_KINDS)]
        counts[kind] = counts.get(kind, 0) + 1
        kinds.append(kind)
        names.append(kind if counts[kind] == 1 else f"{kind}{counts[kind]}")

    pos = [(i // cols, i % cols) for i in range(n_rooms)]
    occupied = set(pos)
    rooms: list[Room] = []
    for i, kind in enumerate(kinds):
        r, c = pos[i]
        neighbours = sum(
            (r + dr, c + dc) in occupied for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
        )
        ext = 4 - neighbours
        lo, hi = _AREA[kind]
        area = float(rng.uniform(lo, hi))
        volume = area * HEIGHT
        u_side = float(rng.uniform(6.0, 14.0))  # W/K per exterior side (wall + window)
        day, night = 21.0, 18.0
        if kind == "bath":
            day, night = 23.0, 20.0
        elif kind == "bed":
            day, night = 19.0, 17.5
        elif kind == "storage":
            day, night = 16.0, 15.0
        rooms.append(
            Room(
                name=names[i],
                kind=kind,
                area=area,
                volume=volume,
                row=r,
                col=c,
                exterior_sides=ext,
                ua_out=u_side * ext,
                infiltration=volume * float(rng.uniform(0.2, 0.5)) / 3600.0,
                setpoint_day=day + float(rng.normal(0, 0.5)),
                setpoint_night=night + float(rng.normal(0, 0.5)),
                heater_w=area * float(rng.uniform(70.0, 110.0)),
            )
        )

    walls: list[Wall] = []
    index = {p: i for i, p in enumerate(pos)}
    for i, (r, c) in enumerate(pos):
        for dr, dc in ((0, 1), (1, 0)):
            j = index.get((r + dr, c + dc))
            if j is not None:
                walls.append(Wall(a=i, b=j, ua=float(rng.uniform(12.0, 25.0)), leak=0.002))

    # Doors: a spanning tree from the hall (room 0) over grid neighbours, plus an extra door now
    # and then; baths have exactly one door.
    doors: list[Door] = []
    seen = {0}
    frontier = [0]
    while frontier:
        i = frontier.pop(0)
        r, c = pos[i]
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            j = index.get((r + dr, c + dc))
            if j is None or j in seen:
                continue
            if kinds[i] == "bath" and i != 0:
                continue
            seen.add(j)
            frontier.append(j)
            doors.append(_door(rng, i, j, kinds))
    for w in walls:
        has = any({d.a, d.b} == {w.a, w.b} for d in doors)
        if not has and "bath" not in (kinds[w.a], kinds[w.b]) and rng.random() < 0.2:
            doors.append(_door(rng, w.a, w.b, kinds))

    sensors: list[Sensor] = []
    for i, kind in enumerate(kinds):
        if sensors_per_room is not None:
            k = sensors_per_room
        else:
            k = 2 if kind in ("living", "kitchen") else 1
        for s in range(k):
            model = "dht11" if rng.random() < dht11_share else "dht22"
            sensors.append(
                Sensor(
                    dev=f"{names[i]}-{s + 1}",
                    room=i,
                    offset_t=float(rng.normal(0.0, 0.15)),
                    model=model,
                )
            )
    return Site(
        name=name,
        seed=seed,
        rooms=rooms,
        walls=walls,
        doors=doors,
        sensors=sensors,
        t_out_mean=t_out_mean,
        hvac=hvac,
        occupants=int(rng.integers(1, 5)),
    )


def _door(rng: np.random.Generator, a: int, b: int, kinds: list[str]) -> Door:
    private = {"bath", "bed", "office", "storage"}
    habit = "closed" if (kinds[a] in private or kinds[b] in private) else "open"
    if rng.random() < 0.25:
        habit = "open" if habit == "closed" else "closed"
    return Door(a=a, b=b, airflow=float(rng.uniform(0.04, 0.09)), habit=habit)
