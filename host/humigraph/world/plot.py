"""A plot of a simulated day next to a real one (for docs/world.md).

``python -m humigraph.world.plot OUT.png [DATA_DIR]`` (needs matplotlib). The real day is
2015-02-05 from the UCI occupancy dataset (one office, one reading a minute, occupancy labels).
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from pathlib import Path

import numpy as np

from ..errors import SetupError, UsageError
from .export import generate

__all__ = ["plot_day"]

START = 1764374400.0  # 2025-11-29 00:00 UTC, a Saturday; +5 days is a Thursday
REAL_DAY = "2015-02-05"


def _uci_day(data: Path, day: str = REAL_DAY) -> tuple[np.ndarray, ...]:
    path = data / "uci-occupancy" / "datatraining.txt"
    if not path.exists():
        raise UsageError(f"{path} is missing")
    h, t, rh, occ = [], [], [], []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            if not row["date"].startswith(day):
                continue
            when = dt.datetime.strptime(row["date"], "%Y-%m-%d %H:%M:%S")
            h.append(when.hour + when.minute / 60 + when.second / 3600)
            t.append(float(row["Temperature"]))
            rh.append(float(row["Humidity"]))
            occ.append(float(row["Occupancy"]))
    return np.array(h), np.array(t), np.array(rh), np.array(occ)


def plot_day(out: Path, data: Path, seed: int = 1, dev: str | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover
        raise SetupError("plotting needs matplotlib: pip install matplotlib") from e
    site, _, cols = generate(seed, 1, rooms=10, step=60, start=START + 5 * 86400)
    if dev is None:  # the first DHT22 in an office (else a living room)
        for kind in ("office", "living"):
            devs = [
                s.dev
                for s in site.sensors
                if s.model == "dht22" and site.rooms[s.room].kind == kind
            ]
            if devs:
                dev = devs[0]
                break
        else:
            dev = site.sensors[0].dev
    m = cols["dev"] == dev
    hours = (cols["ts"][m].astype(float) % 86400) / 3600
    sim = {
        "t": cols["t"][m].astype(float),
        "rh": cols["rh"][m].astype(float),
        "occ": cols["occupants"][m].astype(float),
        "t_true": cols["t_true"][m].astype(float),
        "rh_true": cols["rh_true"][m].astype(float),
    }
    rh_, rt, rrh, rocc = _uci_day(data)
    fig, axes = plt.subplots(2, 2, figsize=(12, 6), sharex=True)
    room = site.rooms[site.sensor(dev).room].name  # type: ignore[union-attr]
    for col, (title, hh, t, rh, occ) in enumerate(
        (
            (
                f"simulated: {dev} ({room}), world seed {seed}",
                hours,
                sim["t"],
                sim["rh"],
                sim["occ"],
            ),
            (f"real: UCI occupancy office, {REAL_DAY}", rh_, rt, rrh, rocc),
        )
    ):
        ax_t, ax_rh = axes[0][col], axes[1][col]
        ax_t.plot(hh, t, lw=0.8, label="temperature (reported)")
        if col == 0:
            ax_t.plot(hh, sim["t_true"], lw=0.6, alpha=0.6, label="true air")
        ax_rh.plot(hh, rh, lw=0.8, color="tab:green", label="RH (reported)")
        if col == 0:
            ax_rh.plot(hh, sim["rh_true"], lw=0.6, alpha=0.6, color="tab:olive", label="true RH")
        for ax in (ax_t, ax_rh):
            lo, hi = ax.get_ylim()
            ax.fill_between(hh, lo, hi, where=occ > 0, color="orange", alpha=0.15, label="occupied")
            ax.set_ylim(lo, hi)
        ax_t.set_title(title, fontsize=10)
        ax_t.set_ylabel("°C")
        ax_rh.set_ylabel("% RH")
        ax_rh.set_xlabel("hour of day")
        ax_t.legend(fontsize=7, loc="upper left")
        ax_rh.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":  # pragma: no cover
    root = Path(__file__).resolve().parents[3]
    plot_day(
        Path(sys.argv[1]),
        Path(sys.argv[2]) if len(sys.argv) > 2 else root.parent / "shared" / "data",
    )
