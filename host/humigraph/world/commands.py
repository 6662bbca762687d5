"""``humigraph world ...``: labelled data from the world simulator."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    world = subparsers.add_parser(
        "world",
        help="the world simulator: rooms, people, doors and DHT sensors",
        description="The world simulator: rooms, people, doors and DHT sensors.",
    )
    sub = world.add_subparsers(dest="world_command", metavar="SUBCOMMAND")
    sub.required = True
    ex = sub.add_parser(
        "export",
        help="write labelled readings (CSV) and the coupling graph (FILE.graph.json)",
        description=(
            "Simulate a site and write, per sensor and time step, the readings as the DHT would "
            "report them (empty for failed reads), the true values, fault labels, occupancy, "
            "door/window/heating states; the room coupling graph goes beside it."
        ),
    )
    ex.add_argument("--seed", type=int, required=True, help="world seed (same seed, same data)")
    ex.add_argument("--days", type=float, required=True, help="simulated days")
    ex.add_argument("--out", type=Path, required=True, help="output CSV file")
    ex.add_argument("--rooms", type=int, default=10, help="rooms in the site (default 10)")
    ex.add_argument("--step", type=float, default=60.0, help="seconds between readings (60)")
    ex.add_argument(
        "--faults",
        metavar="SPEC",
        default=None,
        help="faults to inject: DEV:KIND@ONSET[+DURATION],... e.g. 'kitchen-2:stuck@600,bath-1:drift@0'",
    )
    ex.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of the other sensors given a random fault (0..1, default 0)",
    )
    ex.add_argument(
        "--no-condensation-faults",
        action="store_true",
        help="sensors in rooms that condense never saturate (default: half of them read 99.9 for hours)",
    )
    ex.add_argument("--start", type=float, default=None, help="unix time of the first reading")
    ex.add_argument("--site", default="home", help="site name (default home)")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    ex.set_defaults(func=cmd_export)

    sim = subparsers.add_parser(
        "simulate",
        help="a fleet of virtual boards (the real firmware) on one simulated world",
        description=(
            "Run N virtual boards spread over S sites of one world (one sensor per room), "
            "publishing to BROKER, with live progress; Ctrl-C stops them cleanly."
        ),
    )
    sim.add_argument("--nodes", type=int, required=True, help="boards in all")
    sim.add_argument("--sites", type=int, default=1, help="sites (default 1)")
    sim.add_argument("--broker", required=True, help="mqtt://HOST:PORT")
    sim.add_argument("--faults", metavar="SPEC", default=None, help="DEV:KIND@ONSET[+DURATION],...")
    sim.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    sim.add_argument(
        "--speed", type=float, default=1.0, help="world seconds per wall-clock second (default 1)"
    )
    sim.add_argument("--interval", type=float, default=10.0, help="board reading interval, s")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sim.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    sim.set_defaults(func=cmd_simulate)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import DEFAULT_START, export_csv
    from .faults import parse_faults

    faults = parse_faults(args.faults)
    t0 = time.monotonic()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    summary = export_csv(
        args.out,
        seed=args.seed,
        days=args.days,
        rooms=args.rooms,
        step=args.step,
        start=DEFAULT_START if args.start is None else args.start,
        faults=faults,
        fault_rate=args.fault_rate,
        site_name=args.site,
        progress=progress,
        condensation_faults=not args.no_condensation_faults,
    )
    print(
        f"wrote {summary['rows']} readings of {summary['sensors']} sensors in "
        f"{summary['rooms']} rooms to {summary['csv']} (graph: {summary['graph']}, "
        f"{summary['failed_reads']} failed reads) in {time.monotonic() - t0:.1f}s"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from .faults import parse_faults
    from .fleet import plan_fleet, run_fleet

    if not args.interval > 0:
        raise UsageError(f"--interval must be positive, got {args.interval:g}")
    plan, sources = plan_fleet(
        args.nodes, args.sites, args.seed, parse_faults(args.faults), speed=args.speed
    )
    if args.dry_run:
        for n in plan:
            print(f"{n.site}\t{n.dev}\t{n.room}\t{n.sensor}")
        return 0
    from ..board.virtual import parse_broker

    parse_broker(args.broker, "--broker")
    return run_fleet(plan, sources, args.broker, interval=args.interval, duration=args.duration)
