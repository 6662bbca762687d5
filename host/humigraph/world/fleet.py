"""``humigraph simulate``: a fleet of virtual boards (the real firmware) on one world."""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from ..errors import UsageError
from .faults import Fault, check_devices
from .live import WorldSource
from .site import MAX_ROOMS, make_site

__all__ = ["FleetNode", "plan_fleet", "run_fleet"]


@dataclass(frozen=True)
class FleetNode:
    site: str
    dev: str  # board device id (``SITE-DEV`` when there are several sites)
    sensor: str  # dht11 | dht22
    room: str


def plan_fleet(
    nodes: int,
    sites: int,
    seed: int,
    faults: list[Fault] | None = None,
    speed: float = 1.0,
    start: float | None = None,
) -> tuple[list[FleetNode], dict[str, WorldSource]]:
    """Which boards to run and the world source of each site (one sensor per room)."""
    if sites < 1:
        raise UsageError(f"--sites must be at least 1, got {sites}")
    if nodes < sites:
        raise UsageError(f"--nodes must be at least --sites ({sites}), got {nodes}")
    if not speed > 0:
        raise UsageError(f"--speed must be positive, got {speed}")
    start = time.time() if start is None else start
    plan: list[FleetNode] = []
    site_names = ["home"] if sites == 1 else [f"site{k + 1}" for k in range(sites)]
    counts = [nodes // sites + (1 if k < nodes % sites else 0) for k in range(sites)]
    for name, count in zip(site_names, counts, strict=True):
        if count > MAX_ROOMS:
            raise UsageError(
                f"--nodes: {count} boards on one site; at most {MAX_ROOMS} per site (raise --sites)"
            )
        site = make_site(seed, count, name=name, sensors_per_room=1)
        for s in site.sensors:
            dev = s.dev if sites == 1 else f"{name}-{s.dev}"
            plan.append(FleetNode(name, dev, s.model, site.rooms[s.room].name))
    faults = list(faults or [])
    check_devices(faults, (n.dev for n in plan))
    sources: dict[str, WorldSource] = {}
    for name, count in zip(site_names, counts, strict=True):
        mine = {n.dev for n in plan if n.site == name}
        sources[name] = WorldSource(
            seed,
            rooms=count,
            site=name,
            faults=[f for f in faults if f.dev in mine],
            start=start,
            speed=speed,
        )
    return plan, sources


def run_fleet(
    plan: list[FleetNode],
    sources: dict[str, WorldSource],
    broker: str,
    interval: float = 10.0,
    duration: float | None = None,
    out: TextIO = sys.stderr,
    board_factory: Callable[..., Any] | None = None,
) -> int:
    """Start every board, show progress until Ctrl-C, SIGTERM or ``duration``; stop them all."""
    if board_factory is None:
        from ..board.virtual import VirtualBoard

        board_factory = VirtualBoard
    boards: list[Any] = []
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    t0 = time.monotonic()
    tty = out.isatty()
    try:
        for node in plan:
            b = board_factory(
                node.dev,
                node.site,
                broker,
                sensor=node.sensor,
                interval=interval,
                source=sources[node.site],
            )
            b.start()
            boards.append(b)
            print(
                f"board {node.dev} ({node.site}/{node.room}, {node.sensor}) started",
                file=out,
                flush=True,
            )
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                elapsed = time.monotonic() - t0
                src = next(iter(sources.values()))
                world = dt.datetime.fromtimestamp(src.world_time(time.time()), dt.timezone.utc)
                running = sum(1 for b in boards if getattr(b, "running", True))
                line = (
                    f"[{elapsed:6.0f}s] {running}/{len(boards)} boards running; world time "
                    f"{world:%Y-%m-%d %H:%M:%S} UTC (x{src.speed:g}); Ctrl-C stops"
                )
                if tty:
                    print("\r" + line, end="", file=out, flush=True)
                elif int(elapsed * 2) % 20 == 0:
                    print(line, file=out, flush=True)
                if duration is not None and elapsed >= duration:
                    break
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        if tty:
            print(file=out)
        for b in reversed(boards):
            with contextlib.suppress(Exception):
                b.stop()
        print(f"stopped {len(boards)} boards", file=out, flush=True)
    return 0
